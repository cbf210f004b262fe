package relay_test

import (
	"crypto/tls"
	"io"
	"net"
	"testing"

	"sluice/relay/resolver"
)

// A failed TLS handshake with a receiving server reads, in a bounce, as
// what is wrong with that server's certificate or TLS (resolver.Cause),
// not as Go's error text: each case is a real handshake on loopback.
func TestTLSFailureCause(t *testing.T) {
	ca := newTestCA(t)
	valid := ca.leaf(t, "mx.remote.test")
	for _, tc := range []struct {
		name   string
		server *tls.Config // nil: a server that answers in plain text
		client *tls.Config
		want   string
	}{
		{"wrong name", &tls.Config{Certificates: []tls.Certificate{valid}},
			&tls.Config{ServerName: "other.remote.test", RootCAs: ca.pool},
			"the server's certificate is not valid for other.remote.test"},
		{"unknown authority", &tls.Config{Certificates: []tls.Certificate{selfSigned(t, "mx.remote.test")}},
			&tls.Config{ServerName: "mx.remote.test", RootCAs: ca.pool},
			"the server's certificate is not signed by a known certificate authority (self-signed or an incomplete chain)"},
		{"expired", &tls.Config{Certificates: []tls.Certificate{ca.expiredLeaf(t, "mx.remote.test")}},
			&tls.Config{ServerName: "mx.remote.test", RootCAs: ca.pool},
			"the server's certificate has expired or is not valid yet"},
		{"alert", &tls.Config{Certificates: []tls.Certificate{valid}, MinVersion: tls.VersionTLS13},
			&tls.Config{ServerName: "mx.remote.test", RootCAs: ca.pool, MaxVersion: tls.VersionTLS12},
			"the server refused the TLS handshake (protocol version not supported)"},
		{"no TLS", nil, &tls.Config{ServerName: "mx.remote.test", RootCAs: ca.pool},
			"the server did not answer in TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if tc.server == nil {
					c.Write([]byte("220 mx.remote.test ESMTP\r\n"))
					io.Copy(io.Discard, c)
					return
				}
				tls.Server(c, tc.server).Handshake()
			}()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = tls.Client(c, tc.client).Handshake()
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			if got := resolver.Cause(err); got != tc.want {
				t.Errorf("Cause(%v) = %q, want %q", err, got, tc.want)
			}
		})
	}
}
