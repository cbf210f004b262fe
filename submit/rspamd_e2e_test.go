package submit_test

// End-to-end tests of the Rspamd rule in the in-process gateway: a real
// rspamd (screen/rspamdtest) scans what clients send through real SMTP
// (STARTTLS, AUTH PLAIN, DATA), and the outcome is judged by the reply and
// by the spool file, the way an operator would (`sluice queue show`,
// `sluice queue held`). The gateway signs with a real DKIM keyring whose
// records a loopback DNS server (relay/dnstest) publishes, and the spooled
// bytes are verified with go-msgauth as a receiver would.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"sluice/dkim"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
	"sluice/screen"
	"sluice/screen/rspamdtest"
	"sluice/submit"
)

// rsPipeline is the default screen with the Rspamd rule last, as
// cmd/sluice's newPipeline appends it for [screen.rspamd] url. Fallback is
// "defer" so that a scanner that does not answer shows as 451 4.3.0
// instead of passing a message unscanned (which would look like a clean
// verdict).
func rsPipeline(url, addHeader string) *screen.Pipeline {
	p := scrPipeline(scrSettings{})
	p.Rules = append(p.Rules, &screen.Rspamd{URL: url, Budget: 15 * time.Second, Fallback: "defer", AddHeader: addHeader,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return p
}

// rsSigner is what cmd/sluice's runtimeParts.Sign does: the keyring signs
// for the From domain, no fallback domain.
type rsSigner struct{ ring *dkim.Keyring }

func (s rsSigner) Sign(fromDomain string, parts ...[]byte) ([]byte, string, error) {
	fields, res, err := s.ring.Sign(fromDomain, "", parts...)
	return fields, res.String(), err
}

// rsWithDKIM gives the gateway a keyring with an RSA and an Ed25519 key for
// example.test and publishes their records on a loopback DNS server; it
// returns the TXT lookup a receiver's verifier would use.
func rsWithDKIM(t *testing.T) (gatewayOption, func(string) ([]string, error)) {
	t.Helper()
	ring, err := dkim.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ring.Generate("example.test", "rs2026", "both")
	if err != nil {
		t.Fatal(err)
	}
	d := dnstest.Start(t, "127.0.0.1:0")
	for _, k := range keys {
		d.Add(t, k.ZoneLine())
	}
	res := resolver.New(d.Addr)
	lookup := func(name string) ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return res.LookupTXT(ctx, name)
	}
	return func(s *submit.Server) { s.Signer = rsSigner{ring} }, lookup
}

// rsMessage is a well-formed message (Date and Message-ID set, so the
// header rule adds nothing) with body as its text.
func rsMessage(subject, body string) string {
	return "From: Info <info@example.test>\nTo: Bob <bob@remote.test>\nSubject: " + subject +
		"\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(strings.ToLower(subject), " ", "-") + "@example.test>" +
		"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body + "\n"
}

// rsMarkRe is the mark Sluice puts directly in front of the client's
// header for Rspamd's "add header" and "rewrite subject".
var rsMarkRe = regexp.MustCompile(`(?:^|\r\n)X-Spam: Yes\r\nX-Spam-Score: ([0-9]+\.[0-9]{2})\r\n$`)

// rsHeaderFields are the names of the fields in the header section of msg.
func rsHeaderFields(msg []byte) []string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var names []string
	for _, line := range strings.Split(string(head), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		names = append(names, strings.ToLower(name))
	}
	return names
}

// rsVerify checks that every DKIM signature on the spooled message verifies
// against the published records, for example.test, and returns them.
func rsVerify(t *testing.T, spooled []byte, lookup func(string) ([]string, error)) []*msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(spooled), &msgauth.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("dkim.Verify: %v", err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d DKIM signatures on the spooled message, want 2 (rsa and ed25519)", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.test" {
			t.Fatalf("signature d=%s does not verify: %v", v.Domain, v.Err)
		}
	}
	return vs
}

