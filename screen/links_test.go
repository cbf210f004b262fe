package screen

import (
	"context"
	"strings"
	"testing"
	"time"

	"sluice/relay/dnstest"
	"sluice/relay/resolver"
)

// TestIPv6LiteralLinks: a link to an IPv6 literal is looked up in the IP
// block lists in the reversed-nibble form (RFC 5782 2.4), with or without
// a port.
func TestIPv6LiteralLinks(t *testing.T) {
	dns := dnstest.Start(t, "127.0.0.1:0")
	// 2001:db8::1 listed, 2001:db8::2 not.
	dns.Add(t, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ipbl.sluice.test. 60 IN A 127.0.0.2")
	l := &Links{IPZones: []string{"ipbl.sluice.test"}, Resolver: resolver.New(dns.Addr), Budget: 2 * time.Second, Log: quiet}
	cases := []struct {
		name, body, mention string
	}{
		{"listed", "see http://[2001:db8::1]/login\n", "IP address 2001:db8::1"},
		{"listed with port", "see https://[2001:DB8:0:0::1]:8443/login\n", "IP address 2001:db8::1"},
		{"in HTML", "<a href=\"http://[2001:db8::1]/x\">x</a>\n", "IP address 2001:db8::1"},
		{"not listed", "see http://[2001:db8::2]/\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := l.Check(context.Background(), msg("info@example.test", nil, "From: info@example.test\n\n"+c.body))
			if c.mention == "" {
				if v != nil {
					t.Fatalf("refused: %v", v)
				}
				return
			}
			if v == nil || v.Code != 554 || !strings.Contains(v.Message, c.mention) || !strings.Contains(v.Message, "ipbl.sluice.test") {
				t.Fatalf("got %+v, want 554 naming %q and the list", v, c.mention)
			}
		})
	}
	hosts := ExtractLinkHosts(msg("info@example.test", nil, "From: info@example.test\n\nhttp://[2001:db8::1]:80/ http://[::ffff:127.0.0.9]/\n"))
	if strings.Join(hosts, ",") != "2001:db8::1,127.0.0.9" {
		t.Fatalf("hosts %q", hosts)
	}
}
