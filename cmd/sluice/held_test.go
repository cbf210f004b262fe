package main

// Tests of the compromise rule and of held mail through the real binary:
// a burst of first-time recipients over SMTP suspends the login and holds
// its mail; the operator sees why with "sluice user show" and "sluice
// queue held", releases or deletes the held messages with "sluice queue
// release/delete", and gives the login back with "sluice user enable".
// /metrics counts every verdict by its rule.

import (
	"fmt"
	"strings"
	"testing"
)

var (
	// hdShop is the login whose password is "stolen".
	hdShop = testUser{addr: "shop@hd.test", password: "shop-secret-pw-9", grants: []string{"@hd.test"}}
	// hdForm is a login of another domain whose messages other rules refuse.
	hdForm = testUser{addr: "form@hdform.test", password: "form-secret-pw-9", grants: []string{"@hdform.test"}}
)

const hdContact = "abuse@relay.hd.test"

// hdConfig: at most 3 first-time recipients per login and hour (the
// volume signal off), the abuse contact, /metrics, delivery to sink.
func hdConfig(httpAddr string, sink *opsSink) string {
	return fmt.Sprintf("\n[screen]\nnew_recipients_per_hour = 3\nvolume_multiple = 0.0\nabuse_contact = %q\n\n[http]\nlisten = %q\n",
		hdContact, httpAddr) + sink.relayTOML()
}

// hdMessage is an order confirmation from shop@hd.test.
func hdMessage(tag string, rcpts ...string) []byte {
	return crlf("From: Shop <shop@hd.test>\nTo: " + strings.Join(rcpts, ", ") + "\nSubject: hd order " + tag +
		"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\nThank you for your order " + tag + ".\n")
}

// hdHeld parses "sluice queue held": queue ID -> the rule-and-reason column.
func hdHeld(t *testing.T, s *sluiceServer) map[string]string {
	t.Helper()
	r := s.cli("queue", "held")
	if r.exit != 0 || !strings.HasPrefix(r.stdout, "ID") || !strings.Contains(r.stdout, "sluice queue release ID") {
		t.Fatalf("sluice queue held:\n%s", r)
	}
	out := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 6 && idRe.MatchString(f[0]) {
			// ID, date, time, login, recipients, then the reason.
			out[f[0]] = strings.Join(f[5:], " ")
		}
	}
	return out
}