// TestRspamdThroughSMTP: each Rspamd action, decided by the real scanner on
// what a client sent, as the client and the operator see it: no action
// queues the message unmarked; "add header" and "rewrite subject" queue it
// with X-Spam: Yes and X-Spam-Score in front of the client's header, inside
// the DKIM signature; add_header = "hold" queues it held; "reject" refuses
// it 550 5.7.1 and "soft reject" defers it 451 4.7.1, with the scanner's
// sentence, and neither is spooled.
func TestRspamdThroughSMTP(t *testing.T) {
	url := rspamdtest.Start(t)
	signing, lookup := rsWithDKIM(t)
	marking := startGateway(t, withScreen(rsPipeline(url, "mark")), signing)
	holding := startGateway(t, withScreen(rsPipeline(url, "hold")))
	const (
		unmarked = iota // the spooled message carries no X-Spam field
		marked          // X-Spam: Yes and X-Spam-Score right before the client's header
	)
	cases := []struct {
		name  string
		g     *gateway
		sc    scrCase
		spam  int
		score string // X-Spam-Score when marked, "" for any
	}{
		{name: "ordinary-message-unmarked", g: marking,
			sc: scrCase{msg: rsMessage("Meeting tomorrow", "Hi Bob,\n\nshall we meet at ten tomorrow in the office?\n\nRegards,\nInfo"),
				code: 250, enh: "2.0.0"}},
		{name: "add-header-marked-and-signed", g: marking, spam: marked, score: "6.00",
			sc: scrCase{msg: rsMessage("Offer", rspamdtest.GTUBEAddHeader), code: 250, enh: "2.0.0"}},
		{name: "rewrite-subject-marked-subject-kept", g: marking, spam: marked,
			sc: scrCase{msg: rsMessage("Newsletter", rspamdtest.GTUBERewriteSubject), code: 250, enh: "2.0.0"}},
		{name: "add-header-held-by-config", g: holding,
			sc: scrCase{msg: rsMessage("Offer held", rspamdtest.GTUBEAddHeader), code: 250, enh: "2.0.0",
				hold: "rspamd: the content scanner rated this message as probable spam (score 6.0"}},
		{name: "reject-refused-550", g: marking,
			sc: scrCase{msg: rsMessage("Spam", rspamdtest.GTUBEReject), code: 550, enh: "5.7.1",
				mention: []string{"the content scanner judged this message as spam", "remove what triggers it"}}},
		{name: "soft-reject-deferred-451", g: marking,
			sc: scrCase{msg: rsMessage("Report "+rspamdtest.SoftRejectSubject, "Monthly figures attached."), code: 451, enh: "4.7.1",
				mention: []string{"the content scanner deferred this message", rspamdtest.SoftRejectReason, "try again later"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.sc.rcpts = []string{"bob@remote.test"}
			msg := scrCRLF(tc.sc.msg)
			c := tc.g.login(t, "info@example.test")
			before := len(queued(tc.g, t))
			r := scrSend(c, "info@example.test", tc.sc.rcpts, msg, false)
			c.cmd("QUIT")
			// The reply, the spool's size for a refusal, the client's bytes
			// at the end of the spooled message, Envelope.Hold.
			scrCheck(t, tc.g, tc.sc, r, msg, before)
			if t.Failed() || r.code != 250 {
				return
			}
			id := scrQueuedRe.FindStringSubmatch(r.text)[1]
			_, spooled, err := tc.g.spool.Read(id)
			if err != nil {
				t.Fatal(err)
			}
			ours := spooled[:len(spooled)-len(msg)] // what Sluice put in front
			m := rsMarkRe.FindSubmatch(ours)
			switch {
			case tc.spam == unmarked && slices.Contains(rsHeaderFields(spooled), "x-spam"):
				t.Fatalf("spool %s carries an X-Spam field:\n%s", id, ours)
			case tc.spam == marked && m == nil:
				t.Fatalf("spool %s: the fields in front of the client's header do not end with X-Spam: Yes and X-Spam-Score:\n%s", id, ours)
			case tc.spam == marked && tc.score != "" && string(m[1]) != tc.score:
				t.Fatalf("spool %s: X-Spam-Score %s, want %s", id, m[1], tc.score)
			}
			if tc.g != marking {
				return
			}
			vs := rsVerify(t, spooled, lookup)
			if tc.spam != marked {
				return
			}
			// Inside the signature: the signed header list names both
			// fields, and a hop that changes the score breaks it.
			for _, v := range vs {
				h := strings.ToLower(":" + strings.Join(v.HeaderKeys, ":") + ":")
				if !strings.Contains(h, ":x-spam:") || !strings.Contains(h, ":x-spam-score:") {
					t.Errorf("the DKIM signature does not cover X-Spam and X-Spam-Score (h=%s): any hop can drop or change them without breaking it, though docs/operator.md says they are signed",
						strings.Join(v.HeaderKeys, ":"))
				}
			}
			forged := bytes.Replace(spooled, []byte("\r\nX-Spam-Score: "+string(m[1])+"\r\n"), []byte("\r\nX-Spam-Score: 0.10\r\n"), 1)
			fs, err := msgauth.VerifyWithOptions(bytes.NewReader(forged), &msgauth.VerifyOptions{LookupTXT: lookup})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range fs {
				if v.Err == nil {
					t.Errorf("a copy with X-Spam-Score changed to 0.10 still verifies (d=%s)", v.Domain)
				}
			}
		})
	}
}
