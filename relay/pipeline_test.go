package relay_test

import (
	"slices"
	"strings"
	"testing"

	"sluice/relay"
)

// A MAIL refused by a server that pipelines (the RCPT and DATA sent with it
// are refused too) fails every recipient with the MAIL reply, and the
// session, reset, carries the next message.
func TestPipelinedMailRefusal(t *testing.T) {
	h := newHarness(t)
	remote, senderMX := h.remoteAndSender()
	const reply = "5.7.1 <alice@sender.test>: Sender address rejected: Access denied"
	remote.script(func(n int, from string) error {
		if strings.HasPrefix(from, "alice@") {
			return smtpErr(550, reply)
		}
		return nil
	}, nil, nil)
	h.start(func(c *relay.Config) { c.PerDomain = 1; c.Workers = 1 })

	refused := h.send("alice@sender.test", []string{"one@remote.test", "two@remote.test"}, "refused sender 51c3")
	h.waitEmpty()
	ok := h.send("bob@sender.test", []string{"three@remote.test"}, "accepted sender 51c3")
	h.waitEmpty()

	for _, rc := range []string{"one@remote.test", "two@remote.test"} {
		if o := h.results.of(refused, rc); !slices.Equal(o, []string{"failed"}) {
			t.Errorf("%s: outcomes %v, want [failed]", rc, o)
		}
	}
	if o := h.results.of(ok, "three@remote.test"); !slices.Equal(o, []string{"delivered"}) {
		t.Errorf("three@remote.test: outcomes %v, want [delivered]", o)
	}
	dsns := dsnsFor(senderMX, "alice@sender.test")
	if len(dsns) != 1 {
		t.Fatalf("sender MX got %d DSNs for alice, want 1", len(dsns))
	}
	d := parseDSN(t, dsns[0].Data)
	for _, rc := range []string{"one@remote.test", "two@remote.test"} {
		d.checkFailed(t, rc, "5.7.1", "550 5.7.1 <alice@sender.test>: Sender address rejected")
	}
	if got := remote.delivered(); len(got) != 1 || !slices.Equal(got[0].Rcpts, []string{"three@remote.test"}) {
		t.Errorf("remote got %d messages (%+v), want only bob's", len(got), got)
	}
	if accepts, _, _ := remote.counts(); accepts != 1 {
		t.Errorf("%d connections, want the one session reused after the refusal", accepts)
	}
}

// A server that ended an idle pooled session answers the pipelined group
// with 421: the relay opens a new session and delivers, without deferring.
func TestPipelined421OnPooledSessionRedials(t *testing.T) {
	h := newHarness(t)
	remote := h.remote()
	remote.script(func(n int, _ string) error {
		if n == 2 { // the second MAIL: the first message's session, reused
			return smtpErr(421, "4.4.2 mx.remote.test Error: timeout exceeded")
		}
		return nil
	}, nil, nil)
	h.start(func(c *relay.Config) { c.PerDomain = 1; c.Workers = 1 })

	first := h.send("alice@sender.test", []string{"one@remote.test"}, "first 7d10")
	h.waitEmpty()
	second := h.send("alice@sender.test", []string{"two@remote.test"}, "second 7d10")
	h.waitEmpty()

	for id, rc := range map[string]string{first: "one@remote.test", second: "two@remote.test"} {
		if o := h.results.of(id, rc); !slices.Equal(o, []string{"delivered"}) {
			t.Errorf("%s: outcomes %v, want [delivered] (no deferral)", rc, o)
		}
	}
	if accepts, _, _ := remote.counts(); accepts != 2 {
		t.Errorf("%d connections, want 2 (the pooled one, then a new one after its 421)", accepts)
	}
}
