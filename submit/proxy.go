package submit

import (
	"errors"
	"net"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyListener accepts PROXY protocol v1/v2 headers from trusted networks
// (the address behind a load balancer becomes the client's). Connections
// from anywhere else are plain SMTP at once (no wait for a header that
// will not come, since the server speaks first): a PROXY line from them is
// an unknown command (500 5.5.2), so nobody may claim another address.
func proxyListener(l net.Listener, trusted []*net.IPNet) net.Listener {
	return &proxyproto.Listener{
		Listener:          l,
		ReadHeaderTimeout: 5 * time.Second,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			ip := net.ParseIP(remoteIP(o.Upstream))
			for _, n := range trusted {
				if ip != nil && n.Contains(ip) {
					return proxyproto.USE, nil
				}
			}
			return proxyproto.SKIP, nil
		},
	}
}

// proxyError reports a PROXY header that was refused or broken (a zero
// read surfaces it without consuming data).
func proxyError(c net.Conn) error {
	pc, ok := c.(*proxyproto.Conn)
	if !ok {
		return nil
	}
	if _, err := pc.Read(nil); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // nothing sent yet: a plain client waiting for our greeting
		}
		return err
	}
	return nil
}
