package screen

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"sluice/screen/rspamdtest"
)

// rspamdMsg is a well-formed message with body as its text.
func rspamdMsg(subject, body string) *Message {
	return msg("info@example.test", []string{"bob@remote.test"}, "From: Info <info@example.test>\nTo: bob@remote.test\nSubject: "+subject+
		"\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <m1@example.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"+body+"\n")
}

// TestRspamdVerdicts: each Rspamd action, from the real scanner, mapped
// onto a verdict: reject 550 5.7.1, soft reject 451 4.7.1 with the
// scanner's reason, add header and rewrite subject a mark that puts
// X-Spam: Yes and the score in front (or a hold, by config), no action
// nothing.
func TestRspamdVerdicts(t *testing.T) {
	url := rspamdtest.Start(t)
	cases := []struct {
		name    string
		hold    bool // AddHeader = "hold"
		m       *Message
		action  Action // Accept: no verdict
		code    int
		enh     [3]int
		mention string
		headers string
	}{
		{name: "reject", m: rspamdMsg("t", rspamdtest.GTUBEReject), action: Reject, code: 550, enh: [3]int{5, 7, 1}, mention: "judged this message as spam"},
		{name: "soft reject", m: rspamdMsg(rspamdtest.SoftRejectSubject, "hello"), action: Defer, code: 451, enh: [3]int{4, 7, 1}, mention: rspamdtest.SoftRejectReason},
		{name: "add header", m: rspamdMsg("t", rspamdtest.GTUBEAddHeader), action: Mark, code: 250, mention: "probable spam (score 6.0", headers: "X-Spam: Yes\r\nX-Spam-Score: 6.00\r\n"},
		{name: "rewrite subject", m: rspamdMsg("t", rspamdtest.GTUBERewriteSubject), action: Mark, code: 250, mention: "probable spam", headers: "X-Spam: Yes\r\n"},
		{name: "add header held by config", hold: true, m: rspamdMsg("t", rspamdtest.GTUBEAddHeader), action: Hold, code: 250, enh: [3]int{2, 0, 0}, mention: "held for review"},
		{name: "clean", m: rspamdMsg("Meeting tomorrow", "Hi Bob,\n\nshall we meet at ten tomorrow?\n\nRegards,\nInfo"), action: Accept},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Rspamd{URL: url, Budget: 10 * time.Second, Log: quiet}
			if c.hold {
				r.AddHeader = "hold"
			}
			v := r.Check(context.Background(), c.m)
			if c.action == Accept {
				if v != nil {
					t.Fatalf("verdict %+v", v)
				}
				return
			}
			if v == nil || v.Action != c.action || v.Code != c.code || !strings.Contains(v.Message, c.mention) || c.action != Mark && v.Enhanced != c.enh {
				t.Fatalf("got %+v, want %v %d %v mentioning %q", v, c.action, c.code, c.enh, c.mention)
			}
			if !strings.HasPrefix(string(v.Headers), c.headers) || (c.headers == "") != (len(v.Headers) == 0) {
				t.Fatalf("headers %q, want %q", v.Headers, c.headers)
			}
		})
	}
	// Through the pipeline as submit calls it: the mark's fields come
	// back to be put in front of the message; a message held by another
	// rule keeps them for its release.
	t.Run("pipeline", func(t *testing.T) {
		var counted []string
		p := &Pipeline{Log: quiet, Rules: []Rule{Headers{}, &Rspamd{URL: url, Budget: 10 * time.Second, Log: quiet}},
			OnVerdict: func(rule string, a Action) { counted = append(counted, rule+"/"+a.String()) }}
		m := rspamdMsg("t", rspamdtest.GTUBEAddHeader)
		hold, hdrs, err := p.ScreenMessageHeaders(context.Background(), m.Login, "mx.sluice.test", m.EnvelopeFrom, m.Rcpts, m.Raw, false)
		if err != nil || hold != "" || !strings.HasPrefix(string(hdrs), "X-Spam: Yes\r\nX-Spam-Score: ") || !strings.HasSuffix(string(hdrs), "\r\n") {
			t.Fatalf("hold %q, headers %q, err %v", hold, hdrs, err)
		}
		if strings.Join(counted, ",") != "rspamd/mark" {
			t.Fatalf("counted %v, want rspamd/mark", counted)
		}
		// An override makes the same verdict a hold, without the fields.
		p.Overrides = map[string]ActionOverrides{"example.test": {"rspamd": "hold"}}
		hold, hdrs, err = p.ScreenMessageHeaders(context.Background(), m.Login, "mx.sluice.test", m.EnvelopeFrom, m.Rcpts, m.Raw, false)
		if err != nil || !strings.HasPrefix(hold, "rspamd: ") || !strings.Contains(hold, "held for review") || len(hdrs) != 0 {
			t.Fatalf("override hold: hold %q, headers %q, err %v", hold, hdrs, err)
		}
		p.Overrides = map[string]ActionOverrides{"example.test": {"rspamd": "reject"}}
		_, _, err = p.ScreenMessageHeaders(context.Background(), m.Login, "mx.sluice.test", m.EnvelopeFrom, m.Rcpts, m.Raw, false)
		if v, ok := err.(*Verdict); !ok || v.Code != 550 || v.Enhanced != [3]int{5, 7, 1} || !strings.Contains(v.Message, "probable spam") ||
			!strings.Contains(v.Message, "remove what triggers it") {
			// The sender is told what to change, as by Rspamd's own reject.
			t.Fatalf("override reject: %v", err)
		}
	})
}

func TestRspamdDownFallback(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	m := msg("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\n\nx\n")
	if v := (&Rspamd{URL: url, Budget: time.Second, Log: quiet}).Check(context.Background(), m); v != nil {
		t.Fatalf("fallback accept: %+v", v)
	}
	v := (&Rspamd{URL: url, Budget: time.Second, Fallback: "defer", Log: quiet}).Check(context.Background(), m)
	if v == nil || v.Code != 451 || v.Enhanced != [3]int{4, 3, 0} {
		t.Fatalf("fallback defer: %+v", v)
	}
}
