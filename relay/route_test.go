package relay_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"sluice/relay"
)

// MX hosts are tried by preference: the lowest preference that answers
// gets the message; when it cannot be reached, the next one does.
func TestMXPreferenceOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		firstDown bool
		want      string
	}{
		{"lowest preference answers", false, "mx10.remote.test"},
		{"lowest preference down", true, "mx20.remote.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.firstDown {
				// Nothing listens at mx10's address: connection refused.
				h.receivers(rx("mx20.remote.test", "127.0.0.3"))
				h.dns.Add(t, "mx10.remote.test. 300 IN A 127.0.0.20")
			} else {
				h.receivers(rx("mx10.remote.test", "127.0.0.2"), rx("mx20.remote.test", "127.0.0.3"))
			}
			// Published in the wrong order on purpose.
			h.mx("remote.test", 20, "mx20.remote.test")
			h.mx("remote.test", 10, "mx10.remote.test")
			h.start(nil)

			id := h.send("alice@sender.test", []string{"bob@remote.test"}, "by preference")
			h.waitEmpty()
			if o := h.results.of(id, "bob@remote.test"); !slices.Equal(o, []string{"delivered"}) {
				t.Errorf("outcomes %v, want [delivered] at the first attempt", o)
			}
			for name, r := range h.rx {
				n := len(r.delivered())
				if (name == tc.want) != (n == 1) || n > 1 {
					t.Errorf("%s got %d messages; want the one message at %s only", name, n, tc.want)
				}
			}
		})
	}
}

// A server that takes only two recipients per transaction (452 4.5.3 for
// the rest) gets the others in further transactions of the same attempt
// (RFC 5321 4.5.3.1.10), not a retry interval later.
func TestTooManyRecipientsSentInNextTransaction(t *testing.T) {
	h := newHarness(t)
	mx := h.remote()
	perTxn := 0
	mx.script(func(int, string) error { perTxn = 0; return nil }, func(int, string) error {
		perTxn++
		if perTxn > 2 {
			return smtpErr(452, "4.5.3 Error: too many recipients")
		}
		return nil
	}, nil)
	h.start(func(c *relay.Config) { c.Retry = []time.Duration{time.Hour} })

	var rcpts []string
	for i := 0; i < 5; i++ {
		rcpts = append(rcpts, fmt.Sprintf("r%d@remote.test", i))
	}
	id := h.send("alice@sender.test", rcpts, "five recipients")
	h.waitEmpty()
	for _, rc := range rcpts {
		if o := h.results.of(id, rc); !slices.Equal(o, []string{"delivered"}) {
			t.Errorf("%s: outcomes %v, want [delivered] in the first attempt", rc, o)
		}
	}
	var got []string
	for _, x := range mx.delivered() {
		if len(x.Rcpts) > 2 {
			t.Errorf("a transaction delivered to %v, more than the server's 2", x.Rcpts)
		}
		got = append(got, x.Rcpts...)
	}
	slices.Sort(got)
	if !slices.Equal(got, rcpts) {
		t.Errorf("delivered to %v, want each of %v once", got, rcpts)
	}
	if n := len(mx.delivered()); n != 3 {
		t.Errorf("%d transactions, want 3 (2+2+1)", n)
	}
}

