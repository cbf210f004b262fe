package relay_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sluice/relay"
)

// A server that answers 451 twice (once at RCPT, once after DATA) and then
// 250 gets the message exactly once, on the third attempt, and the queue is
// empty afterwards.
func TestDeferTwiceThenDeliveredOnce(t *testing.T) {
	h := newHarness(t)
	mx := h.remote()
	mx.script(nil,
		func(n int, _ string) error {
			if n == 1 {
				return smtpErr(451, "4.7.1 greylisted, come back later")
			}
			return nil
		},
		func(n int, _ *txn) error {
			if n == 1 {
				return smtpErr(451, "4.3.0 temporary storage problem")
			}
			return nil
		})
	h.start(nil)

	const rcpt = "bob@remote.test"
	id := h.send("alice@sender.test", []string{rcpt}, "greylisted 5c1d")
	h.waitEmpty()

	got := mx.delivered()
	if len(got) != 1 {
		t.Fatalf("receiver got %d messages, want exactly 1", len(got))
	}
	if got[0].From != "alice@sender.test" || !slices.Equal(got[0].Rcpts, []string{rcpt}) {
		t.Errorf("envelope from=%q to=%v, want alice@sender.test to [%s]", got[0].From, got[0].Rcpts, rcpt)
	}
	if s := subjectOf(t, got[0].Data); s != "greylisted 5c1d" {
		t.Errorf("delivered Subject %q", s)
	}
	if _, mails, _ := mx.counts(); mails != 3 {
		t.Errorf("receiver saw %d MAIL commands, want 3 (one per attempt)", mails)
	}
	if o := h.results.of(id, rcpt); !slices.Equal(o, []string{"deferred", "deferred", "delivered"}) {
		t.Errorf("outcomes of %s: %v, want [deferred deferred delivered]", rcpt, o)
	}
	for attempt, reply := range map[int]string{1: "451 4.7.1 greylisted", 2: "451 4.3.0 temporary storage problem"} {
		recs := h.logs.find("delivery", map[string]string{"id": id, "rcpt": rcpt, "result": "deferred", "attempt": fmt.Sprint(attempt)})
		if len(recs) != 1 || !strings.HasPrefix(recs[0].attrs["reply"], reply) {
			t.Errorf("attempt %d: want one deferred delivery log with reply %q, got %v", attempt, reply, recs)
		}
	}
	if recs := h.logs.find("delivery", map[string]string{"id": id, "result": "delivered"}); len(recs) != 1 || recs[0].attrs["attempt"] != "3" {
		t.Errorf("want one delivered log line with attempt=3, got %v", recs)
	}
	if recs := h.logs.find("dsn queued", nil); len(recs) != 0 {
		t.Errorf("a deferral queued a DSN: %v", recs)
	}
}

