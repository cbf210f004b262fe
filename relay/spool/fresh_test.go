package spool

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The first Read of a message queued for the relay (OnEnqueue set) comes
// from memory, and gives exactly what a Read from disk gives.
func TestFreshReadEqualsDiskRead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var queued []string
	s.OnEnqueue = func(id string) { queued = append(queued, id) }
	env := &Envelope{ID: NewID(), Login: "a@example.test", From: "a@example.test",
		To: []string{"b@remote.test", "c@remote.test"}, ClientIP: "192.0.2.1", Received: time.Now().UTC(), Hold: ""}
	if err := s.Enqueue(env, []byte("DKIM-Signature: x\r\n"), []byte("Received: y\r\n"), []byte("Subject: z\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || queued[0] != env.ID {
		t.Fatalf("OnEnqueue got %v", queued)
	}
	fromMem, memMsg, err := s.Read(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	// A second Spool on the same directory has nothing in memory.
	disk, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fromDisk, diskMsg, err := disk.Read(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(memMsg) != string(diskMsg) || string(memMsg) != "DKIM-Signature: x\r\nReceived: y\r\nSubject: z\r\n\r\nbody\r\n" {
		t.Fatalf("message from memory %q, from disk %q", memMsg, diskMsg)
	}
	if !reflect.DeepEqual(fromMem, fromDisk) {
		t.Fatalf("envelope from memory %+v\nfrom disk %+v", fromMem, fromDisk)
	}
	if s.fresh.bytes != 0 || len(s.fresh.msgs) != 0 {
		t.Fatalf("cache keeps %d bytes, %d messages after the first read", s.fresh.bytes, len(s.fresh.msgs))
	}
}

// A message deleted from the queue by another process (sluice queue
// delete) is not delivered from memory.
func TestFreshReadOfDeletedMessageIsNotFound(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.OnEnqueue = func(string) {}
	env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
	if err := s.Enqueue(env, []byte("Subject: z\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "queue", env.ID)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read(env.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read of a deleted message: %v, want ErrNotFound", err)
	}
}

// Past FreshLimit bytes, messages are read from disk; removing one that
// was never read frees its place.
func TestFreshCacheIsBounded(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.OnEnqueue = func(string) {}
	s.FreshLimit = 100
	body := make([]byte, 60)
	for i := range body {
		body[i] = 'x'
	}
	var ids []string
	for range 3 {
		env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
		if err := s.Enqueue(env, body); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.ID)
	}
	if len(s.fresh.msgs) != 1 || s.fresh.bytes != 60 {
		t.Fatalf("cache holds %d messages, %d bytes; want 1 and 60 (limit 100)", len(s.fresh.msgs), s.fresh.bytes)
	}
	for _, id := range ids {
		if _, msg, err := s.Read(id); err != nil || string(msg) != string(body) {
			t.Fatalf("Read %s: %q %v", id, msg, err)
		}
	}
	env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
	if err := s.Enqueue(env, body); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(env.ID); err != nil {
		t.Fatal(err)
	}
	if s.fresh.bytes != 0 {
		t.Fatalf("cache keeps %d bytes of a removed message", s.fresh.bytes)
	}
	if err := s.Remove(env.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
}
