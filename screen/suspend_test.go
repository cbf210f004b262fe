package screen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/screen/redistest"
)

// suspStore is the method set both suspension stores share.
type suspStore interface {
	Record(ctx context.Context, login, reason string) (bool, error)
	State(ctx context.Context, login string) (*Suspension, time.Time, error)
	Suspended(ctx context.Context, login string) (string, error)
	Lift(ctx context.Context, login string) (bool, error)
}

// suspLookup is the login's suspension (nil: none), as State has it.
func suspLookup(ctx context.Context, s suspStore, login string) (*Suspension, error) {
	sus, _, err := s.State(ctx, login)
	return sus, err
}

// suspImpl makes two handles on one store (two instances, or the server
// and the CLI) with the given TTL.
type suspImpl func(t *testing.T, ttl time.Duration) (a, b suspStore)

func suspImpls() map[string]suspImpl {
	return map[string]suspImpl{
		"file": func(t *testing.T, ttl time.Duration) (suspStore, suspStore) {
			path := filepath.Join(t.TempDir(), "data", "suspended.json")
			return OpenFileSuspensions(path, ttl), OpenFileSuspensions(path, ttl)
		},
		"redis": func(t *testing.T, ttl time.Duration) (suspStore, suspStore) {
			srv := redistest.Start(t)
			var out [2]suspStore
			for i := range out {
				rdb, err := NewRedisClient(srv.URL(), 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { rdb.Close() })
				out[i] = NewRedisSuspensions(rdb, ttl)
			}
			return out[0], out[1]
		},
	}
}

// One behavioural suite, two implementations.
func TestSuspensionStores(t *testing.T) {
	for name, mk := range suspImpls() {
		t.Run(name, func(t *testing.T) {
			t.Run("record-lookup-lift", func(t *testing.T) { testSuspRecordLift(t, mk) })
			t.Run("shared-between-handles", func(t *testing.T) { testSuspShared(t, mk) })
			t.Run("expires-after-ttl", func(t *testing.T) { testSuspExpiry(t, mk) })
			t.Run("concurrent-writers-lose-nothing", func(t *testing.T) { testSuspConcurrent(t, mk) })
		})
	}
}

const suspWhy = "suspended for suspected abuse: 9 first-time recipients within an hour (threshold 3)"

func testSuspRecordLift(t *testing.T, mk suspImpl) {
	ctx := context.Background()
	s, _ := mk(t, 0)
	if got, err := suspLookup(ctx, s, "info@example.test"); got != nil || err != nil {
		t.Fatalf("State before any suspension: %+v, %v; want nil", got, err)
	}
	if r, err := s.Suspended(ctx, "info@example.test"); r != "" || err != nil {
		t.Fatalf("Suspended before any suspension: %q, %v", r, err)
	}
	before := time.Now().Add(-time.Second)
	if isNew, err := s.Record(ctx, "Info@Example.TEST", suspWhy); !isNew || err != nil {
		t.Fatalf("first Record: new=%v err=%v, want new", isNew, err)
	}
	if isNew, err := s.Record(ctx, "info@example.test", "suspended for suspected abuse: something later"); isNew || err != nil {
		t.Fatalf("second Record: new=%v err=%v, want not new", isNew, err)
	}
	got, err := suspLookup(ctx, s, "INFO@example.test")
	if err != nil || got == nil {
		t.Fatalf("State after Record: %+v, %v", got, err)
	}
	if got.Login != "info@example.test" || got.Reason != suspWhy || got.Since.Before(before) || time.Since(got.Since) > time.Minute {
		t.Errorf("State = %+v, want the first reason, login in lower case, since just now", got)
	}
	if r, _ := s.Suspended(ctx, "info@example.test"); r != suspWhy {
		t.Errorf("Suspended = %q, want %q", r, suspWhy)
	}
	if r, _ := s.Suspended(ctx, "other@example.test"); r != "" {
		t.Errorf("another login reads suspended: %q", r)
	}
	if lifted, err := s.Lift(ctx, "info@EXAMPLE.test"); !lifted || err != nil {
		t.Fatalf("Lift: %v, %v; want lifted", lifted, err)
	}
	if got, err := suspLookup(ctx, s, "info@example.test"); got != nil || err != nil {
		t.Errorf("State after Lift: %+v, %v", got, err)
	}
	// The lift is remembered, for instances whose own user file still
	// holds the suspension.
	if sus, at, err := s.State(ctx, "info@example.test"); sus != nil || err != nil || time.Since(at) > time.Minute {
		t.Errorf("State after Lift: %+v lifted %v, %v; want not suspended, lifted just now", sus, at, err)
	}
	if lifted, err := s.Lift(ctx, "info@example.test"); lifted || err != nil {
		t.Errorf("second Lift: %v, %v; want nothing lifted", lifted, err)
	}
	if isNew, err := s.Record(ctx, "info@example.test", suspWhy); !isNew || err != nil {
		t.Errorf("Record after Lift: new=%v err=%v, want a new suspension", isNew, err)
	}
	if sus, at, err := s.State(ctx, "info@example.test"); sus == nil || sus.Reason != suspWhy || !at.IsZero() || err != nil {
		t.Errorf("State after a new suspension: %+v lifted %v, %v", sus, at, err)
	}
	// A lift of a login never suspended lifts nothing. Redis remembers it
	// (an instance's own user file may hold a suspension Redis never
	// had); the local file has no use for it and is not written.
	if lifted, err := s.Lift(ctx, "never@example.test"); lifted || err != nil {
		t.Errorf("Lift of a login never suspended: %v %v", lifted, err)
	}
	_, isRedis := s.(*RedisSuspensions)
	if sus, at, err := s.State(ctx, "never@example.test"); sus != nil || at.IsZero() != !isRedis || err != nil {
		t.Errorf("State after lifting a login never suspended: %+v lifted %v, %v; want a lift mark only in Redis", sus, at, err)
	}
}

