package submit_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen"
	"sluice/screen/redistest"
	"sluice/submit"
	"sluice/submit/dovecotauth"
	"sluice/submit/dovecotauth/dovecottest"
)

// apGuard is the Redis guard reading the Redis suspensions with its
// lockout check, as cmd/sluice wires the two when they share a client.
type apGuard struct {
	*screen.RedisGuard
	susp *screen.RedisSuspensions
}

func (g apGuard) LockedPrefetch(ctx context.Context, login, ip string) (time.Time, time.Time, submit.Suspensions, error) {
	lu, iu, pre, err := g.LockedSuspension(ctx, login, ip, g.susp)
	return lu, iu, pre, err
}

var _ submit.SuspensionPrefetcher = apGuard{}

// apWirings are the two ways AUTH reaches the lockout and suspension
// stores of one Redis: apart (as before: two round trips) or together.
var apWirings = []struct {
	name     string
	together bool
}{{"apart", false}, {"together", true}}

// apRig is a gateway whose lockout guard and suspension store are in one
// real redis-server.
type apRig struct {
	*gateway
	red   *redistest.Server
	guard *screen.RedisGuard
	susp  *screen.RedisSuspensions
}

// apStart starts Redis and a gateway using it. user, when set, is the ACL
// user the gateway's client logs in as (its password "pw").
func apStart(t *testing.T, together bool, user string, opts ...gatewayOption) *apRig {
	t.Helper()
	red := redistest.Start(t)
	url := red.URL()
	if user != "" {
		url = "redis://" + user + ":pw@" + red.Addr + "/0"
	}
	rdb, err := screen.NewRedisClient(url, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	r := &apRig{red: red, guard: screen.NewRedisGuard(rdb, 2, 50, time.Minute, time.Minute), susp: screen.NewRedisSuspensions(rdb, 0)}
	r.gateway = startGateway(t, append([]gatewayOption{func(s *submit.Server) {
		s.Guard, s.Suspensions = r.guard, r.susp
		if together {
			s.Guard = apGuard{r.guard, r.susp}
		}
	}}, opts...)...)
	addUser(t, r.users, "other@example.test", testPassword, nil, false)
	addUser(t, r.users, "locked@example.test", testPassword, nil, false)
	return r
}

// apAuth is one AUTH PLAIN on a new connection.
func apAuth(t *testing.T, addr, user, pass string) response {
	t.Helper()
	c := dial(t, addr, true)
	defer c.conn.Close()
	c.cmd("EHLO client.test")
	return c.cmd("AUTH PLAIN %s", plainIR("", user, pass))
}

// apClock is the time of day of a lockout reply, which differs between two
// runs when a minute ends between them.
var apClock = regexp.MustCompile(`after \d\d:\d\d UTC`)

const apWhy = "suspended for suspected abuse: 7 first-time recipients within an hour (threshold 3)"

// With the suspension read in the lockout check's round trip, AUTH answers
// as it does with the two stores asked apart: a suspended login with the
// right password gets the suspended-login reply, with a wrong one the
// reply of any wrong password (nothing of the suspension), and a locked
// login the lockout, suspended or not.
func TestAuthPrefetchSameReplies(t *testing.T) {
	ctx := context.Background()
	const wrongReply = "535 5.7.8 5.7.8 authentication failed: " // the rest as for any wrong password
	suspended := "535 5.7.8 5.7.8 login info@example.test is " + apWhy + "; contact postmaster@mx.sluice.test to check the account and have it enabled"
	locked := "421 4.7.0 4.7.0 too many failed logins for locked@example.test; try again after HH:MM UTC or reset your password"
	steps := []struct {
		name       string
		do         func(r *apRig) // before the AUTH
		user, pass string
		want       string // the reply (its start, if it ends in a blank), lockout time as HH:MM
	}{
		{name: "right password", user: "info@example.test", pass: testPassword, want: "235 2.0.0 2.0.0 Authentication succeeded"},
		{name: "wrong password", user: "other@example.test", pass: "wrong 1", want: wrongReply},
		{name: "suspended, right password", user: "info@example.test", pass: testPassword, want: suspended,
			do: func(r *apRig) { r.susp.Record(ctx, "info@example.test", apWhy) }},
		{name: "suspended, typed in upper case", user: " INFO@Example.TEST", pass: testPassword, want: suspended},
		{name: "suspended, wrong password", user: "info@example.test", pass: "wrong 2", want: wrongReply},
		{name: "lifted", user: "info@example.test", pass: testPassword, want: "235 2.0.0 2.0.0 Authentication succeeded",
			do: func(r *apRig) { r.susp.Lift(ctx, "info@example.test") }},
		{name: "first guess", user: "locked@example.test", pass: "guess 1", want: wrongReply},
		{name: "second guess locks", user: "locked@example.test", pass: "guess 2", want: locked},
		{name: "locked, right password", user: "locked@example.test", pass: testPassword, want: locked},
		{name: "locked and suspended, right password", user: "locked@example.test", pass: testPassword, want: locked,
			do: func(r *apRig) { r.susp.Record(ctx, "locked@example.test", apWhy) }},
	}
	got := map[string][]string{}
	for _, w := range apWirings {
		t.Run(w.name, func(t *testing.T) {
			r := apStart(t, w.together, "")
			for _, st := range steps {
				t.Run(st.name, func(t *testing.T) {
					if st.do != nil {
						st.do(r)
					}
					reply := apAuth(t, r.implicit, st.user, st.pass).String()
					got[w.name] = append(got[w.name], reply)
					norm := apClock.ReplaceAllString(reply, "after HH:MM UTC")
					if norm != st.want && !(strings.HasSuffix(st.want, " ") && strings.HasPrefix(norm, st.want)) {
						t.Errorf("reply %q\nwant  %q", reply, st.want)
					}
					if st.want == wrongReply && reply != got[w.name][1] { // steps[1]: a wrong password
						t.Errorf("reply %q, not the one of a wrong password %q", reply, got[w.name][1])
					}
				})
			}
			if n := r.srv.GuardStoreErrors(); n != 0 {
				t.Errorf("store errors counted: %d", n)
			}
		})
	}
	for i, st := range steps {
		a, b := got["apart"], got["together"]
		if i < len(a) && i < len(b) && apClock.ReplaceAllString(a[i], "") != apClock.ReplaceAllString(b[i], "") {
			t.Errorf("%s: %q with the stores asked apart, %q together", st.name, a[i], b[i])
		}
	}
}

// on_store_error, with the stores read together as apart: a lockout
// check that fails and a suspension check that fails are each logged and
// counted under their own store's name, and each gives 451 4.3.0
// (tempfail) or lets the login go on (allow). Redis stopped fails both;
// a Redis user that may not run PTTL (GET) fails the lockout
// (suspension) check only. A wrong password gets 535 whatever the
// suspension check would have said.
func TestAuthPrefetchStoreErrors(t *testing.T) {
	const (
		lockRefused = "lockout store unavailable; login refused with 451 4.3.0"
		lockAllowed = "lockout store unavailable; going on as not locked (on_store_error = allow)"
		suspRefused = "suspension store unavailable; login refused with 451 4.3.0"
		suspAllowed = "suspension store unavailable; going on as not suspended (on_store_error = allow)"
	)
	cases := []struct {
		name, user string // user: the ACL user the gateway logs in as
		stop       bool
		lockFails  bool
		suspFails  bool
	}{
		{name: "redis stopped", stop: true, lockFails: true, suspFails: true},
		{name: "lockout check refused", user: "nopttl", lockFails: true},
		{name: "suspension check refused", user: "noget", suspFails: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachOnStoreError(t, func(t *testing.T, allow bool) {
				for _, w := range apWirings {
					t.Run(w.name, func(t *testing.T) {
						r := apStart(t, w.together, tc.user, func(s *submit.Server) { s.AllowOnGuardError = allow })
						apACL(t, r.red)
						if tc.stop {
							r.red.Stop()
						}
						reply := apAuth(t, r.implicit, "info@example.test", testPassword)
						logs := r.logs.String()
						var wantLogs, noLogs []string
						var wantErrors int64
						switch {
						case !allow && tc.lockFails:
							wantStoreTempfail(t, reply, r.red.Addr)
							wantLogs, noLogs, wantErrors = []string{lockRefused}, []string{"suspension store"}, 1
						case !allow:
							wantStoreTempfail(t, reply, r.red.Addr)
							wantLogs, noLogs, wantErrors = []string{suspRefused}, []string{"lockout store"}, 1
						default:
							if reply.code != 235 {
								t.Fatalf("allow: %v, want 235", reply)
							}
							if tc.lockFails {
								wantLogs, wantErrors = append(wantLogs, lockAllowed), wantErrors+1
							} else {
								noLogs = append(noLogs, "lockout store")
							}
							if tc.suspFails {
								wantLogs, wantErrors = append(wantLogs, suspAllowed), wantErrors+1
							} else {
								noLogs = append(noLogs, "suspension store")
							}
						}
						for _, l := range wantLogs {
							if !strings.Contains(logs, l) {
								t.Errorf("not logged: %q", l)
							}
						}
						for _, l := range noLogs {
							if strings.Contains(logs, l) {
								t.Errorf("logged %q, which did not fail", l)
							}
						}
						if n := r.srv.GuardStoreErrors(); n != wantErrors {
							t.Errorf("store errors counted: %d, want %d", n, wantErrors)
						}
						if tc.lockFails {
							return
						}
						// The wrong password: 535, the suspension check unasked.
						if reply := apAuth(t, r.implicit, "info@example.test", "wrong"); reply.code != 535 || reply.enhanced != "5.7.8" || strings.Contains(reply.text, "suspen") {
							t.Errorf("wrong password: %v, want 535 5.7.8", reply)
						}
						if n := r.srv.GuardStoreErrors(); n != wantErrors {
							t.Errorf("store errors counted after a wrong password: %d, want %d", n, wantErrors)
						}
					})
				}
			})
		})
	}
}

