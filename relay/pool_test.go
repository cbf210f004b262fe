package relay_test

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// A pooled connection that the server closed while it sat idle (servers
// time out idle clients with a 421, or just close: a restart, a load
// balancer) must not cost the next message a retry: the relay opens a
// fresh connection and delivers at the first attempt, instead of deferring
// the message for a whole retry interval (5 minutes by default).
func TestStalePooledConnectionDoesNotDefer(t *testing.T) {
	for _, tc := range []string{"idle timeout 421", "closed without reply"} {
		t.Run(tc, func(t *testing.T) {
			h := newHarness(t)
			var opts []receiverOpt
			if tc == "idle timeout 421" {
				opts = append(opts, withServer(func(s *smtp.Server) { s.ReadTimeout = 300 * time.Millisecond }))
			}
			mx := h.remote(opts...)
			h.start(nil) // IdleConnTimeout 5s: the relay keeps it longer than the server

			h.send("alice@sender.test", []string{"a@remote.test"}, "first")
			h.waitEmpty()
			if tc == "closed without reply" {
				// The server goes away (closing every connection) and a
				// new one takes its address.
				mx.srv.Close()
				l, err := net.Listen("tcp", mx.addr)
				if err != nil {
					t.Fatal(err)
				}
				mx = serveReceiver(t, "mx.remote.test", l)
			} else {
				eventually(t, "the server to drop the idle connection", func() bool {
					mx.mu.Lock()
					defer mx.mu.Unlock()
					return mx.logouts >= 1
				})
			}

			id := h.send("alice@sender.test", []string{"b@remote.test"}, "second")
			h.waitEmpty()
			if o := h.results.of(id, "b@remote.test"); !slices.Equal(o, []string{"delivered"}) {
				t.Errorf("outcomes %v, want [delivered] at the first attempt over a new connection", o)
			}
			if got := mx.deliveredTo("b@remote.test"); len(got) != 1 {
				t.Errorf("the server got %d copies of the second message, want 1", len(got))
			}
		})
	}
}
