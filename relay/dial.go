package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sluice/relay/resolver"
)

// conn is a ready SMTP session (greeting, EHLO, TLS and AUTH done) and what
// is known of its security, so that the pool hands it only to messages
// whose policy it satisfies.
type conn struct {
	*smtp.Client
	tls      bool // the session runs over TLS
	verified bool // and the server's certificate verified for the host name

	// For pipelinedTransaction: the connection go-smtp's client runs on,
	// and the reader and writer of the transactions it sends itself.
	raw net.Conn
	rd  *textproto.Reader
	bw  *bufio.Writer
}

// quit ends the session politely, waiting little for the reply, and
// always closes the connection (go-smtp's Quit leaves it open on error).
func (c *conn) quit() {
	c.CommandTimeout = min(c.CommandTimeout, 5*time.Second)
	c.Quit()
	c.Close()
}

// satisfies reports whether c may carry mail for t: under an enforced
// MTA-STS policy only a TLS session whose certificate verified for the MX
// host name (RFC 8461 4.2); elsewhere any session.
func (c *conn) satisfies(t target) bool {
	return !t.enforced() || (c.tls && c.verified)
}

// connect returns a ready session for t, reused from the pool when an idle
// one satisfies t's policy (fresh: always a new one). reused says which.
func (r *Relay) connect(ctx context.Context, t target, fresh bool) (c *conn, key poolKey, reused bool, err error) {
	ips, err := r.addrs(ctx, t.host)
	if err != nil {
		return nil, poolKey{}, false, err
	}
	keys := make([]poolKey, len(ips))
	for i, ip := range ips {
		keys[i] = poolKey{host: t.host, addr: net.JoinHostPort(ip.String(), strconv.Itoa(t.port))}
		if !fresh {
			if c := r.pool.get(keys[i], t); c != nil {
				return c, keys[i], true, nil
			}
		}
	}
	var lastErr error
	for i, ip := range ips {
		addr := keys[i].addr
		c, err := r.dial(ctx, t, ip, addr, true)
		if err != nil && errors.Is(err, errTLSFailed) && !t.enforced() && !t.implicit && r.cfg.Mode != "smarthost" {
			// Opportunistic TLS failed: deliver in clear rather than not
			// at all (RFC 3207 4.1 allows it). MTA-STS enforce forbids it;
			// testing mode only reports (RFC 8461 5).
			if t.policy != nil && t.policy.Mode == "testing" {
				r.log.Warn("mta-sts testing: TLS failed, delivering in clear; an enforced policy would defer this mail",
					"mx", t.host, "addr", addr, "err", err)
			}
			c, err = r.dial(ctx, t, ip, addr, false)
		}
		if err != nil {
			lastErr = err
			continue
		}
		return c, keys[i], false, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("%s has no address", t.host)
	}
	return nil, poolKey{}, false, lastErr
}

func (r *Relay) addrs(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	as, err := r.dns.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("address lookup for %s failed: %s", host, resolver.Cause(err))
	}
	ips := make([]net.IP, 0, len(as))
	for _, a := range as {
		ips = append(ips, a.IP)
	}
	return ips, nil
}

var errTLSFailed = errors.New("TLS negotiation failed")

