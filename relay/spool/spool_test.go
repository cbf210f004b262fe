package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestEnqueueReadRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := &Envelope{ID: NewID(), Login: "a@example.test", From: "a@example.test", To: []string{"b@remote.test", "c@remote.test"}}
	if err := s.Enqueue(env, []byte("Received: x\r\n"), []byte("Subject: y\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	got, msg, err := s.Read(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != "Received: x\r\nSubject: y\r\n\r\nbody\r\n" || got.Size != len(msg) || len(got.To) != 2 {
		t.Fatalf("got %+v %q", got, msg)
	}
	if _, _, err := s.Read("0000000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing id: %v", err)
	}
	if _, _, err := s.Read("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Errorf("path id: %v", err)
	}
}

func TestConcurrentEnqueueAllDurableAndDistinct(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
			ids[i] = env.ID
			if err := s.Enqueue(env, []byte(fmt.Sprintf("message %d\r\n", i))); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("%d messages in the queue, want %d", len(list), n)
	}
	for i, id := range ids {
		_, msg, err := s.Read(id)
		if err != nil || string(msg) != fmt.Sprintf("message %d\r\n", i) {
			t.Fatalf("message %d: %q %v", i, msg, err)
		}
	}
}

func TestLeftoverTempFilesRemovedOnOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tmp", NewID()), []byte("half"), 0o600)
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	left, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(left) != 0 {
		t.Fatalf("leftovers: %v", left)
	}
	if l, _ := s.List(); len(l) != 0 {
		t.Fatalf("a half-written message was queued: %v", l)
	}
}

// A full disk is reported as ErrNoSpace, and nothing half-written stays.
func TestFullDiskIsErrNoSpace(t *testing.T) {
	dir := mountTinyFS(t)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 256<<10)
	err = s.Enqueue(&Envelope{ID: NewID()}, big)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("got %v, want ErrNoSpace", err)
	}
	if l, _ := s.List(); len(l) != 0 {
		t.Fatalf("queued after failure: %v", l)
	}
}

// mountTinyFS mounts a 128 KiB tmpfs (needs root, as CI has).
func mountTinyFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs here (%v); run as root to test a full disk", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func BenchmarkEnqueue5KB(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 80)
	b.SetBytes(int64(len(msg)))
	b.SetParallelism(25) // 50 concurrent writers on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Enqueue(&Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}, msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A file cut short (a crash before the group sync) is recognised, never
// handed out as a message.
func TestTruncatedFileIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := NewID()
	if err := s.Enqueue(&Envelope{ID: id}, []byte("Subject: a\r\n\r\nlong enough body\r\n")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "queue", id)
	fi, _ := os.Stat(path)
	os.Truncate(path, fi.Size()-5)
	if _, _, err := s.Read(id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

// A file longer than its envelope says, and one whose bytes changed, are
// recognised too; an intact one reads back exactly, into a buffer of its
// own size.
func TestReadChecksSizeAndSum(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("Subject: a\r\n\r\n" + strings.Repeat("body line\r\n", 1000))
	for _, tc := range []struct {
		name   string
		damage func(path string)
		ok     bool
	}{
		{"intact", func(string) {}, true},
		{"longer", func(p string) {
			f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("extra"))
			f.Close()
		}, false},
		{"changed", func(p string) {
			b, _ := os.ReadFile(p)
			b[len(b)-3] ^= 1
			os.WriteFile(p, b, 0o600)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := NewID()
			if err := s.Enqueue(&Envelope{ID: id}, body[:20], body[20:]); err != nil {
				t.Fatal(err)
			}
			tc.damage(filepath.Join(dir, "queue", id))
			_, msg, err := s.Read(id)
			if !tc.ok {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil || !bytes.Equal(msg, body) {
				t.Fatalf("read back %d bytes (%v), want the %d sent", len(msg), err, len(body))
			}
			if cap(msg) != len(body) {
				t.Errorf("message buffer capacity %d for %d bytes: read more than once", cap(msg), len(body))
			}
		})
	}
}

// Delivery state survives as written; a state file torn by a crash falls
// back to the envelope (every recipient pending: at worst a duplicate,
// never a loss); a state written for a message removed meanwhile (queue
// delete during its delivery) is not left behind.
func TestStateRoundTripTornAndRemoved(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test", "c@remote.test"}}
	if err := s.Enqueue(env, []byte("Subject: s\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	st := NewState(env)
	st.Attempts = 2
	st.Rcpt("b@remote.test").Status = RcptDelivered
	if err := s.SaveState(env.ID, st); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadState(env.ID, env)
	if err != nil || got.Attempts != 2 || !slices.Equal(got.Pending(), []string{"c@remote.test"}) {
		t.Fatalf("state after save: %+v %v, want 2 attempts, c pending", got, err)
	}

	statePath := filepath.Join(dir, "queue", env.ID+".state")
	if err := os.WriteFile(statePath, []byte(`{"attempts":2,"rcpts":[{"addr"`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = s.LoadState(env.ID, env)
	if err != nil || !slices.Equal(got.Pending(), env.To) {
		t.Errorf("torn state: %+v %v, want every recipient pending again", got, err)
	}

	if err := s.Remove(env.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveState(env.ID, st); !errors.Is(err, ErrNotFound) {
		t.Errorf("SaveState of a removed message: %v, want ErrNotFound", err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "queue")); len(left) != 0 {
		t.Errorf("left in the queue directory: %v", left)
	}
}
