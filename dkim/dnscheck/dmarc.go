package dnscheck

import (
	"context"
	"errors"
	"net"
	"sluice/relay/resolver"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// dmarcPolicy is the DMARC record that governs a domain, found by the
// discovery of RFC 7489 6.6.3: _dmarc.<domain>, else _dmarc.<organizational
// domain>.
type dmarcPolicy struct {
	rec    *dmarc.Record
	at     string       // the name it was found at
	policy dmarc.Policy // effective: sp= for a subdomain governed by its organizational domain's record
}

// lookupDMARC finds the record governing domain. It returns nil, nil when
// there is none, and an error only when the resolver failed (the record
// may exist): a failure is never taken for "no record".
func lookupDMARC(ctx context.Context, r Resolver, domain string) (*dmarcPolicy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	names := []string{domain}
	if org := orgDomain(domain); org != domain {
		names = append(names, org)
	}
	for i, d := range names {
		name := "_dmarc." + d
		txts, err := r.LookupTXT(ctx, name)
		if err != nil && !resolver.IsNotFound(err) {
			return nil, err
		}
		for _, t := range txts {
			rec, err := dmarc.Parse(t)
			if err != nil {
				continue // not a DMARC record (RFC 7489 6.6.3: ignored)
			}
			p := &dmarcPolicy{rec: rec, at: name, policy: rec.Policy}
			if i > 0 && rec.SubdomainPolicy != "" {
				p.policy = rec.SubdomainPolicy
			}
			return p, nil
		}
	}
	return nil, nil
}

// alignment is how mail with header From fromDomain would satisfy DMARC
// (RFC 7489 3.1, 4.2): "DKIM" when a signature that verifies has a d=
// domain aligned under adkim, "SPF" when SPF passes for spfDomain and it
// is aligned under aspf, "" when neither.
func (p *dmarcPolicy) alignment(fromDomain string, dkimPass []string, spfDomain string, spfPass bool) string {
	for _, d := range dkimPass {
		if aligned(d, fromDomain, p.rec.DKIMAlignment) {
			return "DKIM"
		}
	}
	if spfPass && aligned(spfDomain, fromDomain, p.rec.SPFAlignment) {
		return "SPF"
	}
	return ""
}

// modes names the alignment modes, for findings: "adkim=s, aspf=r".
func (p *dmarcPolicy) modes() string {
	m := func(a dmarc.AlignmentMode) string {
		if a == dmarc.AlignmentStrict {
			return "s"
		}
		return "r"
	}
	return "adkim=" + m(p.rec.DKIMAlignment) + ", aspf=" + m(p.rec.SPFAlignment)
}

func orgDomain(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}

// aligned applies DMARC identifier alignment (RFC 7489 3.1): strict wants
// the same name, relaxed the same organizational domain.
func aligned(a, b string, mode dmarc.AlignmentMode) bool {
	a, b = strings.ToLower(strings.TrimSuffix(a, ".")), strings.ToLower(strings.TrimSuffix(b, "."))
	if mode == dmarc.AlignmentStrict {
		return a == b
	}
	return orgDomain(a) == orgDomain(b)
}

// dnsFailed reports a lookup that got no usable answer (SERVFAIL,
// timeout, refused): the record may well exist, as opposed to an answer
// that says it does not (resolver.IsNotFound: NXDOMAIN or no data).
func dnsFailed(err error) bool { return err != nil && !resolver.IsNotFound(err) }

// failure is the short reason of a resolver failure, for findings.
func failure(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsTimeout {
			return "timeout"
		}
		if i := strings.LastIndex(de.Err, ": "); i >= 0 {
			return de.Err[i+2:] // "read udp ...: connection refused"
		}
		if de.Err != "" {
			return de.Err
		}
	}
	return "no answer"
}