// A 5xx reply fails the recipient permanently: the message leaves the
// queue and a DSN goes from the null sender to the original sender, at the
// sender domain's own MX, with the RFC 3464 structure a mail client reads.
func TestPermanentFailureBouncesToSender(t *testing.T) {
	h := newHarness(t)
	remote, senderMX := h.remoteAndSender()
	const rcpt = "nobody@remote.test"
	const reply = "5.1.1 <nobody@remote.test>: Recipient address rejected: User unknown in virtual mailbox table"
	remote.rejectRcpts(550, reply, rcpt)
	h.start(nil)

	id := h.send("alice@sender.test", []string{rcpt}, "quarterly report 7b2e")
	h.waitEmpty()

	if n := len(remote.delivered()); n != 0 {
		t.Errorf("remote accepted %d messages", n)
	}
	if o := h.results.of(id, rcpt); !slices.Equal(o, []string{"failed"}) {
		t.Errorf("outcomes %v, want [failed]", o)
	}
	dsns := dsnsFor(senderMX, "alice@sender.test")
	if len(dsns) != 1 || len(senderMX.delivered()) != 1 {
		t.Fatalf("sender MX got %d DSNs (%d messages), want 1", len(dsns), len(senderMX.delivered()))
	}
	d := parseDSN(t, dsns[0].Data)
	if to, err := d.header.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "alice@sender.test" {
		t.Errorf("DSN To: %q (%v), want alice@sender.test", d.header.Get("To"), err)
	}
	if from := d.header.Get("From"); !strings.Contains(from, "MAILER-DAEMON@sluice.test") {
		t.Errorf("DSN From: %q, want MAILER-DAEMON@sluice.test", from)
	}
	if d.header.Get("Auto-Submitted") == "" || d.header.Get("Message-Id") == "" || d.header.Get("Date") == "" {
		t.Errorf("DSN lacks Auto-Submitted, Message-ID or Date: %v", d.header)
	}
	if _, err := d.header.Date(); err != nil {
		t.Errorf("DSN Date does not parse: %v", err)
	}
	if got := d.perMessage.Get("Reporting-Mta"); got != "dns; sluice.test" {
		t.Errorf("Reporting-MTA %q", got)
	}
	if len(d.recipients) != 1 {
		t.Errorf("DSN reports %v, want only %s", d.finalRecipients(), rcpt)
	}
	d.checkFailed(t, rcpt, "5.1.1", "550 5.1.1 <nobody@remote.test>: Recipient address rejected")
	if got := d.recipient(rcpt).Get("Remote-Mta"); got != "dns; mx.remote.test" {
		t.Errorf("Remote-MTA %q, want dns; mx.remote.test", got)
	}
	if got := d.original.Get("Subject"); got != "quarterly report 7b2e" {
		t.Errorf("text/rfc822-headers Subject %q, want the original's", got)
	}
	if got := d.original.Get("Message-Id"); !strings.Contains(got, strings.ToLower(id)) {
		t.Errorf("text/rfc822-headers Message-ID %q, want the original's", got)
	}
	if !strings.Contains(d.human, id) {
		t.Errorf("DSN text does not give the queue id %s:\n%s", id, d.human)
	}
	for _, line := range strings.Split(d.human, "\r\n") {
		if len(line) > 78 { // RFC 5322 2.1.1
			t.Errorf("DSN text line of %d characters, want at most 78: %q", len(line), line)
		}
	}
}

// A message from the null sender (a bounce itself) that fails is dropped:
// no DSN is ever generated for it.
func TestNullSenderFailureIsDropped(t *testing.T) {
	h := newHarness(t)
	remote := h.remote()
	remote.rejectRcpts(550, "5.1.1 no such user", "gone@remote.test")
	h.start(nil)

	id := h.send("", []string{"gone@remote.test"}, "Undelivered Mail Returned to Sender")
	eventually(t, "the failure of the null-sender message", func() bool { return len(h.results.forID(id)) > 0 })
	h.waitEmpty()
	if o := h.results.of(id, "gone@remote.test"); !slices.Equal(o, []string{"failed"}) {
		t.Errorf("outcomes %v, want [failed]", o)
	}
	if recs := h.logs.find("dsn queued", nil); len(recs) != 0 {
		t.Errorf("a DSN was queued for a null-sender message: %v", recs)
	}
	if txs := remote.transactions(); len(txs) != 1 || txs[0].From != "" {
		t.Errorf("remote saw %d transactions, want the one MAIL FROM:<>: %+v", len(txs), txs)
	}
}

