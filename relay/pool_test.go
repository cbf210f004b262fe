package relay_test

import (
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// A pooled connection that the server closed while it sat idle (servers
// time out idle clients) must not cost the next message a retry: the relay
// should open a fresh connection and deliver at the first attempt, not
// defer the message for a whole retry interval (5 minutes by default).
func TestStalePooledConnectionDoesNotDefer(t *testing.T) {
	knownBug(t, "deliver.go tryTarget(): a pooled connection the server already closed (its idle-timeout 421, or EOF) fails MAIL and defers the message instead of redialling")
	h := newHarness(t)
	h.receivers(rx("mx.remote.test", "127.0.0.2", withServer(func(s *smtp.Server) { s.ReadTimeout = 300 * time.Millisecond })))
	h.mx("remote.test", 10, "mx.remote.test")
	mx := h.rx["mx.remote.test"]
	h.start(nil) // IdleConnTimeout 5s: the relay keeps it longer than the server

	h.send("alice@sender.test", []string{"a@remote.test"}, "first")
	h.waitEmpty()
	eventually(t, "the server to drop the idle connection", func() bool {
		mx.mu.Lock()
		defer mx.mu.Unlock()
		return mx.logouts >= 1
	})

	id := h.send("alice@sender.test", []string{"b@remote.test"}, "second")
	h.waitEmpty()
	if o := h.results.of(id, "b@remote.test"); !slices.Equal(o, []string{"delivered"}) {
		t.Errorf("outcomes %v, want [delivered] at the first attempt over a new connection", o)
	}
}