// hdUserShow runs "sluice user show" and returns its "key: value" lines.
func hdUserShow(t *testing.T, s *sluiceServer, login string) map[string]string {
	t.Helper()
	r := s.cli("user", "show", login)
	if r.exit != 0 {
		t.Fatalf("sluice user show %s:\n%s", login, r)
	}
	out := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// hdDelivered waits until the sink has id.
func hdDelivered(t *testing.T, sink *opsSink, id string) {
	t.Helper()
	opsWait(t, opsTimeout, "message "+id+" delivered to the sink", func() (bool, string) {
		byID, _, _ := sink.snapshot()
		return byID[id] == 1, fmt.Sprintf("deliveries: %v", byID)
	})
}

// TestHeldCompromiseAndOperatorCommands drives the whole story through
// the binary: SMTP in, the CLI for the operator, the sink for delivery.
func TestHeldCompromiseAndOperatorCommands(t *testing.T) {
	t.Parallel()
	sink := opsStartSink(t, true)
	httpAddr := freeAddr(t)
	s := startServerWith(t, hdConfig(httpAddr, sink), hdShop, hdForm)
	base := "http://" + httpAddr

	// Two first-time recipients: within the limit, delivered.
	c := screenLogin(t, s, hdShop)
	r := screenTx(t, c, hdShop.addr, []string{"ann@remote.test", "ben@remote.test"}, hdMessage("aaaa", "ann@remote.test", "ben@remote.test"), false)
	ok := r.queueID()
	if ok == "" {
		t.Fatalf("first message: %v, want queued", r)
	}
	hdDelivered(t, sink, ok) // not held (it may be gone from the spool already)

	// Two more strangers make 4 in the hour: the login is suspended and
	// the message accepted but held; the session goes on sending and its
	// next message is held too.
	wantWhy := "suspended for suspected abuse: 4 first-time recipients within an hour (threshold 3)"
	r = screenTx(t, c, hdShop.addr, []string{"cat@list.test", "dan@list.test"}, hdMessage("bbbb", "cat@list.test", "dan@list.test"), false)
	held1 := r.queueID()
	if held1 == "" {
		t.Fatalf("burst message: %v, want 250 (held)", r)
	}
	if h := screenHold(t, s.dataDir, held1); !strings.HasPrefix(h, "compromise: login shop@hd.test is "+wantWhy) || !strings.Contains(h, hdContact) {
		t.Fatalf("spool hold of %s = %q, want the compromise rule, the reason and the contact", held1, h)
	}
	r = screenTx(t, c, hdShop.addr, []string{"eve@list.test"}, hdMessage("cccc", "eve@list.test"), false)
	held2 := r.queueID()
	if held2 == "" || !strings.HasPrefix(screenHold(t, s.dataDir, held2), "compromise: ") {
		t.Fatalf("next message of the suspended session: %v, want 250 held by compromise", r)
	}
	c.cmd("QUIT")
	c.conn.Close()

	// Another login's mail refused by other rules, for the per-rule count.
	if r := screenSend(t, s, hdForm, hdForm.addr, []string{hdForm.addr}, crlf("From: form@hdform.test\nTo: form@hdform.test\nSubject: Contact form\n\nName: x\nEmail: x@visitor.test\n"), false); r.code != 550 {
		t.Fatalf("web-form self-send: %v, want 550", r)
	}
	if r := screenSend(t, s, hdForm, hdForm.addr, []string{"bob@remote.test"}, crlf(screenAttach(hdForm.addr, "setup", `filename="setup.exe"`, "application/octet-stream", []byte("x"))), false); r.code != 552 {
		t.Fatalf("attachment: %v, want 552", r)
	}

	t.Run("metrics-count-per-rule", func(t *testing.T) {
		m := opsScrape(t, base)
		got := m.series("sluice_screen_verdicts_total")
		want := map[string]float64{"action=hold,rule=compromise": 2, "action=reject,rule=webform": 1, "action=reject,rule=attachments": 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("sluice_screen_verdicts_total %v, want %v", got, want)
		}
		if n := m.value("sluice_messages_total", "verdict", "held", "stage", "accepted"); n != 2 {
			t.Errorf("sluice_messages_total{verdict=held} = %v, want 2", n)
		}
	})

	t.Run("user-show-says-why", func(t *testing.T) {
		u := hdUserShow(t, s, hdShop.addr)
		if u["state"] == "enabled" || !strings.HasPrefix(u["reason"], "suspended for suspected abuse: ") || !strings.Contains(u["reason"], "first-time recipients within an hour (threshold 3)") {
			t.Errorf("sluice user show: state %q reason %q, want suspended with the reason", u["state"], u["reason"])
		}
	})

	t.Run("suspended-login-told-whom-to-contact", func(t *testing.T) {
		out := swaks(t, s.submission, "--tls", "PLAIN", hdShop, hdShop.addr, "ann@remote.test", "hd after suspension", "hello")
		if out.exit == 0 || !strings.Contains(out.stdout, "535 5.7.8") || !strings.Contains(out.stdout, "suspended for suspected abuse") || !strings.Contains(out.stdout, hdContact) {
			t.Errorf("swaks as the suspended login, want 535 5.7.8 naming the suspension and %s:\n%s", hdContact, out)
		}
	})

	t.Run("queue-held-lists-rule-and-reason", func(t *testing.T) {
		held := hdHeld(t, s)
		if len(held) != 2 || !strings.HasPrefix(held[held1], "compromise: login shop@hd.test is "+wantWhy) || !strings.HasPrefix(held[held2], "compromise: ") {
			t.Errorf("sluice queue held = %v, want %s and %s with the compromise reason", held, held1, held2)
		}
		if _, listed := held[ok]; listed {
			t.Errorf("the delivered message %s is listed as held", ok)
		}
	})

	t.Run("release-delivers", func(t *testing.T) {
		r := s.cli("queue", "release", held1)
		if r.exit != 0 || !strings.Contains(r.stdout, held1+" released") {
			t.Fatalf("sluice queue release %s:\n%s", held1, r)
		}
		hdDelivered(t, sink, held1)
		if held := hdHeld(t, s); len(held) != 1 || held[held2] == "" {
			t.Errorf("after the release, sluice queue held = %v, want only %s", held, held2)
		}
	})

	t.Run("delete-drops", func(t *testing.T) {
		r := s.cli("queue", "delete", held2)
		if r.exit != 0 || !strings.Contains(r.stdout, held2+" deleted") {
			t.Fatalf("sluice queue delete %s:\n%s", held2, r)
		}
		for _, id := range spoolIDs(t, s.dataDir) {
			if id == held2 {
				t.Errorf("%s is still in the spool after delete", id)
			}
		}
		if held := hdHeld(t, s); len(held) != 0 {
			t.Errorf("after the delete, sluice queue held = %v, want none", held)
		}
		if r := s.cli("queue", "show", held2); r.exit == 0 || !strings.Contains(r.stderr, "no message "+held2) {
			t.Errorf("sluice queue show of the deleted message:\n%s", r)
		}
		if byID, _, _ := sink.snapshot(); byID[held2] != 0 {
			t.Errorf("the deleted message was delivered")
		}
	})

	t.Run("enable-clears-the-suspension", func(t *testing.T) {
		r := s.cli("user", "enable", hdShop.addr)
		if r.exit != 0 || !strings.Contains(r.stdout, "login "+hdShop.addr+" enabled") {
			t.Fatalf("sluice user enable:\n%s", r)
		}
		u := hdUserShow(t, s, hdShop.addr)
		if u["state"] != "enabled" || u["reason"] != "" {
			t.Errorf("after enable: state %q reason %q, want enabled and no reason", u["state"], u["reason"])
		}
		// The login sends again, to a recipient it knows: queued, not held.
		out := swaks(t, s.submission, "--tls", "PLAIN", hdShop, hdShop.addr, "ann@remote.test", "hd after enable", "hello again")
		if out.exit != 0 {
			t.Fatalf("swaks after enable:\n%s", out)
		}
		hdDelivered(t, sink, queueID(t, out.stdout)) // so not held
	})
}
