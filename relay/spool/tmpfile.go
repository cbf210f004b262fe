package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// noTmpfile is set once the spool's file system has refused O_TMPFILE:
// Enqueue then writes in tmp/ and renames.
var noTmpfile atomic.Bool

// createFile opens a new file for a message. It is an unnamed file in the
// queue directory (O_TMPFILE) where the file system has them, which link
// names once written: one directory change per message instead of a create
// in tmp/ and a rename out of it, and nothing to clean up after a crash.
// Elsewhere it is tmp/ID, returned as tmp, for the caller to rename.
func (s *Spool) createFile(id string) (f *os.File, tmp string, err error) {
	if !noTmpfile.Load() {
		fd, err := unix.Open(s.queueDir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(s.queueDir, id)), "", nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, "", &os.PathError{Op: "open", Path: s.queueDir, Err: err}
		}
		noTmpfile.Store(true)
	}
	tmp = filepath.Join(s.tmpDir, id)
	f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	return f, tmp, err
}

// link gives the unnamed file f its name in the queue, queue/ID.
func (s *Spool) link(f *os.File, id string) error {
	dst := filepath.Join(s.queueDir, id)
	// Through /proc, as any user may; AT_EMPTY_PATH needs a capability.
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) { // no /proc
		err = unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: err}
	}
	return nil
}

// renameNoReplace renames tmp to dst unless dst exists (a queue ID taken
// twice must not replace a queued message).
func renameNoReplace(tmp, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if err = os.Link(tmp, dst); err == nil {
			os.Remove(tmp)
		}
		return err
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: dst, Err: err}
	}
	return nil
}
