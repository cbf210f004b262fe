package screen

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen/redistest"
)

func guardRedis(t *testing.T, srv *redistest.Server) redis.UniversalClient {
	t.Helper()
	rdb, err := NewRedisClient(srv.URL(), 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Two instances (two guards, two clients) sharing one Redis get the same
// fingerprint key, and it has a TTL longer than the failure window.
func TestRedisGuardSharesFingerprintKey(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := guardRedis(t, srv)
	a := NewRedisGuard(rdb, 3, 10, 15*time.Minute, time.Minute)
	b := NewRedisGuard(guardRedis(t, srv), 3, 10, 15*time.Minute, time.Minute)
	ka, err := a.FingerprintKey(ctx)
	if err != nil || len(ka) < 32 {
		t.Fatalf("key a: %q, %v", ka, err)
	}
	kb, err := b.FingerprintKey(ctx)
	if err != nil || !bytes.Equal(ka, kb) {
		t.Fatalf("instances got different keys: %q and %q (%v)", ka, kb, err)
	}
	ttl, err := rdb.PTTL(ctx, fingerprintKeyName).Result()
	if err != nil || ttl <= 15*time.Minute || ttl > a.fingerprintKeyTTL() {
		t.Fatalf("fingerprint key TTL %v (%v), want more than the 15m window and at most %v", ttl, err, a.fingerprintKeyTTL())
	}
	// A restarted instance (new guard) still gets the same key.
	c := NewRedisGuard(guardRedis(t, srv), 3, 10, 15*time.Minute, time.Minute)
	if kc, err := c.FingerprintKey(ctx); err != nil || !bytes.Equal(ka, kc) {
		t.Fatalf("restarted instance got %q (%v), want the shared key", kc, err)
	}
	// With Redis gone, a guard that has the key keeps using it; one that
	// never had it reports a store error.
	srv.Stop()
	if k, err := a.FingerprintKey(ctx); err != nil || !bytes.Equal(k, ka) {
		t.Fatalf("cached key with Redis down: %q, %v", k, err)
	}
	d := NewRedisGuard(guardRedis(t, srv), 3, 10, 15*time.Minute, time.Minute)
	if _, err := d.FingerprintKey(ctx); !errors.Is(err, ErrStore) {
		t.Fatalf("no key and Redis down: %v, want ErrStore", err)
	}
}

// Locked and Failed say which of login and address is locked; a repeated
// fingerprint is one guess; every key the guard writes has a TTL.
func TestRedisGuardScopes(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := guardRedis(t, srv)
	g := NewRedisGuard(rdb, 2, 3, time.Minute, time.Minute)
	cases := []struct {
		name            string
		login, ip, fp   string
		wantLogin, wtIP bool
	}{
		{"first guess", "a@example.test", "127.0.0.2", "f1", false, false},
		{"same guess again", "a@example.test", "127.0.0.2", "f1", false, false},
		{"second guess locks the login", "a@example.test", "127.0.0.2", "f2", true, false},
		{"other login, same address: third address failure", "b@example.test", "127.0.0.2", "f3", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lu, iu, err := g.Failed(ctx, tc.login, tc.ip, tc.fp)
			if err != nil {
				t.Fatal(err)
			}
			if !lu.IsZero() != tc.wantLogin || !iu.IsZero() != tc.wtIP {
				t.Fatalf("Failed: login until %v, ip until %v; want login %v, ip %v", lu, iu, tc.wantLogin, tc.wtIP)
			}
			if d := time.Until(guardLater(lu, iu)); (tc.wantLogin || tc.wtIP) && (d <= 0 || d > time.Minute) {
				t.Fatalf("lockout ends in %v, want within the 1m lockout", d)
			}
		})
	}
	lu, iu, err := g.Locked(ctx, "c@example.test", "127.0.0.2")
	if err != nil || !lu.IsZero() || iu.IsZero() {
		t.Fatalf("Locked(other login, locked address) = %v, %v, %v; want the address only", lu, iu, err)
	}
	lu, iu, err = g.Locked(ctx, "a@example.test", "127.0.0.3")
	if err != nil || lu.IsZero() || !iu.IsZero() {
		t.Fatalf("Locked(locked login, other address) = %v, %v, %v; want the login only", lu, iu, err)
	}
	g.FingerprintKey(ctx)
	keys, err := rdb.Keys(ctx, "sluice:auth:*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	for _, k := range keys {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
	srv.Stop()
	if _, _, err := g.Locked(ctx, "a@example.test", "127.0.0.2"); !errors.Is(err, ErrStore) {
		t.Fatalf("Locked with Redis down: %v, want ErrStore", err)
	}
	if _, _, err := g.Failed(ctx, "a@example.test", "127.0.0.2", "f9"); !errors.Is(err, ErrStore) {
		t.Fatalf("Failed with Redis down: %v, want ErrStore", err)
	}
}

func guardLater(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
