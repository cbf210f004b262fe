package submit_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"sluice/dkim"
	"sluice/dkim/dnscheck"
	"sluice/relay/dnstest"
	"sluice/relay/resolver"
	"sluice/submit"
)

// Mail whose own domain's SPF hard-fails the relay is refused at DATA with
// the record to fix, instead of being relayed into a bounce.
func TestPrecheckRefusesSPFHardFailAtDATA(t *testing.T) {
	dns := dnstest.Start(t, "127.0.0.1:0")
	dns.Add(t, `example.test. 300 IN TXT "v=spf1 ip4:198.51.100.1 -all"`)
	ring, _ := dkim.Open(t.TempDir())
	g := startGateway(t, func(s *submit.Server) {
		s.Precheck = &dnscheck.Precheck{Resolver: resolver.New(dns.Addr), Keys: ring, HELO: "mx.sluice.test",
			Egress: []net.IP{net.ParseIP("192.0.2.10")}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	})
	c := g.login(t, "info@example.test")
	r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "spf"))
	if r.code != 550 || r.enhanced != "5.7.1" || !strings.Contains(r.text, "add ip4:192.0.2.10 to the SPF record of example.test") {
		t.Fatalf("got %v", r)
	}
	dns.Remove("example.test", 0)
	dns.Add(t, `example.test. 1 IN TXT "v=spf1 ip4:192.0.2.10 -all"`)
}
