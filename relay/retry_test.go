package relay_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/relay"
	"sluice/relay/explain"
)

// alwaysDefer makes a receiver answer every RCPT with a 451.
func alwaysDefer(r *receiver) {
	r.script(nil, func(int, string) error { return smtpErr(451, "4.7.1 greylisted, come back later") }, nil)
}

// The next try follows retry_schedule step by step (the last step
// repeating), each wait with at most ±10% jitter, and never later than
// max_age after the message arrived.
func TestRetrySchedule(t *testing.T) {
	const hour = time.Hour
	for _, tc := range []struct {
		name     string
		retry    []time.Duration
		maxAge   time.Duration
		attempts int           // wait for this many deferrals
		wait     time.Duration // expected wait after the last one (0: capped at max_age)
	}{
		{"first step", []time.Duration{hour}, 24 * hour, 1, hour},
		{"third step", []time.Duration{20 * time.Millisecond, 30 * time.Millisecond, hour}, 24 * hour, 3, hour},
		{"capped at max_age", []time.Duration{hour}, 30 * time.Minute, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			alwaysDefer(h.remote())
			h.start(func(c *relay.Config) { c.Retry, c.MaxAge = tc.retry, tc.maxAge })

			const n = 8
			var ids []string
			for i := 0; i < n; i++ {
				ids = append(ids, h.send("alice@sender.test", []string{fmt.Sprintf("r%d@remote.test", i)}, "deferred"))
			}
			offsets := map[time.Duration]bool{}
			for i, id := range ids {
				rc := fmt.Sprintf("r%d@remote.test", i)
				eventually(t, fmt.Sprintf("%d attempts of %s", tc.attempts, id), func() bool {
					st := h.state(id)
					return st.Attempts >= tc.attempts && st.Rcpt(rc).Attempts >= tc.attempts
				})
				st := h.state(id)
				if st.Attempts != tc.attempts {
					t.Fatalf("%s: %d attempts, want %d (the next one is an hour away)", id, st.Attempts, tc.attempts)
				}
				env, _, err := h.spool.Read(id)
				if err != nil {
					t.Fatal(err)
				}
				if tc.wait == 0 {
					if want := env.Received.Add(tc.maxAge); !st.NextTry.Equal(want) {
						t.Errorf("next try %v, want max_age after arrival: %v", st.NextTry, want)
					}
					continue
				}
				// The attempt started before Updated, so the wait measured
				// from Updated is at most the step plus 10%, and at least
				// the step minus 10% minus the attempt's own duration.
				got := st.NextTry.Sub(st.Rcpt(rc).Updated)
				if got > tc.wait*11/10 || got < tc.wait*9/10-time.Minute {
					t.Errorf("%s: next try %v after the attempt, want %v ±10%%", id, got, tc.wait)
				}
				offsets[got.Round(time.Second)] = true
			}
			if tc.wait != 0 && len(offsets) < 2 {
				t.Errorf("all %d messages wait exactly the same time (%v): no jitter", n, offsets)
			}
		})
	}
}

// A recipient still deferred when max_age runs out fails: the message
// leaves the queue and the sender gets one failure DSN that gives the last
// reply and says Sluice gave up (Status 4.4.7, RFC 3463).
func TestMaxAgeExpiryBounces(t *testing.T) {
	h := newHarness(t)
	remote, sender := h.remoteAndSender()
	alwaysDefer(remote)
	h.start(func(c *relay.Config) { c.MaxAge = 300 * time.Millisecond })

	const rcpt = "bob@remote.test"
	id := h.send("alice@sender.test", []string{rcpt}, "never accepted")
	h.waitEmpty()
	o := h.results.of(id, rcpt)
	if len(o) < 2 || o[len(o)-1] != "failed" || slices.Contains(o[:len(o)-1], "failed") {
		t.Errorf("outcomes %v, want deferrals then one failed", o)
	}
	dsns := dsnsFor(sender, "alice@sender.test")
	if len(dsns) != 1 {
		t.Fatalf("sender got %d DSNs, want 1", len(dsns))
	}
	d := parseDSN(t, dsns[0].Data)
	d.checkFailed(t, rcpt, "4.4.7", "451 4.7.1 greylisted, come back later")
	if !strings.Contains(words(d.human), "gave up after 300ms of retries") {
		t.Errorf("DSN text does not say Sluice gave up:\n%s", d.human)
	}
	if recs := h.logs.find("delivery", map[string]string{"id": id, "rcpt": rcpt, "result": "failed"}); len(recs) != 1 || !strings.Contains(recs[0].attrs["reply"], "gave up") {
		t.Errorf("want one failed delivery log line saying it gave up, got %v", recs)
	}
}

