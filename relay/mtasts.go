package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"sluice/relay/resolver"
)

// Policy is a domain's MTA-STS policy (RFC 8461 3.2).
type Policy struct {
	ID      string
	Mode    string // "enforce", "testing" or "none"
	MX      []string
	MaxAge  time.Duration
	fetched time.Time
}

// Matches reports whether host is allowed by the policy's mx patterns
// ("*.example.com" matches exactly one leftmost label).
func (p *Policy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		pat = strings.ToLower(pat)
		if strings.HasPrefix(pat, "*.") {
			if i := strings.IndexByte(host, '.'); i > 0 && host[i+1:] == pat[2:] {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// MTASTS fetches and caches policies over HTTPS.
type MTASTS struct {
	DNS     MXResolver
	RootCAs *x509.CertPool // nil: the system's
	// PolicyAddr, when set, is where every policy host is reached
	// ("127.0.0.1:8443" in tests); the certificate must still be valid
	// for mta-sts.DOMAIN.
	PolicyAddr string

	mu     sync.Mutex
	cache  map[string]*Policy
	failed map[string]fetchFailure
	http   *http.Client
}

// fetchFailure is a policy fetch that failed, remembered so that the
// messages that follow do not each try again (RFC 8461 3.3 lets a sender
// limit how often it fetches).
type fetchFailure struct {
	id  string // of the TXT record at the time
	at  time.Time
	err error
}

// refetchAfter is how long a failed fetch is remembered for the same TXT id.
const refetchAfter = 5 * time.Minute

// NewMTASTS returns a policy fetcher.
func NewMTASTS(dns MXResolver, roots *x509.CertPool, policyAddr string) *MTASTS {
	m := &MTASTS{DNS: dns, RootCAs: roots, PolicyAddr: policyAddr, cache: map[string]*Policy{}, failed: map[string]fetchFailure{}}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	m.http = &http.Client{
		Timeout: 30 * time.Second,
		// RFC 8461 3.3: no redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if m.PolicyAddr != "" {
					addr = m.PolicyAddr
				}
				return dialer.DialContext(ctx, network, addr)
			},
		},
	}
	return m
}

// Get returns the domain's policy, or nil when it publishes none. A cached
// policy is used until its max_age, or until the TXT id changes. A fetch
// that failed is not repeated for refetchAfter unless the id changes: a
// domain whose policy host is down costs one HTTPS attempt, not one per
// message.
func (m *MTASTS) Get(ctx context.Context, domain string) (*Policy, error) {
	txts, err := m.DNS.LookupTXT(ctx, "_mta-sts."+domain)
	id := ""
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			for _, part := range strings.Split(t, ";") {
				if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && k == "id" {
					id = v
				}
			}
		}
	}
	m.mu.Lock()
	cached, failed := m.cache[domain], m.failed[domain]
	m.mu.Unlock()
	// A cached policy still applies until it expires (RFC 8461 5.1), when
	// the record is gone (so that an attacker cannot strip it) and when a
	// new one cannot be fetched.
	valid := cached != nil && time.Since(cached.fetched) < cached.MaxAge
	switch {
	case id == "" && valid:
		return cached, nil
	case id == "" && err != nil && !resolver.IsNotFound(err):
		return nil, err
	case id == "":
		return nil, nil
	case valid && cached.ID == id:
		return cached, nil
	case failed.id == id && time.Since(failed.at) < refetchAfter:
		if valid {
			return cached, nil
		}
		return nil, failed.err
	}
	p, ferr := m.fetch(ctx, domain)
	if ferr != nil {
		if ctx.Err() == nil { // a shutdown is no verdict on the policy host
			m.mu.Lock()
			m.failed[domain] = fetchFailure{id: id, at: time.Now(), err: ferr}
			m.mu.Unlock()
		}
		if valid {
			return cached, nil
		}
		// A policy that cannot be fetched is treated as none (RFC 8461 5).
		return nil, ferr
	}
	p.ID = id
	m.mu.Lock()
	m.cache[domain] = p
	delete(m.failed, domain)
	m.mu.Unlock()
	return p, nil
}

func (m *MTASTS) fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mta-sts policy of %s: %w", domain, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mta-sts policy of %s: HTTP %d", domain, resp.StatusCode)
	}
	return parsePolicy(io.LimitReader(resp.Body, 64<<10))
}

func parsePolicy(r io.Reader) (*Policy, error) {
	p := &Policy{fetched: time.Now()}
	sc := bufio.NewScanner(r)
	version := ""
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "version":
			version = v
		case "mode":
			p.Mode = v
		case "mx":
			p.MX = append(p.MX, v)
		case "max_age":
			n, err := strconv.Atoi(v)
			if err == nil {
				p.MaxAge = time.Duration(min(n, 31557600)) * time.Second
			}
		}
	}
	if version != "STSv1" || (p.Mode != "enforce" && p.Mode != "testing" && p.Mode != "none") {
		return nil, fmt.Errorf("mta-sts: invalid policy (version %q, mode %q)", version, p.Mode)
	}
	if p.MaxAge == 0 {
		p.MaxAge = 24 * time.Hour
	}
	return p, nil
}