// dial opens a session for t at addr (ip and the port).
func (r *Relay) dial(ctx context.Context, t target, ip net.IP, addr string, useTLS bool) (*conn, error) {
	d := net.Dialer{Timeout: r.cfg.ConnectTimeout}
	if local := r.localAddr(ip); local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s (%s): %s", t.host, addr, resolver.Cause(err))
	}
	tlsCfg, check := r.tlsConfig(t)
	helo := r.cfg.HELO
	if helo == "" {
		helo = r.cfg.Hostname
	}
	mustTLS := t.enforced() || r.cfg.Mode == "smarthost"
	out := &conn{}
	if t.implicit {
		tc := tls.Client(nc, tlsCfg)
		hctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("%w with %s (%s): %s", errTLSFailed, t.host, addr, resolver.Cause(err))
		}
		nc, out.tls = tc, true
	} else {
		br, op, err := openSession(nc, helo, r.cfg.ConnectTimeout)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("%s (%s) greeting: %s", t.host, addr, resolver.Cause(err))
		}
		switch {
		case op.startTLS && useTLS:
			tc, err := upgrade(nc, br, tlsCfg, r.cfg.ConnectTimeout)
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("%w with %s: %s", errTLSFailed, t.host, resolver.Cause(err))
			}
			nc, out.tls = &replayConn{Conn: tc, pending: []byte("220 " + op.greeting + "\r\n")}, true
		case mustTLS:
			nc.Close()
			return nil, fmt.Errorf("%s does not offer STARTTLS, which its policy requires", t.host)
		default:
			nc = &replayConn{Conn: nc, pending: []byte("220 " + op.greeting + "\r\n"), br: br}
		}
	}
	if out.tls {
		out.verified = check.verified()
		if !out.verified && t.policy != nil && t.policy.Mode == "testing" {
			r.log.Warn("mta-sts testing: certificate not valid for the MX; an enforced policy would defer this mail",
				"mx", t.host, "addr", addr, "err", check.err)
		}
	}
	c := smtp.NewClient(nc)
	c.CommandTimeout = r.cfg.CommandTimeout
	c.SubmissionTimeout = r.cfg.CommandTimeout + 2*time.Minute
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s (%s) EHLO: %s", t.host, addr, resolver.Cause(err))
	}
	if r.cfg.Mode == "smarthost" && r.cfg.SmarthostUsername != "" {
		var a sasl.Client
		if c.SupportsAuth(sasl.Plain) {
			a = sasl.NewPlainClient("", r.cfg.SmarthostUsername, r.cfg.SmarthostPassword)
		} else {
			a = &loginClient{user: r.cfg.SmarthostUsername, pass: r.cfg.SmarthostPassword}
		}
		if err := c.Auth(a); err != nil {
			c.Close()
			_, reply := replyOf(err)
			return nil, fmt.Errorf("smarthost refused our login: %s", reply)
		}
	}
	out.Client = c
	out.raw = nc
	return out, nil
}

// certCheck records whether a handshake verified the server's certificate.
type certCheck struct {
	strict bool  // verification was required (the handshake fails without it)
	ran    bool  // opportunistic verification ran
	err    error // its result
}

func (k *certCheck) verified() bool { return k.strict || (k.ran && k.err == nil) }

// tlsConfig verifies certificates only where a policy says so (MTA-STS
// enforce, or the smarthost); elsewhere TLS is opportunistic (RFC 3207) and
// the certificate is checked without failing the handshake, to report
// testing-mode policies and to know whether the session may be reused for
// an enforced one.
func (r *Relay) tlsConfig(t target) (*tls.Config, *certCheck) {
	cfg := &tls.Config{ServerName: t.host, MinVersion: tls.VersionTLS12}
	check := &certCheck{}
	switch {
	case r.cfg.Mode == "smarthost":
		cfg.InsecureSkipVerify = r.cfg.SmarthostInsecure
		check.strict = !cfg.InsecureSkipVerify
	case t.enforced():
		if r.sts != nil {
			cfg.RootCAs = r.sts.RootCAs
		}
		check.strict = true
	default:
		cfg.InsecureSkipVerify = true
		if r.sts != nil {
			roots := r.sts.RootCAs
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				check.ran, check.err = true, verifyPeer(cs, t.host, roots)
				return nil
			}
		}
	}
	return cfg, check
}

// verifyPeer checks the chain and name as a verifying handshake would.
func verifyPeer(cs tls.ConnectionState, host string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

func (r *Relay) localAddr(remote net.IP) net.IP {
	if remote == nil || remote.IsLoopback() {
		return nil
	}
	v4 := remote.To4() != nil
	for _, ip := range r.cfg.SourceIPs {
		if (ip.To4() != nil) == v4 {
			return ip
		}
	}
	return nil
}

// loginClient is AUTH LOGIN as servers expect it: no initial response, the
// username at the first challenge ("Username:"), the password at the
// second. go-sasl's client sends the username as an initial response and
// accepts only the exact challenge "Password:", which some servers do not
// take.
type loginClient struct {
	user, pass string
	step       int
}

func (l *loginClient) Start() (string, []byte, error) { return sasl.Login, nil, nil }

func (l *loginClient) Next(challenge []byte) ([]byte, error) {
	l.step++
	switch l.step {
	case 1:
		return []byte(l.user), nil
	case 2:
		return []byte(l.pass), nil
	}
	return nil, fmt.Errorf("unexpected AUTH LOGIN challenge %q", challenge)
}