// After warn_after a sender whose mail is still deferred gets one delay
// DSN (Action: delayed, Will-Retry-Until) and later none again; never with
// warn_after = 0, never for a message from the null sender.
func TestDelayWarning(t *testing.T) {
	for _, tc := range []struct {
		name      string
		from      string
		warnAfter time.Duration
		warnings  int
	}{
		{"warned once", "alice@sender.test", 100 * time.Millisecond, 1},
		{"warnings off", "alice@sender.test", 0, 0},
		{"null sender", "", 100 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			remote, sender := h.remoteAndSender()
			start := time.Now()
			// Deferred for three warn_after periods, then accepted.
			remote.script(nil, func(int, string) error {
				if time.Since(start) < 300*time.Millisecond {
					return smtpErr(451, "4.7.1 greylisted, come back later")
				}
				return nil
			}, nil)
			h.start(func(c *relay.Config) { c.WarnAfter = tc.warnAfter })

			const rcpt = "bob@remote.test"
			id := h.send(tc.from, []string{rcpt}, "slow")
			h.waitEmpty()
			if o := h.results.of(id, rcpt); len(o) < 2 || o[len(o)-1] != "delivered" {
				t.Errorf("outcomes %v, want deferrals then delivered", o)
			}
			var warnings []*dsnReport
			for _, m := range sender.delivered() {
				d := parseDSN(t, m.Data)
				if r := d.recipient(rcpt); r == nil || r.Get("Action") != "delayed" {
					t.Errorf("sender got a DSN that is not a delay warning: %v", d.recipients)
					continue
				}
				warnings = append(warnings, d)
			}
			if len(warnings) != tc.warnings {
				t.Fatalf("%d delay warnings, want %d", len(warnings), tc.warnings)
			}
			if tc.warnings == 0 {
				return
			}
			d := warnings[0]
			r := d.recipient(rcpt)
			if r.Get("Status") != "4.7.1" || r.Get("Will-Retry-Until") == "" || !strings.Contains(r.Get("Diagnostic-Code"), "451 4.7.1 greylisted") {
				t.Errorf("delay DSN block %v: want Status 4.7.1, Will-Retry-Until, the 451 as Diagnostic-Code", r)
			}
			if !strings.Contains(d.header.Get("Subject"), "Delayed") || !strings.Contains(words(d.human), "you do not need to send it again") {
				t.Errorf("delay DSN %q does not tell the sender to wait:\n%s", d.header.Get("Subject"), d.human)
			}
		})
	}
}

// Zero durations in the configuration take the defaults: a deferral with
// max_age, connect_timeout and command_timeout unset is retried, not
// bounced at once or timed out before the greeting.
func TestZeroConfigTakesDefaults(t *testing.T) {
	h := newHarness(t)
	remote, sender := h.remoteAndSender()
	remote.script(nil, func(n int, _ string) error {
		if n == 1 {
			return smtpErr(451, "4.7.1 greylisted, come back later")
		}
		return nil
	}, nil)
	h.start(func(c *relay.Config) { c.MaxAge, c.ConnectTimeout, c.CommandTimeout = 0, 0, 0 })

	id := h.send("alice@sender.test", []string{"bob@remote.test"}, "defaults")
	h.waitEmpty()
	if o := h.results.of(id, "bob@remote.test"); !slices.Equal(o, []string{"deferred", "delivered"}) {
		t.Errorf("outcomes %v, want [deferred delivered]", o)
	}
	if n := len(sender.delivered()); n != 0 {
		t.Errorf("sender got %d DSNs for a message that was delivered", n)
	}
}

