package submit_test

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/screen"
	"sluice/screen/redistest"
	"sluice/submit"
)

func withQuota(q *screen.Quota) gatewayOption {
	return func(s *submit.Server) { s.Quota = q }
}

func redisQuota(t *testing.T, srv *redistest.Server, def int, window time.Duration, allow bool) *screen.Quota {
	t.Helper()
	rdb, err := screen.NewRedisClient(srv.URL(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	store := screen.NewRedisStore(rdb, screen.StoreConfig{Window: window, Hold: time.Minute})
	return screen.NewQuota(store, screen.QuotaConfig{Default: def, AllowOnStoreError: allow}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

var nextFitRe = regexp.MustCompile(`try again after \d\d:\d\d UTC`)

func TestQuotaRefusalAtRCPTAndSlide(t *testing.T) {
	red := redistest.Start(t)
	g := startGateway(t, withQuota(redisQuota(t, red, 3, 2*time.Second, false)))
	c := g.login(t, "info@example.test")
	// Two recipients, then one: three in all.
	if r := c.send("info@example.test", []string{"a@remote.test", "b@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "1")); r.code != 250 {
		t.Fatal(r)
	}
	if r := c.send("info@example.test", []string{"c@remote.test"}, simpleMessage("info@example.test", "c@remote.test", "2")); r.code != 250 {
		t.Fatal(r)
	}
	c.cmd("MAIL FROM:<info@example.test>")
	r := c.cmd("RCPT TO:<d@remote.test>")
	if r.code != 451 || r.enhanced != "4.7.1" || !strings.Contains(r.text, "login info@example.test") ||
		!strings.Contains(r.text, "3 messages") || !nextFitRe.MatchString(r.text) {
		t.Fatalf("over quota at RCPT: %v", r)
	}
	c.cmd("RSET")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.send("info@example.test", []string{"d@remote.test"}, simpleMessage("info@example.test", "d@remote.test", "later"))
		if r.code == 250 {
			break
		}
		if r.code != 451 || time.Now().After(deadline) {
			t.Fatalf("after the window slid: %v", r)
		}
		c.cmd("RSET")
		time.Sleep(100 * time.Millisecond)
	}
}

// A message refused after RCPT (bad content) or abandoned costs nothing.
func TestRefusedMessagesAreNotCharged(t *testing.T) {
	red := redistest.Start(t)
	q := redisQuota(t, red, 2, time.Hour, false)
	g := startGateway(t, withQuota(q))
	c := g.login(t, "info@example.test")
	for i := 0; i < 5; i++ {
		r := c.send("info@example.test", []string{"a@remote.test", "b@remote.test"}, "From: ceo@bank.test\r\n\r\nx\r\n")
		if r.code != 550 {
			t.Fatalf("foreign From: %v", r)
		}
	}
	// RCPTs then RSET, and RCPTs then a dropped connection.
	c.cmd("MAIL FROM:<info@example.test>")
	c.cmd("RCPT TO:<a@remote.test>")
	c.cmd("RSET")
	c2 := g.login(t, "info@example.test")
	c2.cmd("MAIL FROM:<info@example.test>")
	c2.cmd("RCPT TO:<a@remote.test>")
	c2.cmd("RCPT TO:<b@remote.test>")
	c2.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := c.send("info@example.test", []string{"a@remote.test", "b@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "ok"))
		if r.code == 250 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quota was charged for refused or abandoned mail: %v", r)
		}
		c.cmd("RSET")
		time.Sleep(20 * time.Millisecond) // the dropped session's release is asynchronous to us
	}
}

// Two gateways share one Redis; fifty sessions of one login race: exactly
// the limit is accepted.
func TestTwoInstancesFiftySessionsExactlyN(t *testing.T) {
	red := redistest.Start(t)
	const limit = 30
	g1 := startGateway(t, withQuota(redisQuota(t, red, limit, time.Hour, false)))
	g2 := startGateway(t, withQuota(redisQuota(t, red, limit, time.Hour, false)))
	// The second gateway has its own user file: give it the same login.
	addUser(t, g2.users, "info@example.test", testPassword, []string{"@example.test"}, false)
	var accepted, deferred atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			g := g1
			if i%2 == 1 {
				g = g2
			}
			c := g.login(t, "info@example.test")
			r := c.send("info@example.test", []string{fmt.Sprintf("r%d@remote.test", i)}, simpleMessage("info@example.test", "x@remote.test", "race"))
			switch {
			case r.code == 250:
				accepted.Add(1)
			case r.code == 451 && r.enhanced == "4.7.1":
				deferred.Add(1)
			default:
				t.Errorf("session %d: %v", i, r)
			}
		}(i)
	}
	wg.Wait()
	if accepted.Load() != limit || deferred.Load() != 50-limit {
		t.Fatalf("accepted %d deferred %d, want %d and %d", accepted.Load(), deferred.Load(), limit, 50-limit)
	}
	if n := len(queued(g1, t)) + len(queued(g2, t)); n != limit {
		t.Fatalf("%d messages spooled, want %d", n, limit)
	}
}

func TestRedisDownTempfailsThenRecovers(t *testing.T) {
	red := redistest.Start(t)
	g := startGateway(t, withQuota(redisQuota(t, red, 100, time.Hour, false)))
	c := g.login(t, "info@example.test")
	if r := c.send("info@example.test", []string{"a@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "1")); r.code != 250 {
		t.Fatal(r)
	}
	addUser(t, g.users, "fresh@example.test", testPassword, nil, false)
	fresh := g.login(t, "fresh@example.test")
	red.Stop()
	// A login whose room is not known asks Redis at RCPT.
	fresh.cmd("MAIL FROM:<fresh@example.test>")
	if r := fresh.cmd("RCPT TO:<a@remote.test>"); r.code != 451 || r.enhanced != "4.3.0" || strings.Contains(r.text, "redis") || strings.Contains(r.text, "127.0.0.1") {
		t.Fatalf("Redis down, RCPT: %v", r)
	}
	// The first message left info's room known for a few seconds, so its
	// RCPT may pass on it; the charge at the end of DATA cannot.
	r := c.send("info@example.test", []string{"a@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "down"))
	if r.code != 451 || r.enhanced != "4.3.0" || strings.Contains(r.text, "redis") || strings.Contains(r.text, "127.0.0.1") {
		t.Fatalf("Redis down: %v", r)
	}
	c.cmd("RSET")
	red.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.send("info@example.test", []string{"a@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "2"))
		if r.code == 250 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Redis came back: %v", r)
		}
		c.cmd("RSET")
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(queued(g, t)); n != 2 {
		t.Fatalf("%d spooled, want 2 (nothing accepted unmetered)", n)
	}
}

func TestRedisDownAllowPolicyAccepts(t *testing.T) {
	red := redistest.Start(t)
	q := redisQuota(t, red, 100, time.Hour, true)
	g := startGateway(t, withQuota(q))
	c := g.login(t, "info@example.test")
	red.Stop()
	if r := c.send("info@example.test", []string{"a@remote.test"}, simpleMessage("info@example.test", "a@remote.test", "1")); r.code != 250 {
		t.Fatalf("on_store_error=allow: %v", r)
	}
	if q.StoreErrors.Load() == 0 {
		t.Fatal("store errors not counted")
	}
}

func TestQuotaOverridePrecedence(t *testing.T) {
	one, five := 1, 5
	q := screen.NewQuota(screen.NewMemoryStore(screen.StoreConfig{Window: time.Hour, Hold: time.Minute}),
		screen.QuotaConfig{Default: 3, Domains: map[string]screen.DomainQuota{"shop.test": {PerLogin: &five}}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	cases := []struct {
		login    string
		override *int
		want     int
	}{
		{"a@example.test", nil, 3},
		{"a@shop.test", nil, 5},
		{"a@shop.test", &one, 1},
		{"a@example.test", &one, 1},
	}
	for _, c := range cases {
		if got := q.Limit(c.login, c.override); got != c.want {
			t.Errorf("%s override %v: %d, want %d", c.login, c.override, got, c.want)
		}
	}
}
