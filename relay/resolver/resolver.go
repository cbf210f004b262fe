// Package resolver is Sluice's DNS client: it asks one configured server
// (or the system's) with miekg/dns and caches every answer, negative ones
// included, for its TTL. Its Lookup methods have the signatures of
// net.Resolver's, so it serves SPF evaluation, DMARC and DKIM record
// checks, PTR checks and MX lookups alike.
package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver queries Server and caches answers. New sets the defaults; a
// Resolver built as a literal works too (Timeout 3 s, MaxTTL 1 h when
// zero).
type Resolver struct {
	Server  string           // "host:port"
	Timeout time.Duration    // per query
	MaxTTL  time.Duration    // cap on cached TTLs
	now     func() time.Time // nil: time.Now

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	rrs     []dns.RR
	rcode   int
	expires time.Time
}

// New returns a resolver for server; an empty server means the first
// nameserver of /etc/resolv.conf (127.0.0.1:53 if there is none).
func New(server string) *Resolver {
	if server == "" {
		server = "127.0.0.1:53"
		if cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil && len(cfg.Servers) > 0 {
			server = net.JoinHostPort(cfg.Servers[0], cfg.Port)
		}
	}
	return &Resolver{Server: server, Timeout: 3 * time.Second, MaxTTL: time.Hour, now: time.Now, cache: map[cacheKey]cacheEntry{}}
}

// notFound is a name or record that does not exist (NXDOMAIN or no data),
// as net.Resolver says it (IsNotFound).
func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// Query returns the answer records of type qtype for name, from the cache
// when fresh.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	name = dns.Fqdn(strings.ToLower(name))
	key := cacheKey{name, qtype}
	r.mu.Lock()
	if e, ok := r.cache[key]; ok && r.clock().Before(e.expires) {
		r.mu.Unlock()
		if e.rcode == dns.RcodeNameError || len(e.rrs) == 0 {
			return nil, notFound(name)
		}
		return e.rrs, nil
	}
	r.mu.Unlock()

	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	c := &dns.Client{Timeout: timeout}
	in, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	if err != nil {
		return nil, &net.DNSError{Err: Cause(err), Name: name, Server: r.Server, IsTemporary: true, IsTimeout: isTimeout(err)}
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return nil, &net.DNSError{Err: dns.RcodeToString[in.Rcode], Name: name, Server: r.Server, IsTemporary: true}
	}
	maxTTL := r.MaxTTL
	if maxTTL <= 0 {
		maxTTL = time.Hour
	}
	var rrs []dns.RR
	ttl := maxTTL
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
			if t := time.Duration(rr.Header().Ttl) * time.Second; t < ttl {
				ttl = t
			}
		}
	}
	if len(rrs) == 0 {
		ttl = negativeTTL(in, maxTTL)
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) > 100000 {
		r.cache = map[cacheKey]cacheEntry{}
	}
	r.cache[key] = cacheEntry{rrs: rrs, rcode: in.Rcode, expires: r.clock().Add(ttl)}
	r.mu.Unlock()
	if len(rrs) == 0 {
		return nil, notFound(name)
	}
	return rrs, nil
}

func (r *Resolver) clock() time.Time {
	if r.now == nil {
		return time.Now()
	}
	return r.now()
}

// negativeTTL is the SOA minimum of a negative answer (RFC 2308), or 60 s.
func negativeTTL(in *dns.Msg, max time.Duration) time.Duration {
	for _, rr := range in.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			t := time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
			return min(t, max)
		}
	}
	return min(60*time.Second, max)
}

// Cause is what went wrong, in the words net.Resolver uses ("i/o
// timeout", "connection refused"), for a text that already names the host
// or server: a DNS error without the server's address ("SERVFAIL"), a
// network error without Go's operation and socket addresses ("dial tcp
// 192.0.2.1:25: connect: connection refused" is "connection refused"), an
// end of input as the peer closing the connection, a TLS failure in words
// that say what is wrong with the server's certificate or handshake;
// anything else as it is. The relay's DSN reply lines use it as well.
func Cause(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) && de.Err != "" {
		return de.Err
	}
	if why := tlsCause(err); why != "" {
		return why
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "the server closed the connection"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sc *os.SyscallError
	if errors.As(err, &sc) {
		err = sc.Err
	}
	return err.Error()
}

// tlsCause says what a failed TLS handshake means for the server's
// operator; "" when err is no TLS failure.
func tlsCause(err error) string {
	var host x509.HostnameError
	var authority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var op *net.OpError
	switch {
	case errors.As(err, &host):
		return "the server's certificate is not valid for " + host.Host
	case errors.As(err, &authority):
		return "the server's certificate is not signed by a known certificate authority (self-signed or an incomplete chain)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the server's certificate has expired or is not valid yet"
	case errors.As(err, &invalid):
		return "the server's certificate is not valid"
	case errors.As(err, &record):
		return "the server did not answer in TLS"
	case errors.As(err, &op) && op.Op == "remote error":
		// An alert the server sent: "tls: handshake failure", "tls:
		// protocol version not supported"...
		return "the server refused the TLS handshake (" + strings.TrimPrefix(op.Err.Error(), "tls: ") + ")"
	}
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// LookupTXT returns the TXT records of name, each one string.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records of name.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA addresses of host.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var out []net.IPAddr
	var firstErr error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.Query(ctx, host, t)
		if err != nil {
			if !IsNotFound(err) && firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: a.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: a.AAAA})
			}
		}
	}
	if len(out) == 0 {
		if firstErr != nil {
			return nil, firstErr
		}
		return nil, notFound(host)
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	rrs, err := r.Query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// IsNotFound reports whether err says the record does not exist.
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
