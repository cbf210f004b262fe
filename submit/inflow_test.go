package submit_test

import (
	"sync/atomic"
	"testing"
	"time"

	"sluice/submit"
)

// While more new messages wait for delivery than InFlowLimit, a new
// transaction's MAIL is answered only once delivery has caught up, or
// after InFlowDelay, and then accepted as usual: clients are slowed down
// to the rate mail goes out, never refused for it.
func TestInFlowDelay(t *testing.T) {
	var backlog atomic.Int64
	const delay = 2 * time.Second
	g := startGateway(t, func(s *submit.Server) {
		s.Backlog = func() int { return int(backlog.Load()) }
		s.InFlowLimit, s.InFlowDelay = 10, delay
	})
	c := g.login(t, "info@example.test")
	mail := func() (response, time.Duration) {
		t.Helper()
		start := time.Now()
		r := c.cmd("MAIL FROM:<info@example.test>")
		c.cmd("RSET")
		return r, time.Since(start)
	}

	if r, took := mail(); r.code != 250 || took > delay/2 {
		t.Fatalf("backlog 0: %v after %v, want 250 at once", r, took)
	}
	backlog.Store(11)
	if r, took := mail(); r.code != 250 || took < delay {
		t.Fatalf("backlog over the limit: %v after %v, want 250 after the in-flow delay (%v)", r, took, delay)
	}
	// Delivery catches up during the wait: answered then.
	go func() {
		time.Sleep(200 * time.Millisecond)
		backlog.Store(3)
	}()
	if r, took := mail(); r.code != 250 || took < 150*time.Millisecond || took > delay*3/4 {
		t.Fatalf("backlog back under the limit after 200ms: %v after %v", r, took)
	}
	if n := g.srv.InFlowWaits(); n != 2 {
		t.Fatalf("InFlowWaits %d, want 2", n)
	}
	// A whole message still goes through while delivery is behind.
	backlog.Store(100)
	if r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "slow")); r.code != 250 {
		t.Fatalf("message while delivery is behind: %v", r)
	}
}
