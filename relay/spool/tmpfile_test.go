package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// Both ways of writing a message (an unnamed file linked into the queue
// where the file system has O_TMPFILE, and the tmp/ file renamed) leave the
// same thing: queue/ID, readable, mode 0600, and nothing in tmp/.
func TestEnqueueWithAndWithoutTmpfile(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noTmpfile bool
	}{{"as the file system allows", false}, {"tmp and rename", true}} {
		t.Run(tc.name, func(t *testing.T) {
			noTmpfile.Store(tc.noTmpfile)
			t.Cleanup(func() { noTmpfile.Store(false) })
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
			if err := s.Enqueue(env, []byte("Subject: s\r\n\r\nbody\r\n")); err != nil {
				t.Fatal(err)
			}
			if noTmpfile.Load() && !tc.noTmpfile {
				t.Logf("the file system of %s has no O_TMPFILE (or no way to link one): tmp/ and rename", dir)
			}
			fi, err := os.Stat(filepath.Join(dir, "queue", env.ID))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("queue file mode %v, want 0600", fi.Mode().Perm())
			}
			if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
				t.Errorf("tmp/ holds %d files after Enqueue", len(left))
			}
			_, msg, err := s.Read(env.ID)
			if err != nil || string(msg) != "Subject: s\r\n\r\nbody\r\n" {
				t.Fatalf("Read: %q, %v", msg, err)
			}
			// The same ID twice is refused, not overwritten.
			if err := s.Enqueue(env, []byte("other\r\n")); err == nil {
				t.Fatal("a second Enqueue with the same ID succeeded")
			}
			if _, msg, _ := s.Read(env.ID); string(msg) != "Subject: s\r\n\r\nbody\r\n" {
				t.Fatalf("after the refused second Enqueue the message is %q", msg)
			}
		})
	}
}
