package submit_test

import (
	"strings"
	"testing"
	"time"

	"sluice/screen"
	"sluice/screen/redistest"
	"sluice/submit"
)

// When the client's address is locked (not the login), the reply names
// the address, not the login it happened to try last.
func TestIPLockoutReplyNamesTheAddress(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) {
		s.Guard = submit.NewMemoryGuard(submit.GuardLimits{PerLogin: 100, PerIP: 2, Window: time.Minute, Lockout: time.Minute})
	})
	c := dial(t, g.implicit, true)
	c.cmd("EHLO client.test")
	if r := c.cmd("AUTH PLAIN %s", plainIR("", "a@example.test", "guess")); r.code != 535 {
		t.Fatal(r)
	}
	r := c.cmd("AUTH PLAIN %s", plainIR("", "b@example.test", "guess"))
	if r.code != 421 || r.enhanced != "4.7.0" || !strings.Contains(r.text, "127.0.0.1") || strings.Contains(r.text, "b@example.test") {
		t.Fatalf("IP lockout: %v, want 421 4.7.0 naming 127.0.0.1 and not the login", r)
	}
	// Locked at the next login too, with any login.
	c2 := dial(t, g.implicit, true)
	c2.cmd("EHLO client.test")
	r = c2.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword))
	if r.code != 421 || !strings.Contains(r.text, "127.0.0.1") || strings.Contains(r.text, "for info@example.test") {
		t.Fatalf("locked IP, next login: %v", r)
	}
}

func redisGuard(t *testing.T, red *redistest.Server, perLogin, perIP int) *screen.RedisGuard {
	t.Helper()
	rdb, err := screen.NewRedisClient(red.URL(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return screen.NewRedisGuard(rdb, perLogin, perIP, time.Minute, time.Minute)
}

// on_store_error: with "tempfail" a lockout store that cannot answer gives
// 451 4.3.0; with "allow" the login goes on as if not locked, and the
// failure is logged and counted.
func TestGuardStoreDown(t *testing.T) {
	eachOnStoreError(t, func(t *testing.T, allow bool) {
		red := redistest.Start(t)
		g := startGateway(t, func(s *submit.Server) {
			s.Guard = redisGuard(t, red, 5, 50)
			s.AllowOnGuardError = allow
		})
		red.Stop()
		c := dial(t, g.implicit, true)
		c.cmd("EHLO client.test")
		r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword))
		if !allow {
			wantStoreTempfail(t, r, red.Addr)
			return
		}
		if r.code != 235 {
			t.Fatalf("allow, right password: %v", r)
		}
		c2 := dial(t, g.implicit, true)
		c2.cmd("EHLO client.test")
		if r := c2.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "wrong")); r.code != 535 || r.enhanced != "5.7.8" {
			t.Fatalf("allow, wrong password: %v", r)
		}
		if n := g.srv.GuardStoreErrors(); n < 2 {
			t.Errorf("guard store errors counted: %d, want at least 2", n)
		}
		if !strings.Contains(g.logs.String(), "on_store_error") {
			t.Errorf("allowed guard failure not logged:\n%s", g.logs.String())
		}
	})
}

// Two instances sharing one Redis hash a wrong password with the same key,
// so a mail client retrying its stale saved password against both counts
// one guess, not one per instance (nor one per restart).
func TestStalePasswordCountsOnceAcrossInstances(t *testing.T) {
	red := redistest.Start(t)
	a := startGateway(t, func(s *submit.Server) { s.Guard = redisGuard(t, red, 2, 100) })
	b := startGateway(t, func(s *submit.Server) { s.Guard = redisGuard(t, red, 2, 100) })
	for i, g := range []*gateway{a, b, a, b} {
		c := dial(t, g.implicit, true)
		c.cmd("EHLO client.test")
		if r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "stale saved password")); r.code != 535 {
			t.Fatalf("attempt %d (instance %d): %v, want 535: the same password counted as a new guess", i+1, i%2, r)
		}
	}
	// Still not locked: the right password works on both.
	for _, g := range []*gateway{a, b} {
		c := dial(t, g.implicit, true)
		c.cmd("EHLO client.test")
		if r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword)); r.code != 235 {
			t.Fatalf("right password after one repeated wrong one: %v", r)
		}
	}
	// A second distinct wrong password is the second guess: locked.
	c := dial(t, b.implicit, true)
	c.cmd("EHLO client.test")
	if r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", "another guess")); r.code != 421 {
		t.Fatalf("second distinct guess: %v, want 421", r)
	}
}