// apACL makes the Redis users nopttl and noget (password "pw"), who may
// run every command but PTTL and GET.
func apACL(t *testing.T, red *redistest.Server) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: red.Addr})
	defer rdb.Close()
	for user, cmd := range map[string]string{"nopttl": "-pttl", "noget": "-get"} {
		if err := rdb.Do(context.Background(), "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", cmd).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// One successful AUTH asks Redis once with the stores read together, where
// it asked twice with them apart; the commands are the same (two PTTLs,
// one GET).
func TestAuthPrefetchRoundTrips(t *testing.T) {
	want := map[bool]int64{false: 2, true: 1}
	for _, w := range apWirings {
		t.Run(w.name, func(t *testing.T) {
			r := apStart(t, w.together, "")
			for range 2 { // the gateway's Redis connections are open
				if reply := apAuth(t, r.implicit, "info@example.test", testPassword); reply.code != 235 {
					t.Fatal(reply)
				}
			}
			var reply response
			trips, calls := r.red.RoundTrips(t, func() { reply = apAuth(t, r.implicit, "info@example.test", testPassword) })
			if reply.code != 235 {
				t.Fatal(reply)
			}
			t.Logf("one successful AUTH, stores %s: %d Redis round trips, commands %v", w.name, trips, calls)
			if trips != want[w.together] || calls["pttl"] != 2 || calls["get"] != 1 || len(calls) != 2 {
				t.Errorf("one successful AUTH: %d round trips, commands %v; want %d, pttl 2 and get 1", trips, calls, want[w.together])
			}
		})
	}
}

// A backend may name the login otherwise than the client typed it
// (Dovecot's user= field): the suspension read ahead is of the typed name,
// so the canonical name's is asked after the password check, as before
// (two round trips), and a suspension of it refuses the login.
func TestAuthPrefetchCanonicalName(t *testing.T) {
	dv := dovecottest.Start(t,
		dovecottest.User{Name: "canon@dove.test", Password: testPassword},
		dovecottest.User{Name: "alias@dove.test", Password: testPassword, Extra: "user=canon@dove.test"},
	)
	suspended := "535 5.7.8 5.7.8 login canon@dove.test is " + apWhy + "; contact postmaster@mx.sluice.test to check the account and have it enabled"
	cases := []struct {
		name, user string
		suspend    bool
		want       string
		trips      map[bool]int64 // by together
	}{
		{"canonical name", "canon@dove.test", false, "235 2.0.0 2.0.0 Authentication succeeded", map[bool]int64{false: 2, true: 1}},
		{"other name", "alias@dove.test", false, "235 2.0.0 2.0.0 Authentication succeeded", map[bool]int64{false: 2, true: 2}},
		{"other name, canonical suspended", "alias@dove.test", true, suspended, map[bool]int64{false: 2, true: 2}},
		{"canonical name, suspended", "canon@dove.test", false, suspended, map[bool]int64{false: 2, true: 1}},
	}
	for _, w := range apWirings {
		t.Run(w.name, func(t *testing.T) {
			r := apStart(t, w.together, "", func(s *submit.Server) {
				s.Auth = &dovecotauth.Client{Addr: dv.Addr, Timeout: 5 * time.Second}
			})
			for range 2 { // the gateway's Redis connections are open
				apAuth(t, r.implicit, "canon@dove.test", testPassword)
				apAuth(t, r.implicit, "alias@dove.test", testPassword)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.suspend {
						r.susp.Record(context.Background(), "canon@dove.test", apWhy)
					}
					var reply response
					trips, _ := r.red.RoundTrips(t, func() { reply = apAuth(t, r.implicit, tc.user, testPassword) })
					if reply.String() != tc.want || trips != tc.trips[w.together] {
						t.Errorf("reply %q in %d round trips\nwant  %q in %d", reply, trips, tc.want, tc.trips[w.together])
					}
				})
			}
		})
	}
}