// One message to five recipients on two domains: each recipient gets its
// own outcome, each domain gets one transaction per attempt, a deferred
// recipient is retried alone (the delivered ones are not sent twice) and
// the one DSN lists only the failed recipients.
func TestMixedRecipientsOutcomes(t *testing.T) {
	h := newHarness(t)
	h.receivers(rx("mx.remote.test", "127.0.0.2"), rx("mx.sender.test", "127.0.0.3"), rx("mx.other.test", "127.0.0.4"))
	h.mx("remote.test", 10, "mx.remote.test")
	h.mx("other.test", 10, "mx.other.test")
	h.mx("sender.test", 10, "mx.sender.test")
	remote, other, senderMX := h.rx["mx.remote.test"], h.rx["mx.other.test"], h.rx["mx.sender.test"]
	remote.rejectRcpts(550, "5.1.1 bad1: user unknown", "bad1@remote.test")
	laterTries := 0
	other.script(nil, func(_ int, rc string) error {
		switch rc {
		case "gone@other.test":
			return smtpErr(550, "5.1.1 gone: mailbox removed")
		case "later@other.test":
			laterTries++
			if laterTries == 1 {
				return smtpErr(452, "4.2.2 later: mailbox full")
			}
		}
		return nil
	}, nil)
	h.start(nil)

	rcpts := []string{"ann@remote.test", "bad1@remote.test", "ben@other.test", "later@other.test", "gone@other.test"}
	id := h.send("alice@sender.test", rcpts, "team lunch 31a0")
	h.waitEmpty()

	want := map[string][]string{
		"ann@remote.test":  {"delivered"},
		"bad1@remote.test": {"failed"},
		"ben@other.test":   {"delivered"},
		"later@other.test": {"deferred", "delivered"},
		"gone@other.test":  {"failed"},
	}
	for rc, w := range want {
		if o := h.results.of(id, rc); !slices.Equal(o, w) {
			t.Errorf("outcomes of %s: %v, want %v", rc, o, w)
		}
	}

	rt := remote.transactions()
	if len(rt) != 1 || !slices.Equal(rt[0].Tried, []string{"ann@remote.test", "bad1@remote.test"}) ||
		!slices.Equal(rt[0].Rcpts, []string{"ann@remote.test"}) || !rt[0].Accepted {
		t.Errorf("remote.test: want one transaction RCPT ann, bad1 delivering to ann; got %+v", summary(rt))
	}
	ot := other.transactions()
	if len(ot) != 2 ||
		!slices.Equal(ot[0].Tried, []string{"ben@other.test", "later@other.test", "gone@other.test"}) || !slices.Equal(ot[0].Rcpts, []string{"ben@other.test"}) || !ot[0].Accepted ||
		!slices.Equal(ot[1].Tried, []string{"later@other.test"}) || !slices.Equal(ot[1].Rcpts, []string{"later@other.test"}) || !ot[1].Accepted {
		t.Errorf("other.test: want transaction 1 RCPT ben, later, gone delivering to ben, then transaction 2 RCPT later only; got %+v", summary(ot))
	}
	if _, mails, _ := remote.counts(); mails != 1 {
		t.Errorf("remote.test saw %d MAIL commands, want 1", mails)
	}
	if _, mails, _ := other.counts(); mails != 2 {
		t.Errorf("other.test saw %d MAIL commands, want 2 (one per attempt)", mails)
	}

	dsns := dsnsFor(senderMX, "alice@sender.test")
	if len(dsns) != 1 {
		t.Fatalf("sender got %d DSNs, want 1", len(dsns))
	}
	d := parseDSN(t, dsns[0].Data)
	got := d.finalRecipients()
	slices.Sort(got)
	if !slices.Equal(got, []string{"bad1@remote.test", "gone@other.test"}) {
		t.Errorf("DSN recipients %v, want only the failed bad1@remote.test and gone@other.test", got)
	}
	d.checkFailed(t, "bad1@remote.test", "5.1.1", "550 5.1.1 bad1: user unknown")
	d.checkFailed(t, "gone@other.test", "5.1.1", "550 5.1.1 gone: mailbox removed")
	for _, ok := range []string{"ann@remote.test", "ben@other.test", "later@other.test"} {
		if strings.Contains(d.human, ok) {
			t.Errorf("DSN text mentions %s, which was delivered:\n%s", ok, d.human)
		}
	}
}

func summary(txs []txn) []string {
	var out []string
	for _, x := range txs {
		out = append(out, fmt.Sprintf("{from=%q tried=%v accepted=%v delivered=%v}", x.From, x.Tried, x.Rcpts, x.Accepted))
	}
	return out
}

