package screen

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen/redistest"
)

// gpState is one answer of State.
type gpState struct {
	sus    *Suspension
	lifted time.Time
	err    error
}

func gpSame(a, b gpState) bool {
	if (a.sus == nil) != (b.sus == nil) || !a.lifted.Equal(b.lifted) || (a.err == nil) != (b.err == nil) {
		return false
	}
	return a.sus == nil || a.sus.Login == b.sus.Login && a.sus.Reason == b.sus.Reason && a.sus.Since.Equal(b.sus.Since)
}

// LockedSuspension answers what Locked and State answer, in one round trip
// where they take two; the suspension it read is then asked without a
// round trip, and any other login's is asked of Redis.
func TestLockedSuspensionAnswersInOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := guardRedis(t, srv)
	g := NewRedisGuard(rdb, 1, 100, time.Minute, time.Minute)
	s := NewRedisSuspensions(rdb, 0)
	if !g.SharesClient(s) || g.SharesClient(NewRedisSuspensions(guardRedis(t, srv), 0)) {
		t.Fatal("SharesClient does not tell the guard's client from another")
	}
	for range 2 { // the client's connections are open
		g.Locked(ctx, "warm@example.test", "127.0.0.9")
		s.State(ctx, "warm@example.test")
	}

	cases := []struct {
		name          string
		login, ip     string
		setup         func(t *testing.T)
		locked, ipLkd bool
		suspended     string // the reason State gives
		lifted        bool
	}{
		{name: "neither", login: "a@example.test", ip: "127.0.0.2"},
		{name: "suspended", login: "b@example.test", ip: "127.0.0.2", suspended: suspWhy,
			setup: func(t *testing.T) { s.Record(ctx, "b@example.test", suspWhy) }},
		{name: "suspended, typed in upper case", login: "B@Example.TEST", ip: "127.0.0.2", suspended: suspWhy},
		{name: "lifted", login: "c@example.test", ip: "127.0.0.2", lifted: true,
			setup: func(t *testing.T) { s.Record(ctx, "c@example.test", suspWhy); s.Lift(ctx, "c@example.test") }},
		{name: "written by hand", login: "d@example.test", ip: "127.0.0.2", suspended: "suspended: by hand",
			setup: func(t *testing.T) { rdb.Set(ctx, suspensionKey("d@example.test"), "by hand", time.Minute) }},
		{name: "login locked and suspended", login: "e@example.test", ip: "127.0.0.3", locked: true, suspended: suspWhy,
			setup: func(t *testing.T) {
				s.Record(ctx, "e@example.test", suspWhy)
				if lu, _, err := g.Failed(ctx, "e@example.test", "127.0.0.3", "fp"); err != nil || lu.IsZero() {
					t.Fatalf("Failed: %v %v, want the login locked", lu, err)
				}
			}},
		{name: "address locked", login: "f@example.test", ip: "127.0.0.4", ipLkd: true,
			setup: func(t *testing.T) { rdb.Set(ctx, guardKeys("ip", "127.0.0.4")[1], "1", time.Minute) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			var lu, iu time.Time
			var lerr error
			var want gpState
			twoTrips, twoCalls := srv.RoundTrips(t, func() {
				lu, iu, lerr = g.Locked(ctx, tc.login, tc.ip)
				want.sus, want.lifted, want.err = s.State(ctx, tc.login)
			})
			var plu, piu time.Time
			var perr error
			var pre *PrefetchedSuspensions
			oneTrip, oneCalls := srv.RoundTrips(t, func() { plu, piu, pre, perr = g.LockedSuspension(ctx, tc.login, tc.ip, s) })
			var got gpState
			asked, _ := srv.RoundTrips(t, func() { got.sus, got.lifted, got.err = pre.State(ctx, tc.login) })

			if lerr != nil || perr != nil || want.err != nil || got.err != nil {
				t.Fatalf("errors: Locked %v, LockedSuspension %v, State %v, read ahead %v", lerr, perr, want.err, got.err)
			}
			if lu.IsZero() != !tc.locked || iu.IsZero() != !tc.ipLkd || plu.IsZero() != lu.IsZero() || piu.IsZero() != iu.IsZero() {
				t.Fatalf("locked: Locked %v/%v, LockedSuspension %v/%v; want login %v, address %v", lu, iu, plu, piu, tc.locked, tc.ipLkd)
			}
			if d := plu.Sub(lu); d < -time.Second || d > time.Second {
				t.Errorf("login locked until %v by LockedSuspension, %v by Locked", plu, lu)
			}
			if !gpSame(got, want) {
				t.Fatalf("suspension read ahead %+v, State %+v", got, want)
			}
			if reason, err := pre.Suspended(ctx, tc.login); reason != tc.suspended || err != nil || got.lifted.IsZero() == tc.lifted {
				t.Fatalf("Suspended %q %v (lifted at %v); want %q, lifted %v", reason, err, got.lifted, tc.suspended, tc.lifted)
			}
			if twoTrips != 2 || oneTrip != 1 || asked != 0 {
				t.Fatalf("round trips: Locked + State %d, LockedSuspension %d, its State %d; want 2, 1, 0", twoTrips, oneTrip, asked)
			}
			if twoCalls["pttl"] != 2 || twoCalls["get"] != 1 || oneCalls["pttl"] != 2 || oneCalls["get"] != 1 {
				t.Fatalf("commands: Locked + State %v, LockedSuspension %v; want pttl 2 and get 1 each", twoCalls, oneCalls)
			}
		})
	}

	// Another login (a backend that names it otherwise) is asked of Redis.
	s.Record(ctx, "canonical@example.test", suspWhy)
	_, _, pre, err := g.LockedSuspension(ctx, "alias@example.test", "127.0.0.2", s)
	if err != nil {
		t.Fatal(err)
	}
	var reason string
	trips, _ := srv.RoundTrips(t, func() { reason, err = pre.Suspended(ctx, "canonical@example.test") })
	if reason != suspWhy || err != nil || trips != 1 {
		t.Fatalf("another login: %q %v in %d round trips; want the suspension, in 1", reason, err, trips)
	}

	// A store on another client is not read ahead: asked when asked.
	other := NewRedisSuspensions(guardRedis(t, srv), 0)
	for range 2 {
		other.State(ctx, "warm@example.test")
	}
	trips, _ = srv.RoundTrips(t, func() { _, _, pre, err = g.LockedSuspension(ctx, "b@example.test", "127.0.0.2", other) })
	if err != nil || trips != 1 {
		t.Fatalf("other client: LockedSuspension %v in %d round trips, want Locked's 1", err, trips)
	}
	trips, _ = srv.RoundTrips(t, func() { reason, err = pre.Suspended(ctx, "b@example.test") })
	if reason != suspWhy || err != nil || trips != 1 {
		t.Fatalf("other client: %q %v in %d round trips; want the suspension, in 1", reason, err, trips)
	}
}

