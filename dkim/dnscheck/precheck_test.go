package dnscheck

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"sluice/dkim"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
)

func precheck(t *testing.T, srv *dnstest.Server, ring *dkim.Keyring, egress string) *Precheck {
	r := resolver.New(srv.Addr)
	r.Timeout = 500 * time.Millisecond
	p := &Precheck{Resolver: r, Keys: ring, HELO: "mail.relay.test", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if egress != "" {
		p.Egress = []net.IP{net.ParseIP(egress)}
	}
	return p
}

func TestPrecheck(t *testing.T) {
	srv := dnstest.Start(t, "127.0.0.1:0")
	ring, _ := dkim.Open(t.TempDir())
	keys, err := ring.Generate("signed.test", "s1", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	keys2, err := ring.Generate("strict.test", "s1", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	keys3, err := ring.Generate("wrongk.test", "s1", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(t,
		`hardfail.test. 300 IN TXT "v=spf1 ip4:198.51.100.1 -all"`,
		`ok.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
		`rejectnokey.test. 300 IN TXT "v=spf1 ip4:198.51.100.1 ~all"`,
		`_dmarc.rejectnokey.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`signed.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.signed.test. 300 IN TXT "v=DMARC1; p=reject"`,
		keys[0].Name()+`. 300 IN TXT "`+keys[0].TXT()+`"`,
		`spfaligned.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
		`_dmarc.spfaligned.test. 300 IN TXT "v=DMARC1; p=reject"`,
		// Subdomains without their own _dmarc record: the organizational
		// domain's record governs them, its sp= first.
		`shop.rejectnokey.test. 300 IN TXT "v=spf1 ~all"`,
		`sub.spnone.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.spnone.test. 300 IN TXT "v=DMARC1; p=reject; sp=none"`,
		`shop.signed.test. 300 IN TXT "v=spf1 ~all"`,
		`shop.strict.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.strict.test. 300 IN TXT "v=DMARC1; p=reject; adkim=s"`,
		keys2[0].Name()+`. 300 IN TXT "`+keys2[0].TXT()+`"`,
		// SPF passes for the envelope domain, which DMARC aligns only
		// relaxed.
		`bounce.relaxed.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
		`relaxed.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.relaxed.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`bounce.strictspf.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
		`strictspf.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.strictspf.test. 300 IN TXT "v=DMARC1; p=reject; aspf=s"`,
		// The key's own p= under the wrong k=: verifiers fail it, as
		// `dns check` says.
		`wrongk.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.wrongk.test. 300 IN TXT "v=DMARC1; p=reject"`,
		keys3[0].Name()+`. 300 IN TXT "`+strings.Replace(keys3[0].TXT(), "k=ed25519", "k=rsa", 1)+`"`,
	)
	p := precheck(t, srv, ring, "192.0.2.10")
	cases := []struct {
		domain   string
		env      string // envelope sender; default info@domain
		fallback string
		rule     string // "" = accepted
		says     string
	}{
		{domain: "hardfail.test", rule: "spf", says: "add ip4:192.0.2.10 to the SPF record of hardfail.test"},
		{domain: "ok.test"},
		{domain: "rejectnokey.test", rule: "dmarc", says: "DMARC p=reject"},
		{domain: "signed.test"},
		{domain: "spfaligned.test"},
		{domain: "nodns.test"},
		{domain: "shop.rejectnokey.test", rule: "dmarc", says: "shop.rejectnokey.test falls under the DMARC record at _dmarc.rejectnokey.test"},
		{domain: "sub.spnone.test"},
		// The fallback domain's signature aligns relaxed with a domain of
		// the same organization, not strict.
		{domain: "shop.signed.test", fallback: "signed.test"},
		{domain: "shop.strict.test", fallback: "strict.test", rule: "dmarc", says: "DMARC record at _dmarc.strict.test"},
		{domain: "relaxed.test", env: "info@bounce.relaxed.test"},
		{domain: "strictspf.test", env: "info@bounce.strictspf.test", rule: "dmarc", says: "DMARC p=reject"},
		{domain: "wrongk.test", rule: "dmarc", says: "publish the DKIM record " + keys3[0].Name()},
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			env := c.env
			if env == "" {
				env = "info@" + c.domain
			}
			p.Fallback = c.fallback
			err := p.CheckSender(context.Background(), c.domain, env)
			if c.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			r, ok := err.(*Refusal)
			if !ok || r.Rule != c.rule || !strings.Contains(r.Message, c.says) {
				t.Fatalf("got %v, want %s refusal saying %q", err, c.rule, c.says)
			}
			if code, enh, _ := r.SMTPReply(); code != 550 || enh != [3]int{5, 7, 1} {
				t.Fatalf("reply %d %v", code, enh)
			}
			// The sender (a site owner) cannot run Sluice's commands:
			// the sentence names the record of their domain to change,
			// or whom to ask.
			if strings.Contains(r.Message, "sluice ") || !strings.Contains(r.Message, "record") || !strings.Contains(r.Message, "provider") {
				t.Fatalf("refusal does not tell the sender what to change: %q", r.Message)
			}
		})
	}
	// The signed domain's record withdrawn: the signature can no longer
	// satisfy p=reject.
	srv.Remove(keys[0].Name(), 0)
	p2 := precheck(t, srv, ring, "192.0.2.10") // fresh cache
	if err := p2.CheckSender(context.Background(), "signed.test", "info@signed.test"); err == nil {
		t.Fatal("p=reject with an unpublished key accepted")
	}
	p.Fallback = ""
	// DNS unreachable: never a refusal.
	srv.Close()
	p3 := precheck(t, srv, ring, "192.0.2.10")
	if err := p3.CheckSender(context.Background(), "hardfail.test", "info@hardfail.test"); err != nil {
		t.Fatalf("DNS down refused mail: %v", err)
	}
}

// TestPrecheckResolverFailureNeverRefuses: a SERVFAIL for the DMARC or the
// DKIM record means the precheck cannot tell, so the mail goes through.
func TestPrecheckResolverFailureNeverRefuses(t *testing.T) {
	srv := dnstest.Start(t, "127.0.0.1:0")
	ring, _ := dkim.Open(t.TempDir())
	keys, err := ring.Generate("signed.test", "s1", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(t,
		`rejectnokey.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.rejectnokey.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`signed.test. 300 IN TXT "v=spf1 ~all"`,
		`_dmarc.signed.test. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	for _, c := range []struct{ domain, fail string }{
		{"rejectnokey.test", "_dmarc.rejectnokey.test"},
		{"signed.test", keys[0].Name()},
	} {
		t.Run(c.fail, func(t *testing.T) {
			// Without the failure, the mail is refused.
			if err := precheck(t, srv, ring, "192.0.2.10").CheckSender(context.Background(), c.domain, "info@"+c.domain); err == nil {
				t.Fatal("not refused with every record answered")
			}
			f := startFailing(t, srv, c.fail)
			p := &Precheck{Resolver: resolver.New(f.Addr), Keys: ring, HELO: "mail.relay.test", Egress: []net.IP{net.ParseIP("192.0.2.10")},
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if err := p.CheckSender(context.Background(), c.domain, "info@"+c.domain); err != nil {
				t.Fatalf("SERVFAIL for %s refused mail: %v", c.fail, err)
			}
		})
	}
}
