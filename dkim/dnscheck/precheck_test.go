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
	)
	p := precheck(t, srv, ring, "192.0.2.10")
	cases := []struct {
		domain string
		rule   string // "" = accepted
		says   string
	}{
		{"hardfail.test", "spf", "add ip4:192.0.2.10 to the SPF record of hardfail.test"},
		{"ok.test", "", ""},
		{"rejectnokey.test", "dmarc", "DMARC p=reject"},
		{"signed.test", "", ""},
		{"spfaligned.test", "", ""},
		{"nodns.test", "", ""},
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			err := p.CheckSender(context.Background(), c.domain, "info@"+c.domain)
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
		})
	}
	// The signed domain's record withdrawn: the signature can no longer
	// satisfy p=reject.
	srv.Remove(keys[0].Name(), 0)
	p2 := precheck(t, srv, ring, "192.0.2.10") // fresh cache
	if err := p2.CheckSender(context.Background(), "signed.test", "info@signed.test"); err == nil {
		t.Fatal("p=reject with an unpublished key accepted")
	}
	// DNS unreachable: never a refusal.
	srv.Close()
	p3 := precheck(t, srv, ring, "192.0.2.10")
	if err := p3.CheckSender(context.Background(), "hardfail.test", "info@hardfail.test"); err != nil {
		t.Fatalf("DNS down refused mail: %v", err)
	}
}
