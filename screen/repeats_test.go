package screen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen/redistest"
)

// testRedisClient is a client of url, closed when the test ends.
func testRedisClient(t *testing.T, url string) redis.UniversalClient {
	t.Helper()
	rdb, err := NewRedisClient(url, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// The loop rule behaves the same on Redis as in memory: it defers past
// Repeats copies, holds past twice that, and forgets copies older than
// the window.
func TestRepeatsOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := testRedisClient(t, srv.URL())
	stores := map[string]func(StoreConfig) QuotaStore{
		"memory": func(c StoreConfig) QuotaStore { return NewMemoryStore(c) },
		"redis":  func(c StoreConfig) QuotaStore { return NewRedisStore(rdb, c) },
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			window := 2 * time.Second
			r := &Repeats{Repeats: 2, Store: mk(StoreConfig{Window: window, Hold: time.Minute}), Log: quiet}
			login := "loop-" + name + "@example.test"
			copyOf := func(i int) *Message {
				return msg(login, []string{"bob@remote.test"}, fmt.Sprintf("From: %s\nSubject: Form %d\n\nSomeone filled in the form, entry %d\n", login, i, i))
			}
			var got []Action
			start := time.Now()
			for i := 0; i < 6; i++ {
				if v := r.Check(context.Background(), copyOf(i)); v == nil {
					got = append(got, Accept)
				} else {
					got = append(got, v.Action)
				}
			}
			if took := time.Since(start); took > window/2 {
				t.Fatalf("six checks took %v: too slow to test a %v window", took, window)
			}
			want := []Action{Accept, Accept, Defer, Defer, Hold, Hold}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("actions %v, want %v", got, want)
			}
			// Other content from the same login is not a copy.
			other := msg(login, []string{"bob@remote.test"}, "From: "+login+"\nSubject: Newsletter\n\nSomething else entirely\n")
			if v := r.Check(context.Background(), other); v != nil {
				t.Fatalf("other content: %+v", v)
			}
			// Past the window the copies are forgotten.
			time.Sleep(window + 100*time.Millisecond)
			if v := r.Check(context.Background(), copyOf(7)); v != nil {
				t.Fatalf("a copy after the window: %+v", v)
			}
		})
	}
}

// However many different messages a login sends, its fingerprints live
// in two Redis keys, and those not seen again within the window are
// dropped from them; one fingerprint keeps at most the times asked for.
func TestRepeatKeysBounded(t *testing.T) {
	const repeatKeep = 1000
	srv := redistest.Start(t)
	rdb := testRedisClient(t, srv.URL())
	ctx := context.Background()
	window := 700 * time.Millisecond
	st := NewRedisStore(rdb, StoreConfig{Window: window, Hold: time.Minute})
	for i := 0; i < 500; i++ {
		if _, err := st.CountRepeat(ctx, "example.test", "busy@example.test", fmt.Sprintf("fp%d", i), repeatKeep); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("500 messages left %d keys %v, want 2", len(keys), keys)
	}
	for _, k := range keys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > window+time.Minute {
			t.Errorf("key %s has TTL %v, want (0, %v]", k, ttl, window+time.Minute)
		}
	}
	hash := "sluice:fp:{example.test}:busy@example.test:h"
	if n := rdb.HLen(ctx, hash).Val(); n != 500 {
		t.Fatalf("%d fingerprints kept, want 500", n)
	}
	time.Sleep(window + 100*time.Millisecond)
	if _, err := st.CountRepeat(ctx, "example.test", "busy@example.test", "fresh", repeatKeep); err != nil {
		t.Fatal(err)
	}
	if n := rdb.HLen(ctx, hash).Val(); n != 1 {
		t.Fatalf("after the window %d fingerprints kept, want 1 (the fresh one)", n)
	}

	// A runaway copy keeps its count at repeatKeep, in a bounded field.
	long := NewRedisStore(rdb, StoreConfig{Window: time.Hour, Hold: time.Minute})
	var n int
	for i := 0; i < repeatKeep+50; i++ {
		if n, err = long.CountRepeat(ctx, "example.test", "runaway@example.test", "same", repeatKeep); err != nil {
			t.Fatal(err)
		}
	}
	if n != repeatKeep {
		t.Fatalf("count %d after %d copies, want it capped at %d", n, repeatKeep+50, repeatKeep)
	}
	v, err := rdb.HGet(ctx, "sluice:fp:{example.test}:runaway@example.test:h", "same").Result()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	if len(v) > 14*repeatKeep {
		t.Fatalf("the field holds %d bytes for %d times", len(v), repeatKeep)
	}
}

// A high loop_repeats still ends in a hold: the Redis store remembers as
// many copies as the rule needs to tell (twice Repeats and one).
func TestRepeatsHighLimitHolds(t *testing.T) {
	srv := redistest.Start(t)
	r := &Repeats{Repeats: 600, Store: NewRedisStore(testRedisClient(t, srv.URL()), StoreConfig{Window: time.Hour, Hold: time.Minute}), Log: quiet}
	m := msg("busy@example.test", []string{"owner@remote.test"}, "From: busy@example.test\nSubject: Form\n\nthe same\n")
	var v *Verdict
	for i := 0; i < 2*600+1; i++ {
		v = r.Check(context.Background(), m)
	}
	if v == nil || v.Action != Hold {
		t.Fatalf("copy %d with loop_repeats 600: %+v, want a hold", 2*600+1, v)
	}
}