// Each check keeps its own error: the lockout check's is LockedSuspension's
// error, the suspension lookup's is State's, with the messages Locked and
// State give, whether Redis is down or refuses one command.
func TestLockedSuspensionErrorsApart(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	admin := guardRedis(t, srv)
	for _, acl := range [][]string{{"nopttl", "-pttl"}, {"noget", "-get"}} {
		if err := admin.Do(ctx, "ACL", "SETUSER", acl[0], "on", ">pw", "~*", "&*", "+@all", acl[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	client := func(user string) redis.UniversalClient {
		rdb, err := NewRedisClient("redis://"+user+":pw@"+srv.Addr+"/0", 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}
	cases := []struct {
		name             string
		rdb              redis.UniversalClient
		stop             bool
		lockErr, suspErr string // "" : no error
	}{
		{"lockout check refused", client("nopttl"), false, "lockout check", ""},
		{"suspension lookup refused", client("noget"), false, "", "suspension lookup"},
		{"redis stopped", admin, true, "lockout check", "suspension lookup"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.stop {
				srv.Stop()
			}
			g, s := NewRedisGuard(tc.rdb, 3, 10, time.Minute, time.Minute), NewRedisSuspensions(tc.rdb, 0)
			_, _, lockErr := g.Locked(ctx, "a@example.test", "127.0.0.2")
			_, _, suspErr := s.State(ctx, "a@example.test")
			_, _, pre, err := g.LockedSuspension(ctx, "a@example.test", "127.0.0.2", s)
			_, _, preErr := pre.State(ctx, "a@example.test")
			for _, c := range []struct {
				what      string
				got, then error
				want      string
			}{{"lockout check", err, lockErr, tc.lockErr}, {"suspension lookup", preErr, suspErr, tc.suspErr}} {
				switch {
				case c.want == "" && (c.got != nil || c.then != nil):
					t.Errorf("%s: %v (alone: %v), want no error", c.what, c.got, c.then)
				case c.want != "" && (!errors.Is(c.got, ErrStore) || !strings.Contains(c.got.Error(), c.want)):
					t.Errorf("%s: %v, want ErrStore %q", c.what, c.got, c.want)
				case c.want != "" && (c.then == nil || c.got.Error() != c.then.Error()):
					t.Errorf("%s: %v, alone %v: want the same error", c.what, c.got, c.then)
				}
			}
		})
	}
}
