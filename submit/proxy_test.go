package submit_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"sluice/submit"
)

func cidr(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	return n
}

// Behind a trusted load balancer the PROXY header's address is the
// client's: it shows in the Received field and counts for per-IP limits.
func TestProxyProtocolFromTrustedBalancer(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.ProxyTrusted = []*net.IPNet{cidr("127.0.0.0/8")} })
	c := dialRaw(t, g.plain)
	fmt.Fprintf(c.conn, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 587\r\n")
	if r := c.read(); r.code != 220 {
		t.Fatalf("greeting: %v", r)
	}
	c.cmd("EHLO client.test")
	c.starttls()
	c.cmd("EHLO client.test")
	if r := c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword)); r.code != 235 {
		t.Fatal(r)
	}
	r := c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "proxied"))
	if r.code != 250 {
		t.Fatal(r)
	}
	_, msg, err := g.spool.Read(strings.TrimPrefix(r.text, "2.0.0 Ok: queued as "))
	if err != nil || !strings.Contains(string(msg), "(203.0.113.7)") {
		t.Fatalf("client address not taken from the PROXY header: %v\n%s", err, msg)
	}
}

// From an address that is not trusted, a PROXY header is not honoured:
// it is refused as an unknown command and the session keeps the real
// address.
func TestProxyHeaderFromUntrustedRefused(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.ProxyTrusted = []*net.IPNet{cidr("192.0.2.0/24")} })
	c := dial(t, g.plain, false)
	r := c.cmd("PROXY TCP4 203.0.113.7 127.0.0.1 40000 587")
	if r.code/100 != 5 || r.enhanced != "5.5.2" {
		t.Fatalf("untrusted PROXY header: %v", r)
	}
	c.cmd("EHLO client.test")
	c.starttls()
	c.cmd("EHLO client.test")
	c.cmd("AUTH PLAIN %s", plainIR("", "info@example.test", testPassword))
	r = c.send("info@example.test", []string{"bob@remote.test"}, simpleMessage("info@example.test", "bob@remote.test", "direct"))
	_, msg, err := g.spool.Read(strings.TrimPrefix(r.text, "2.0.0 Ok: queued as "))
	if err != nil || !strings.Contains(string(msg), "(127.0.0.1)") || strings.Contains(string(msg), "203.0.113.7") {
		t.Fatalf("address spoofed or message lost: %v %v\n%s", r, err, msg)
	}
}

// A direct client (no PROXY header) on a PROXY-enabled listener is still
// served.
func TestPlainClientOnProxyListener(t *testing.T) {
	g := startGateway(t, func(s *submit.Server) { s.ProxyTrusted = []*net.IPNet{cidr("192.0.2.0/24")} })
	start := time.Now()
	c := dial(t, g.plain, false)
	t.Logf("greeting after %v", time.Since(start))
	if r := c.cmd("EHLO client.test"); r.code != 250 {
		t.Fatal(r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("greeting took %v: a direct client must not wait for a PROXY header", d)
	}
}