// A domain with a null MX (RFC 7505) fails at once with a DSN, and no
// server is contacted; a domain without MX but with an address record gets
// its mail at that address (RFC 5321 5.1).
func TestNullMXAndAddressFallback(t *testing.T) {
	h := newHarness(t)
	h.receivers(rx("mx.sender.test", "127.0.0.3"), rx("aonly.test", "127.0.0.6"))
	h.mx("sender.test", 10, "mx.sender.test")
	h.dns.Add(t, "nullmx.test. 300 IN MX 0 .", "nullmx.test. 300 IN A 127.0.0.6")
	aonly, senderMX := h.rx["aonly.test"], h.rx["mx.sender.test"]
	h.start(nil)

	nullID := h.send("alice@sender.test", []string{"x@nullmx.test"}, "to a null MX")
	aID := h.send("alice@sender.test", []string{"y@aonly.test"}, "to an A record")
	h.waitEmpty()

	if o := h.results.of(nullID, "x@nullmx.test"); !slices.Equal(o, []string{"failed"}) {
		t.Errorf("null MX: outcomes %v, want [failed] at the first attempt", o)
	}
	if o := h.results.of(aID, "y@aonly.test"); !slices.Equal(o, []string{"delivered"}) {
		t.Errorf("A fallback: outcomes %v, want [delivered]", o)
	}
	got := aonly.delivered()
	if len(got) != 1 || !slices.Equal(got[0].Rcpts, []string{"y@aonly.test"}) || subjectOf(t, got[0].Data) != "to an A record" {
		t.Errorf("the A-record host got %+v, want the one message to y@aonly.test", summary(got))
	}
	dsns := dsnsFor(senderMX, "alice@sender.test")
	if len(dsns) != 1 {
		t.Fatalf("sender got %d DSNs, want 1 (for the null MX)", len(dsns))
	}
	d := parseDSN(t, dsns[0].Data)
	d.checkFailed(t, "x@nullmx.test", "5.1.10", "null MX")
	if got := d.original.Get("Subject"); got != "to a null MX" {
		t.Errorf("DSN is about %q, want the null MX message", got)
	}
}

// Twenty messages to one domain travel over at most per_domain_connections
// connections: each connection carries many transactions.
func TestConnectionReuse(t *testing.T) {
	h := newHarness(t)
	mx := h.remote()
	const perDomain = 2
	h.start(func(c *relay.Config) { c.PerDomain = perDomain; c.Workers = 10 })

	const n = 20
	for i := 0; i < n; i++ {
		h.send("alice@sender.test", []string{fmt.Sprintf("r%d@remote.test", i)}, fmt.Sprintf("batch %02d", i))
	}
	h.waitEmpty()

	got := mx.delivered()
	subjects := map[string]int{}
	for _, x := range got {
		subjects[subjectOf(t, x.Data)]++
	}
	if len(got) != n || len(subjects) != n {
		t.Errorf("receiver got %d messages with %d distinct subjects, want %d each", len(got), len(subjects), n)
	}
	accepts, mails, _ := mx.counts()
	if accepts >= n {
		t.Errorf("%d connections for %d messages: connections are not reused", accepts, n)
	}
	if accepts > perDomain {
		t.Errorf("%d connections, want at most per_domain_connections=%d", accepts, perDomain)
	}
	if mails != n {
		t.Errorf("%d MAIL commands for %d messages", mails, n)
	}
	t.Logf("%d messages over %d connections", n, accepts)
}

// After a 550 5.1.1 for x@remote.test, the next message from the same
// sender domain to x fails at once with a DSN, without contacting the
// server; another sender domain is not affected.
func TestSuppressionFailsFast(t *testing.T) {
	h := newHarness(t)
	remote, senderMX := h.remoteAndSender()
	h.mx("other-sender.test", 10, "mx.sender.test")
	const x = "x@remote.test"
	remote.rejectRcpts(550, "5.1.1 x: no such mailbox here", x)
	sup := h.suppressions()
	h.start(nil)

	first := h.send("alice@sender.test", []string{x}, "first try")
	h.waitEmpty()
	if o := h.results.of(first, x); !slices.Equal(o, []string{"failed"}) {
		t.Fatalf("first message: outcomes %v, want [failed]", o)
	}
	if e, ok := sup.Lookup("sender.test", x); !ok || !strings.Contains(e.Reply, "no such mailbox here") {
		t.Fatalf("x is not suppressed for sender.test after its 550 5.1.1: %+v %v", e, ok)
	}
	if raw, err := os.ReadFile(filepath.Join(h.dir, "suppress.json")); err != nil || !strings.Contains(string(raw), x) {
		t.Errorf("suppress.json does not list %s: %v\n%s", x, err, raw)
	}
	accepts0, mails0, _ := remote.counts()
	rcpts0 := remote.rcptCount(x)

	second := h.send("alice@sender.test", []string{x}, "second try")
	h.waitEmpty()
	if o := h.results.of(second, x); !slices.Equal(o, []string{"failed"}) {
		t.Errorf("second message: outcomes %v, want [failed]", o)
	}
	if accepts, mails, _ := remote.counts(); accepts != accepts0 || mails != mails0 || remote.rcptCount(x) != rcpts0 {
		t.Errorf("the suppressed send reached the server: connections %d->%d, MAIL %d->%d, RCPT x %d->%d",
			accepts0, accepts, mails0, mails, rcpts0, remote.rcptCount(x))
	}
	dsns := dsnsFor(senderMX, "alice@sender.test")
	if len(dsns) != 2 {
		t.Fatalf("sender got %d DSNs, want 2", len(dsns))
	}
	var d *dsnReport
	for _, m := range dsns {
		if r := parseDSN(t, m.Data); r.original.Get("Subject") == "second try" {
			d = r
		}
	}
	if d == nil {
		t.Fatal("no DSN for the suppressed message")
	}
	d.checkFailed(t, x, "5.1.1", "not sent")
	if !strings.Contains(words(d.human), "no such mailbox here") {
		t.Errorf("suppression DSN does not quote the original bounce:\n%s", d.human)
	}

	// Per sender domain: another domain's mail still goes to the server.
	third := h.send("carol@other-sender.test", []string{x}, "other sender")
	h.waitEmpty()
	if remote.rcptCount(x) != rcpts0+1 {
		t.Errorf("mail from other-sender.test to %s was suppressed too (RCPT count %d, want %d)", x, remote.rcptCount(x), rcpts0+1)
	}
	if o := h.results.of(third, x); !slices.Equal(o, []string{"failed"}) {
		t.Errorf("third message: outcomes %v, want [failed] (the server's 550)", o)
	}
}

