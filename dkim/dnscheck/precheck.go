package dnscheck

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"

	"sluice/dkim"
)

// Precheck refuses, at submission, mail that receivers would reject for the
// sender domain's own DNS: an SPF record that hard-fails our egress
// addresses, or DMARC p=reject (found at the domain or its organizational
// domain) that neither our DKIM signature nor SPF can satisfy under the
// record's adkim/aspf modes. Relaying such mail only produces bounces and
// hurts the relay's reputation. DNS answers come from a caching resolver
// (cached for their TTL); a DNS failure never refuses mail.
type Precheck struct {
	Resolver Resolver
	Keys     *dkim.Keyring
	Fallback string   // DKIM fallback signing domain: aligned only when it shares the From domain's organizational domain (relaxed)
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
	var notPassing net.IP
	for _, ip := range p.Egress {
		res, err := spf.CheckHostWithSender(ip, p.HELO, envFrom, spf.WithResolver(p.Resolver), spf.WithContext(ctx))
		switch res {
		case spf.Fail:
			return &Refusal{Rule: "spf", Message: fmt.Sprintf(
				"the SPF record of %s does not allow this server (%s) to send for it, so receivers would reject the message; add %s to the SPF record of %s in your domain's DNS, or ask your hosting provider to do it",
				envDomain, ip, ipMech(ip), envDomain)}
		case spf.Pass:
		case spf.TempError:
			p.Log.Debug("precheck: SPF temperror; not judging", "domain", envDomain, "err", err)
			return nil
		default:
			spfPass = false
			if notPassing == nil {
				notPassing = ip
			}
		}
	}

	pol, err := lookupDMARC(ctx, p.Resolver, fromDomain)
	if err != nil {
		p.Log.Debug("precheck: DMARC lookup failed; not judging", "domain", fromDomain, "err", err)
		return nil
	}
	if pol == nil || pol.policy != dmarc.PolicyReject {
		return nil
	}
	if len(p.Egress) == 0 {
		return nil // SPF unknown: do not guess
	}
	sigs, unpublished, known := p.signatureDomains(ctx, fromDomain)
	if !known {
		return nil // a DKIM lookup failed: cannot tell
	}
	if pol.alignment(fromDomain, sigs, envDomain, spfPass) != "" {
		return nil
	}
	return &Refusal{Rule: "dmarc", Message: dmarcAdvice(fromDomain, envDomain, pol, unpublished, notPassing)}
}

// dmarcAdvice is the one sentence a site owner can act on: the record of
// their domain to change, or whom to ask.
func dmarcAdvice(fromDomain, envDomain string, pol *dmarcPolicy, unpublished *dkim.Key, ip net.IP) string {
	head := fmt.Sprintf("%s publishes DMARC p=reject, but mail from this server passes neither DKIM nor SPF for it, so receivers would reject it; ", fromDomain)
	if pol.at != "_dmarc."+fromDomain {
		head = fmt.Sprintf("%s falls under the DMARC record at %s (reject), but mail from this server passes neither DKIM nor SPF for it, so receivers would reject it; ", fromDomain, pol.at)
	}
	var fixes []string
	if ip != nil && aligned(envDomain, fromDomain, pol.rec.SPFAlignment) {
		fixes = append(fixes, fmt.Sprintf("add %s to the SPF record of %s", ipMech(ip), envDomain))
	}
	if unpublished != nil {
		fixes = append(fixes, fmt.Sprintf("publish the DKIM record %s that your mail provider gives you", unpublished.Name()))
	}
	if len(fixes) == 0 {
		return head + fmt.Sprintf("ask your mail provider to set up DKIM signing for %s, or set p=none in the DMARC record at %s until it is", fromDomain, pol.at)
	}
	return head + strings.Join(fixes, ", or ") + " in your domain's DNS, or ask your mail provider to do it"
}

// signatureDomains returns the d= domains of the signatures Sluice would
// add for fromDomain that verify against the published keys (its own
// keys, else the fallback domain's; judged as `dns check` judges them),
// the first active key whose record is missing or wrong, and whether it
// could tell (false: a lookup failed).
func (p *Precheck) signatureDomains(ctx context.Context, fromDomain string) ([]string, *dkim.Key, bool) {
	keys := p.Keys.SigningKeys(fromDomain)
	if len(keys) == 0 && p.Fallback != "" {
		keys = p.Keys.SigningKeys(p.Fallback)
	}
	var unpublished *dkim.Key
	for _, k := range keys {
		rec, _, err := lookupKey(ctx, p.Resolver, k)
		if err != nil {
			return nil, nil, false
		}
		if rec == keyPublished {
			return []string{k.Domain}, nil, true
		}
		if unpublished == nil {
			unpublished = k
		}
	}
	return nil, unpublished, true
}
