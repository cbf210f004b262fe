package submit_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/screen"
	"sluice/screen/redistest"
	"sluice/submit"
)

// sstStore is a suspension store as cmd/sluice wires it.
type sstStore interface {
	submit.Suspensions
	Record(ctx context.Context, login, reason string) (bool, error)
	Lift(ctx context.Context, login string) (bool, error)
}

const sstWhy = "suspended for suspected abuse: 7 first-time recipients within an hour (threshold 3)"

func sstAuth(t *testing.T, g *gateway, user string) response {
	t.Helper()
	c := dial(t, g.implicit, true)
	defer c.conn.Close()
	c.cmd("EHLO client.test")
	return c.cmd("AUTH PLAIN %s", plainIR("", user, testPassword))
}

// A login suspended in the shared store (by any instance, whatever backend
// holds it) gets the suspended-login reply after a right password, like a
// suspended login of the user file; lifting it lets it in again.
func TestSuspensionStoreRefusesAuth(t *testing.T) {
	impls := map[string]func(t *testing.T) sstStore{
		"file": func(t *testing.T) sstStore {
			return screen.OpenFileSuspensions(filepath.Join(t.TempDir(), "suspended.json"), 0)
		},
		"redis": func(t *testing.T) sstStore {
			red := redistest.Start(t)
			rdb, err := screen.NewRedisClient(red.URL(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rdb.Close() })
			return screen.NewRedisSuspensions(rdb, 0)
		},
	}
	for name, mk := range impls {
		t.Run(name, func(t *testing.T) {
			store := mk(t)
			// One instance records, the other (sharing the store) refuses.
			g := startGateway(t, func(s *submit.Server) { s.Suspensions = store })
			addUser(t, g.users, "other@example.test", testPassword, nil, false)
			if r := sstAuth(t, g, "info@example.test"); r.code != 235 {
				t.Fatalf("before the suspension: %v, want 235", r)
			}
			if _, err := store.Record(context.Background(), "info@example.test", sstWhy); err != nil {
				t.Fatal(err)
			}
			r := sstAuth(t, g, "info@example.test")
			want := "login info@example.test is " + sstWhy + "; contact postmaster@mx.sluice.test to check the account and have it enabled"
			if r.code != 535 || r.enhanced != "5.7.8" || r.text != "5.7.8 "+want {
				t.Fatalf("suspended login: %v\nwant 535 5.7.8 %s", r, want)
			}
			if r := sstAuth(t, g, "other@example.test"); r.code != 235 {
				t.Errorf("another login of the domain: %v, want 235", r)
			}
			// A login an operator disabled stays refused as disabled: the
			// store judges only suspensions.
			if r := sstAuth(t, g, "off@example.test"); r.code != 535 || !strings.Contains(r.text, "login off@example.test is disabled; ask your mail administrator") {
				t.Errorf("operator-disabled login: %v", r)
			}
			if lifted, err := store.Lift(context.Background(), "info@example.test"); !lifted || err != nil {
				t.Fatalf("Lift: %v %v", lifted, err)
			}
			if r := sstAuth(t, g, "info@example.test"); r.code != 235 {
				t.Errorf("after the lift: %v, want 235", r)
			}
			if n := g.srv.GuardStoreErrors(); n != 0 {
				t.Errorf("store errors counted: %d", n)
			}
		})
	}
}

// on_store_error for the suspension check: "tempfail" answers 451 4.3.0
// without internals; "allow" lets the login in, logged and counted.
func TestSuspensionStoreDown(t *testing.T) {
	eachOnStoreError(t, func(t *testing.T, allow bool) {
		red := redistest.Start(t)
		rdb, err := screen.NewRedisClient(red.URL(), 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		g := startGateway(t, func(s *submit.Server) {
			s.Suspensions = screen.NewRedisSuspensions(rdb, 0)
			s.AllowOnGuardError = allow
		})
		red.Stop()
		r := sstAuth(t, g, "info@example.test")
		if g.srv.GuardStoreErrors() != 1 {
			t.Errorf("store errors counted: %d, want 1", g.srv.GuardStoreErrors())
		}
		if !allow {
			wantStoreTempfail(t, r, red.Addr)
			if !strings.Contains(g.logs.String(), "suspension store unavailable; login refused with 451 4.3.0") {
				t.Errorf("refusal not logged:\n%s", g.logs.String())
			}
			return
		}
		if r.code != 235 {
			t.Fatalf("allow: %v, want 235", r)
		}
		if !strings.Contains(g.logs.String(), "suspension store unavailable; going on as not suspended (on_store_error = allow)") {
			t.Errorf("allowed failure not logged:\n%s", g.logs.String())
		}
	})
}