// Each suppressed send must keep the remote's original bounce as the
// reason: the entry is not rewritten with Sluice's own "not sent" reply,
// so later DSNs do not nest it, and the date it promises does not move.
func TestSuppressionKeepsOriginalBounce(t *testing.T) {
	h := newHarness(t)
	remote, sender := h.remoteAndSender()
	const x = "x@remote.test"
	remote.rejectRcpts(550, "5.1.1 x: no such mailbox here", x)
	sup := h.suppressions()
	h.start(nil)

	h.send("alice@sender.test", []string{x}, "bounce")
	h.waitEmpty()
	orig, _ := sup.Lookup("sender.test", x)
	for i := 0; i < 2; i++ {
		h.send("alice@sender.test", []string{x}, fmt.Sprintf("suppressed %d", i))
		h.waitEmpty()
	}
	e, ok := sup.Lookup("sender.test", x)
	if !ok || e.Reply != orig.Reply || !e.Until.Equal(orig.Until) {
		t.Errorf("suppression entry changed by suppressed sends:\nbefore: %+v\nafter:  %+v", orig, e)
	}
	for _, m := range dsnsFor(sender, "alice@sender.test") {
		d := parseDSN(t, m.Data)
		if n := strings.Count(d.recipient(x).Get("Diagnostic-Code"), "not sent"); n > 1 {
			t.Errorf("DSN for %q nests the suppression reply %d times: %s", d.original.Get("Subject"), n, d.recipient(x).Get("Diagnostic-Code"))
		}
	}
}

// Backlog counts the new messages that wait for a worker: with the only
// worker stuck in a delivery, those sent meanwhile wait (but the one being
// handed to it); once it is free they all go out and the backlog is 0
// again.
func TestBacklog(t *testing.T) {
	h := newHarness(t)
	mx := h.remote()
	reached, release := mx.stallNextData(t)
	r := h.start(func(c *relay.Config) { c.Workers = 1 })
	h.send("alice@sender.test", []string{"first@remote.test"}, "stuck")
	reached()
	for i := 0; i < 5; i++ {
		h.send("alice@sender.test", []string{fmt.Sprintf("r%d@remote.test", i)}, fmt.Sprintf("waiting %d", i))
	}
	// One of them is in the hand-off to the busy worker already.
	eventually(t, "4 or 5 messages waiting", func() bool { n := r.Backlog(); return n == 4 || n == 5 })
	release()
	h.waitEmpty()
	if n := r.Backlog(); n != 0 || len(mx.delivered()) != 6 {
		t.Fatalf("after the stall: backlog %d, %d delivered; want 0 and 6", n, len(mx.delivered()))
	}
}