// The delivery state is kept on disk: a relay stopped after a first
// attempt and started again over the same spool tries only the deferred
// recipient, counting on from the saved attempts.
func TestRestartResumesFromSavedState(t *testing.T) {
	h := newHarness(t)
	mx := h.remote()
	mx.rejectRcpts(451, "4.2.2 mailbox full", "later@remote.test")
	h.start(func(c *relay.Config) { c.Retry = []time.Duration{time.Hour} })

	id := h.send("alice@sender.test", []string{"now@remote.test", "later@remote.test"}, "restart")
	eventually(t, "the first attempt", func() bool { return len(h.results.forID(id)) == 2 })
	h.stop()
	st := h.state(id)
	if st.Attempts != 1 || st.Rcpt("now@remote.test").Status != "delivered" || st.Rcpt("later@remote.test").Status != "pending" {
		t.Fatalf("saved state %+v, want 1 attempt, now delivered, later pending", st)
	}

	// Due now, as `sluice queue retry` makes it; the receiver takes it.
	st.NextTry = time.Now()
	if err := h.spool.SaveState(id, st); err != nil {
		t.Fatal(err)
	}
	mx.rejectRcpts(0, "")
	h.start(nil)
	h.waitEmpty()
	if got := mx.deliveredTo("now@remote.test"); len(got) != 1 {
		t.Errorf("now@remote.test got %d copies, want 1", len(got))
	}
	if got := mx.deliveredTo("later@remote.test"); len(got) != 1 || len(got[0].Tried) != 1 {
		t.Errorf("the second run sent %+v, want one transaction to later@remote.test alone", summary(got))
	}
	if recs := h.logs.find("delivery", map[string]string{"id": id, "rcpt": "later@remote.test", "result": "delivered"}); len(recs) != 1 || recs[0].attrs["attempt"] != "2" {
		t.Errorf("want later@remote.test delivered at attempt 2, got %v", recs)
	}
}

// `sluice queue hold` and `queue delete` act on the spool files while a
// delivery may be in flight: a hold put on during an attempt survives the
// attempt's own state write, and a message deleted during its attempt
// leaves no state file behind.
func TestQueueChangesDuringAttempt(t *testing.T) {
	for _, tc := range []string{"hold", "delete"} {
		t.Run(tc, func(t *testing.T) {
			h := newHarness(t)
			reached, release := h.remote().stallNextData(t)
			h.start(nil)

			id := h.send("alice@sender.test", []string{"bob@remote.test"}, "changed in flight")
			reached()
			switch tc {
			case "hold":
				st := h.state(id)
				st.Held, st.HeldWhy = true, "operator: checking a complaint"
				if err := h.spool.SaveState(id, st); err != nil {
					t.Fatal(err)
				}
			case "delete":
				if err := h.spool.Remove(id); err != nil {
					t.Fatal(err)
				}
			}
			release() // the server answers 451
			eventually(t, "the attempt's outcome", func() bool { return len(h.results.of(id, "bob@remote.test")) == 1 })
			h.stop() // the attempt's state write is done

			if tc == "delete" {
				h.waitEmpty()
				return
			}
			st := h.state(id)
			if !st.Held || st.HeldWhy != "operator: checking a complaint" {
				t.Errorf("state after the attempt: held=%v why=%q, want the hold kept", st.Held, st.HeldWhy)
			}
			if st.Attempts != 1 || st.Rcpt("bob@remote.test").Status != "pending" {
				t.Errorf("state %+v, want the attempt recorded and bob pending", st)
			}
			if _, err := os.Stat(filepath.Join(h.dir, "spool", "queue", id)); err != nil {
				t.Errorf("held message: %v", err)
			}
		})
	}
}

// Kick (`sluice queue retry`, `release`) rereads every message's state
// while workers deliver: a state it read just before an attempt saved a
// newer one must not schedule that message again, so each deferred
// message is tried exactly once before its next retry, an hour away.
func TestKickDuringDeliveryDoesNotRepeatAttempts(t *testing.T) {
	h := newHarness(t)
	alwaysDefer(h.remote())
	rl := h.start(func(c *relay.Config) { c.Retry = []time.Duration{time.Hour}; c.MaxAge = 24 * time.Hour })

	stop := make(chan struct{})
	kicked := make(chan struct{})
	go func() {
		defer close(kicked)
		for {
			select {
			case <-stop:
				return
			default:
				rl.Kick()
			}
		}
	}()
	const n = 60
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, h.send("alice@sender.test", []string{fmt.Sprintf("r%d@remote.test", i)}, "kicked"))
	}
	for _, id := range ids {
		eventually(t, "a first attempt of "+id, func() bool { return h.state(id).Attempts >= 1 })
	}
	close(stop)
	<-kicked
	rl.Kick() // one more, after every state is saved: changes nothing
	h.stop()
	for i, id := range ids {
		if o := h.results.of(id, fmt.Sprintf("r%d@remote.test", i)); len(o) != 1 {
			t.Errorf("%s: %d attempts (%v), want 1: a stale state scheduled it again", id, len(o), o)
		}
	}
}

// classifier is how cmd/sluice adapts relay/explain for the relay.
func classifier(reply string) (string, string, string) {
	e := explain.Explain(reply)
	return string(e.Category), e.Meaning, e.Action
}

