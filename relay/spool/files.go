package spool

import (
	"os"
	"path/filepath"
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
