package spool

import (
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ReplaceFile puts data at path durably, for every small file Sluice keeps
// beside its spool (users, DKIM keys and their index, suspensions,
// suppressions, the webhook outbox): it writes a hidden temporary file in
// the same directory (".NAME.tmp"), fsyncs it, renames it over path and
// fsyncs the directory. After a crash path holds the old content or the
// new one, never a part of either. A leftover ".NAME.tmp" is never read.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	dir, name := filepath.Split(path)
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory, making the renames and removals in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Lock takes an exclusive lock (flock) on path+".lock", creating the
// directory and the lock file when needed, for a read-change-write of path
// that several processes may do at once (the server and `sluice user`).
// unlock releases it.
func Lock(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// Stamp tells whether a file changed since it was last read: its
// modification time, size and inode (a rename over it changes the inode).
type Stamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// StampOf is the stamp of fi.
func StampOf(fi os.FileInfo) Stamp {
	s := Stamp{mod: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s
}
