package screen

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"
)

// HostResolver answers block-list queries (relay/resolver caches them for
// their TTL).
type HostResolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Links looks the domains and IP addresses linked from text and HTML parts
// up in DNS block lists: domain zones (URIBL/DBL style: example.com.zone)
// and IP zones for IP-literal links (4.3.2.1.zone, and for IPv6 literals
// such as http://[2001:db8::1]/ the reversed nibbles 1.0.0.0...2.zone). Lookups run
// concurrently within a time budget; a list that does not answer in time
// does not refuse mail.
type Links struct {
	DomainZones []string
	IPZones     []string
	Resolver    HostResolver
	Budget      time.Duration
	MaxLookups  int
	Log         *slog.Logger
}

func (l *Links) Name() string { return "links" }

var urlRe = regexp.MustCompile(`(?i)\b(?:https?://|www\.)([^\s/?#"'<>]+)`)

// ExtractLinkHosts returns the distinct host names and IP literals linked
// from the message's text parts (decoded from quoted-printable/base64).
func ExtractLinkHosts(m *Message) []string {
	parts, err := m.Parts()
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range parts {
		if !strings.HasPrefix(p.ContentType, "text/") {
			continue
		}
		for _, sm := range urlRe.FindAllSubmatch(p.Body, 500) {
			auth := string(sm[1])
			// user:pass@host: the host is after the last @.
			if at := strings.LastIndexByte(auth, '@'); at >= 0 {
				auth = auth[at+1:]
			}
			var h string
			if strings.HasPrefix(auth, "[") {
				// An IPv6 literal (RFC 3986 3.2.2), maybe with a port.
				end := strings.IndexByte(auth, ']')
				if end < 0 {
					continue
				}
				ip := net.ParseIP(auth[1:end])
				if ip == nil {
					continue
				}
				h = ip.String()
			} else {
				h = strings.ToLower(strings.Trim(auth, ".-[]"))
				if i := strings.LastIndexByte(h, ':'); i > 0 && strings.Count(h, ":") == 1 {
					h = h[:i] // port
				}
			}
			if strings.HasPrefix(strings.ToLower(string(sm[0])), "www.") {
				h = "www." + h
			}
			if h == "" || seen[h] {
				continue
			}
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

func (l *Links) Check(ctx context.Context, m *Message) *Verdict {
	if len(l.DomainZones)+len(l.IPZones) == 0 || l.Resolver == nil {
		return nil
	}
	hosts := ExtractLinkHosts(m)
	if len(hosts) == 0 {
		return nil
	}
	type query struct{ host, name, zone string }
	var qs, hostQs []query
	seenName := map[string]bool{}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			rev := reversedIP(ip)
			for _, z := range l.IPZones {
				qs = append(qs, query{h, rev + "." + z, z})
			}
			continue
		}
		// Look up the registered domain (click.listed.test is listed.test's)
		// and, when different, the host itself; each name once. Registered
		// domains go first, so that the lookup cap never skips a domain
		// because of many links to another one.
		for i, d := range lookupNames(h) {
			if seenName[d] {
				continue
			}
			seenName[d] = true
			for _, z := range l.DomainZones {
				if i == 0 {
					qs = append(qs, query{h, d + "." + z, z})
				} else {
					hostQs = append(hostQs, query{h, d + "." + z, z})
				}
			}
		}
	}
	qs = append(qs, hostQs...)
	if l.MaxLookups > 0 && len(qs) > l.MaxLookups {
		qs = qs[:l.MaxLookups]
	}
	budget := l.Budget
	if budget <= 0 {
		budget = 1500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var (
		mu  sync.Mutex
		hit *query
		wg  sync.WaitGroup
		sem = make(chan struct{}, 16)
	)
	for i := range qs {
		wg.Add(1)
		go func(q query) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			addrs, err := l.Resolver.LookupIPAddr(ctx, q.name)
			if err != nil {
				return
			}
			for _, a := range addrs {
				// Listed answers are 127.0.0.0/8; anything else is an
				// error code of the list (e.g. 127.255.255.254: query
				// refused), ignored.
				if v4 := a.IP.To4(); v4 != nil && v4[0] == 127 && !(v4[1] == 255 && v4[2] == 255) {
					mu.Lock()
					if hit == nil {
						qq := q
						hit = &qq
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		}(qs[i])
	}
	wg.Wait()
	if hit == nil {
		return nil
	}
	what := "a link to " + hit.host
	if net.ParseIP(hit.host) != nil {
		what = "a link to the IP address " + hit.host
	}
	return reject("links", 554, [3]int{5, 7, 1}, fmt.Sprintf(
		"the message contains %s, which the block list %s lists; remove the link (a compromised site, or a shortener that points there)", what, hit.zone))
}

func lookupNames(host string) []string {
	host = strings.TrimPrefix(host, "www.")
	reg, err := publicsuffix.EffectiveTLDPlusOne(host)
	if err != nil || reg == host {
		return []string{host}
	}
	return []string{reg, host}
}

// reversedIP is the name of ip in an IP block list: the octets of an IPv4
// address reversed (4.3.2.1), the nibbles of an IPv6 address reversed
// (RFC 5782 2.4: 2001:db8::1 is 1.0.0.0.<...>.8.b.d.0.1.0.0.2).
func reversedIP(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return fmt.Sprintf("%d.%d.%d.%d", v4[3], v4[2], v4[1], v4[0])
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 63)
	v6 := ip.To16()
	for i := len(v6) - 1; i >= 0; i-- {
		b = append(b, hex[v6[i]&0xf], '.', hex[v6[i]>>4], '.')
	}
	return string(b[:len(b)-1])
}