// Bounces explain each reply with the classifier: its category, what it
// means and what to do, for a permanent refusal and for an expired
// recipient (whose explanation says Sluice gave up); the delivery log and
// OnResult carry the same category.
func TestBounceExplainsReplies(t *testing.T) {
	h := newHarness(t)
	remote, sender := h.remoteAndSender()
	remote.script(nil, func(_ int, rc string) error {
		if rc == "full@remote.test" {
			return smtpErr(552, "5.2.2 mailbox full")
		}
		return smtpErr(451, "4.7.1 Greylisted, please try again in 300 seconds")
	}, nil)
	h.explain = classifier
	h.start(func(c *relay.Config) { c.MaxAge = 300 * time.Millisecond })

	id := h.send("alice@sender.test", []string{"full@remote.test", "grey@remote.test"}, "explained")
	h.waitEmpty()
	var d *dsnReport
	for _, m := range dsnsFor(sender, "alice@sender.test") {
		if r := parseDSN(t, m.Data); r.recipient("grey@remote.test") != nil {
			d = r
		}
	}
	if d == nil {
		t.Fatal("no DSN for the expired recipient")
	}
	text := words(d.human)
	for _, want := range []string{
		"kind: rate-limited", "gave up", "meaning: " + words(explain.Explain(h.gaveUpSummary("451 4.7.1 Greylisted, please try again in 300 seconds")).Meaning),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("expiry DSN text lacks %q:\n%s", want, d.human)
		}
	}
	for _, r := range h.results.forID(id) {
		if r.rcpt == "full@remote.test" && r.category != "mailbox-full" {
			t.Errorf("full@remote.test: category %q, want mailbox-full", r.category)
		}
	}
	if recs := h.logs.find("delivery", map[string]string{"id": id, "rcpt": "grey@remote.test", "result": "failed"}); len(recs) != 1 || recs[0].attrs["category"] != "rate-limited" {
		t.Errorf("expiry log %v, want category rate-limited", recs)
	}
	for _, m := range dsnsFor(sender, "alice@sender.test") {
		r := parseDSN(t, m.Data)
		if r.recipient("full@remote.test") == nil {
			continue
		}
		e := explain.Explain("552 5.2.2 mailbox full")
		for _, want := range []string{"kind: mailbox-full", "meaning: " + words(e.Meaning), "to do: " + words(e.Action)} {
			if !strings.Contains(words(r.human), want) {
				t.Errorf("failure DSN text lacks %q:\n%s", want, r.human)
			}
		}
	}
}

// gaveUpSummary is the relay's summary of an expired recipient with the
// harness's max_age (300ms in TestBounceExplainsReplies).
func (h *harness) gaveUpSummary(last string) string {
	return "gave up after 300ms of retries; last reply: " + last
}

// Stopping Sluice in the middle of an attempt (SIGTERM lets the current
// transaction finish) keeps what is final: the recipient refused with a
// 5xx gets its bounce, and the recipient whose delivery was cut short is
// tried again as soon as Sluice runs again, not a retry interval later.
func TestShutdownDuringAttempt(t *testing.T) {
	h := newHarness(t)
	h.receivers(rx("mx.afail.test", "127.0.0.2"), rx("mx.bstall.test", "127.0.0.4"), rx("mx.sender.test", "127.0.0.3"))
	h.mx("afail.test", 10, "mx.afail.test")
	h.mx("bstall.test", 10, "mx.bstall.test")
	h.mx("sender.test", 10, "mx.sender.test")
	h.rx["mx.afail.test"].rejectRcpts(550, "5.1.1 no such user", "x@afail.test")
	reached, release := h.rx["mx.bstall.test"].stallNextData(t)
	h.start(func(c *relay.Config) { c.Retry = []time.Duration{time.Hour} })

	id := h.send("alice@sender.test", []string{"x@afail.test", "y@bstall.test"}, "cut short")
	reached()
	h.cancel() // SIGTERM
	release()  // the transaction ends (451)
	h.stop()

	if recs := h.logs.find("dsn queued", map[string]string{"for": id}); len(recs) != 1 {
		t.Errorf("DSNs queued for the refused recipient: %v, want 1", recs)
	}
	st := h.state(id)
	if rs := st.Rcpt("x@afail.test"); rs.Status != "failed" {
		t.Errorf("x@afail.test: %+v, want failed", rs)
	}
	if rs := st.Rcpt("y@bstall.test"); rs.Status != "pending" {
		t.Errorf("y@bstall.test: %+v, want pending", rs)
	}
	if wait := time.Until(st.NextTry); wait > time.Minute {
		t.Errorf("next try in %v, want at once after a restart (the retry step is an hour)", wait.Round(time.Second))
	}
}