func testSuspShared(t *testing.T, mk suspImpl) {
	ctx := context.Background()
	a, b := mk(t, 0)
	if got, _ := suspLookup(ctx, b, "shop@example.test"); got != nil {
		t.Fatalf("b before: %+v", got)
	}
	if _, err := a.Record(ctx, "shop@example.test", suspWhy); err != nil {
		t.Fatal(err)
	}
	if r, err := b.Suspended(ctx, "shop@example.test"); r != suspWhy || err != nil {
		t.Fatalf("b after a recorded: %q, %v", r, err)
	}
	if isNew, _ := b.Record(ctx, "shop@example.test", suspWhy); isNew {
		t.Error("b recorded a new suspension of a login a had suspended")
	}
	if lifted, err := b.Lift(ctx, "shop@example.test"); !lifted || err != nil {
		t.Fatalf("b Lift: %v %v", lifted, err)
	}
	if r, err := a.Suspended(ctx, "shop@example.test"); r != "" || err != nil {
		t.Errorf("a after b lifted: %q, %v", r, err)
	}
}

func testSuspExpiry(t *testing.T, mk suspImpl) {
	ctx := context.Background()
	s, _ := mk(t, 300*time.Millisecond)
	if _, err := s.Record(ctx, "old@example.test", suspWhy); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Suspended(ctx, "old@example.test"); r == "" {
		t.Fatal("not suspended right after Record")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := s.Suspended(ctx, "old@example.test")
		if err != nil {
			t.Fatal(err)
		}
		if r == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the suspension did not expire after its TTL of 300ms")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if isNew, err := s.Record(ctx, "old@example.test", suspWhy); !isNew || err != nil {
		t.Errorf("Record after expiry: new=%v err=%v, want new", isNew, err)
	}
}

func testSuspConcurrent(t *testing.T, mk suspImpl) {
	ctx := context.Background()
	a, b := mk(t, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			if _, err := s.Record(ctx, fmt.Sprintf("u%d@example.test", i), suspWhy); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if r, err := a.Suspended(ctx, fmt.Sprintf("u%d@example.test", i)); r == "" || err != nil {
			t.Errorf("u%d: %q %v; want suspended (a concurrent write lost it)", i, r, err)
		}
	}
}

// Every Redis key has a TTL, 90 days by default, and is hash-tagged with
// the login's domain; a Redis that is down is ErrStore.
func TestRedisSuspensionKeys(t *testing.T) {
	srv := redistest.Start(t)
	rdb, err := NewRedisClient(srv.URL(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	s := NewRedisSuspensions(rdb, 0)
	if _, err := s.Record(ctx, "info@example.test", suspWhy); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "sluice:susp:{example.test}:info@example.test" {
		t.Fatalf("keys %v, want the one hash-tagged sluice:susp:{example.test}:info@example.test", keys)
	}
	if _, err := s.Lift(ctx, "other@example.test"); err != nil {
		t.Fatal(err)
	}
	keys, err = rdb.Keys(ctx, "*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys after a lift: %v %v, want 2", keys, err)
	}
	for _, k := range keys {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= SuspensionTTL-time.Minute || ttl > SuspensionTTL {
			t.Errorf("TTL of %s: %v (%v), want about %v", k, ttl, err, SuspensionTTL)
		}
	}
	srv.Stop()
	for name, call := range map[string]func() error{
		"Record":    func() error { _, err := s.Record(ctx, "x@example.test", suspWhy); return err },
		"Suspended": func() error { _, err := s.Suspended(ctx, "x@example.test"); return err },
		"Lift":      func() error { _, err := s.Lift(ctx, "x@example.test"); return err },
		"State":     func() error { _, _, err := s.State(ctx, "x@example.test"); return err },
	} {
		if err := call(); !errors.Is(err, ErrStore) {
			t.Errorf("%s with Redis down: %v, want ErrStore", name, err)
		}
	}
}

// The file survives a new handle (a restart), is written atomically (no
// temporary file left), and a damaged file is ErrStore, not "not
// suspended".
func TestFileSuspensionsDurable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "suspended.json")
	s := OpenFileSuspensions(path, 0)
	if _, err := s.Record(ctx, "sql-user@panel.test", suspWhy); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("suspensions file: %v %v, want mode 0600", fi, err)
	}
	if r, err := OpenFileSuspensions(path, 0).Suspended(ctx, "sql-user@panel.test"); r != suspWhy || err != nil {
		t.Errorf("after reopening: %q, %v", r, err)
	}
	// Lifting a login it does not know does not create the file.
	other := filepath.Join(dir, "other", "suspended.json")
	if lifted, err := OpenFileSuspensions(other, 0).Lift(ctx, "x@panel.test"); lifted || err != nil {
		t.Errorf("Lift on an empty store: %v %v", lifted, err)
	}
	if _, err := os.Stat(filepath.Dir(other)); !os.IsNotExist(err) {
		t.Errorf("Lift of an unknown login created %s: %v", filepath.Dir(other), err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), `"login": "sql-user@panel.test"`) || !strings.Contains(string(raw), `"since": "`) {
		t.Errorf("file content:\n%s", raw)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Suspended(ctx, "sql-user@panel.test"); !errors.Is(err, ErrStore) {
		t.Errorf("damaged file: %v, want ErrStore", err)
	}
}
