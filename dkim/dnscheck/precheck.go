package dnscheck

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"sluice/dkim"
)

// Precheck refuses, at submission, mail that receivers would reject for the
// sender domain's own DNS: an SPF record that hard-fails our egress
// addresses, or DMARC p=reject that neither our DKIM signature nor SPF can
// satisfy. Relaying such mail only produces bounces and hurts the relay's
// reputation. DNS answers come from a caching resolver (cached for their
// TTL); a DNS failure never refuses mail.
type Precheck struct {
	Resolver Resolver
	Keys     *dkim.Keyring
	Fallback string   // DKIM fallback signing domain (not aligned, by design)
	Egress   []net.IP // empty: SPF cannot be judged, so it is not
	HELO     string
	Log      *slog.Logger
}

// Refusal is a precheck's verdict, with the reply for the client.
type Refusal struct {
	Rule    string // "spf" or "dmarc"
	Message string
}

func (r *Refusal) Error() string { return "550 5.7.1 " + r.Message }

// SMTPReply lets the SMTP edge reply without knowing this type.
func (r *Refusal) SMTPReply() (int, [3]int, string) { return 550, [3]int{5, 7, 1}, r.Message }

// CheckSender judges mail with header From domain fromDomain and envelope
// sender envFrom. It returns a *Refusal or nil.
func (p *Precheck) CheckSender(ctx context.Context, fromDomain, envFrom string) error {
	fromDomain = strings.ToLower(fromDomain)
	envDomain := strings.ToLower(envFrom[strings.LastIndexByte(envFrom, '@')+1:])

	spfPass := len(p.Egress) > 0
	for _, ip := range p.Egress {
		res, err := spf.CheckHostWithSender(ip, p.HELO, envFrom, spf.WithResolver(p.Resolver), spf.WithContext(ctx))
		switch res {
		case spf.Fail:
			return &Refusal{Rule: "spf", Message: fmt.Sprintf(
				"the SPF record of %s does not allow this server (%s) to send for it, so receivers would reject the message; add %s to the SPF record of %s",
				envDomain, ip, ipMech(ip), envDomain)}
		case spf.Pass:
		case spf.TempError:
			p.Log.Debug("precheck: SPF temperror; not judging", "domain", envDomain, "err", err)
			return nil
		default:
			spfPass = false
		}
	}

	rec, err := p.lookupDMARC(ctx, fromDomain)
	if err != nil || rec == nil || rec.Policy != dmarc.PolicyReject {
		return nil
	}
	if p.dkimAligned(ctx, fromDomain) {
		return nil
	}
	if len(p.Egress) == 0 {
		return nil // SPF unknown: do not guess
	}
	if spfPass && aligned(envDomain, fromDomain, rec.SPFAlignment) {
		return nil
	}
	return &Refusal{Rule: "dmarc", Message: fmt.Sprintf(
		"%s publishes DMARC p=reject, but this message would pass neither DKIM nor SPF for it, so receivers would reject it; publish the DKIM record that `sluice dns records %s` prints",
		fromDomain, fromDomain)}
}

func (p *Precheck) lookupDMARC(ctx context.Context, domain string) (*dmarc.Record, error) {
	for _, d := range []string{domain, orgDomain(domain)} {
		txts, err := p.Resolver.LookupTXT(ctx, "_dmarc."+d)
		if err != nil {
			if isNotFound(err) {
				if d == orgDomain(domain) {
					return nil, nil
				}
				continue
			}
			return nil, err
		}
		for _, t := range txts {
			if r, err := dmarc.Parse(t); err == nil {
				return r, nil
			}
		}
	}
	return nil, nil
}

// dkimAligned reports whether Sluice's signature for fromDomain would pass
// and align: an active key of the From domain (or of its organizational
// domain) whose published record matches.
func (p *Precheck) dkimAligned(ctx context.Context, fromDomain string) bool {
	for _, k := range p.Keys.SigningKeys(fromDomain) {
		txts, err := p.Resolver.LookupTXT(ctx, k.Name())
		if err != nil {
			if !isNotFound(err) {
				return true // cannot tell: do not refuse
			}
			continue
		}
		for _, t := range txts {
			if tags(t)["p"] == k.PublicKeyBase64() {
				return true
			}
		}
	}
	return false
}

func orgDomain(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}

// aligned applies DMARC identifier alignment (RFC 7489 3.1).
func aligned(a, b string, mode dmarc.AlignmentMode) bool {
	if mode == dmarc.AlignmentStrict {
		return a == b
	}
	return orgDomain(a) == orgDomain(b)
}