// An address that is not ASCII needs SMTPUTF8 (RFC 6531): a server that
// offers it gets the message; one that does not is never sent it, and the
// sender gets a bounce that says why.
func TestSMTPUTF8Addresses(t *testing.T) {
	h := newHarness(t)
	h.receivers(
		rx("mx.utf8.test", "127.0.0.2", withServer(func(s *smtp.Server) { s.EnableSMTPUTF8 = true })),
		rx("mx.ascii.test", "127.0.0.4"),
		rx("mx.sender.test", "127.0.0.3"))
	h.mx("utf8.test", 10, "mx.utf8.test")
	h.mx("ascii.test", 10, "mx.ascii.test")
	h.mx("sender.test", 10, "mx.sender.test")
	h.start(nil)

	id := h.send("alice@sender.test", []string{"jörg@utf8.test", "jörg@ascii.test"}, "utf-8 recipients")
	h.waitEmpty()
	if got := h.rx["mx.utf8.test"].deliveredTo("jörg@utf8.test"); len(got) != 1 {
		t.Errorf("the SMTPUTF8 server got %+v, want the message", summary(got))
	}
	if _, mails, _ := h.rx["mx.ascii.test"].counts(); mails != 0 {
		t.Errorf("the server without SMTPUTF8 saw %d MAIL commands, want none", mails)
	}
	if o := h.results.of(id, "jörg@ascii.test"); !slices.Equal(o, []string{"failed"}) {
		t.Errorf("outcomes %v, want [failed]", o)
	}
	dsns := dsnsFor(h.rx["mx.sender.test"], "alice@sender.test")
	if len(dsns) != 1 {
		t.Fatalf("sender got %d DSNs, want 1", len(dsns))
	}
	parseDSN(t, dsns[0].Data).checkFailed(t, "jörg@ascii.test", "5.6.7", "does not support SMTPUTF8")
}

// Only the enhanced code of a reply marks a mailbox unknown: a block
// reply that merely contains "5.1.1" in its text (here in an IP address)
// must not put the recipient on the suppression list.
func TestSuppressionOnlyForUnknownMailboxCode(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		suppressed  bool
	}{
		{"unknown mailbox", "5.1.1 <x@remote.test>: user unknown", true},
		{"IP address in the text", "5.7.1 Service unavailable; client [85.1.1.4] blocked using a block list", false},
		{"no enhanced code", "Requested action not taken: 5.1.1 is what you would expect", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			remote, _ := h.remoteAndSender()
			const x = "x@remote.test"
			remote.rejectRcpts(550, tc.reply, x)
			sup := h.suppressions()
			h.start(nil)

			h.send("alice@sender.test", []string{x}, "first")
			h.waitEmpty()
			if _, ok := sup.Lookup("sender.test", x); ok != tc.suppressed {
				t.Errorf("after 550 %s: suppressed=%v, want %v", tc.reply, ok, tc.suppressed)
			}
		})
	}
}

// A bounce that cannot be delivered (the sender's own server refuses it)
// is dropped: no bounce of the bounce, nothing left in the queue, and the
// refused sender is not put on the suppression list of the null sender.
func TestUndeliverableBounceIsDropped(t *testing.T) {
	h := newHarness(t)
	remote, sender := h.remoteAndSender()
	remote.rejectRcpts(550, "5.1.1 no such user", "gone@remote.test")
	sender.rejectRcpts(550, "5.1.1 alice left the company", "alice@sender.test")
	sup := h.suppressions()
	h.start(nil)

	id := h.send("alice@sender.test", []string{"gone@remote.test"}, "to a gone user")
	eventually(t, "the bounce's own failure", func() bool {
		return len(h.logs.find("delivery", map[string]string{"rcpt": "alice@sender.test", "result": "failed"})) == 1
	})
	h.waitEmpty()
	if recs := h.logs.find("dsn queued", nil); len(recs) != 1 || recs[0].attrs["for"] != id {
		t.Errorf("DSNs queued: %v, want exactly the one for %s", recs, id)
	}
	if txs := sender.transactions(); len(txs) != 1 || txs[0].From != "" {
		t.Errorf("sender MX saw %+v, want the one bounce from <>", summary(txs))
	}
	for _, e := range sup.List() {
		if e.Rcpt == "alice@sender.test" {
			t.Errorf("the refused bounce put %+v on the suppression list", e)
		}
	}
	if !strings.Contains(h.logs.String(), "alice left the company") {
		t.Errorf("the bounce's failure is not logged with the reply")
	}
}
