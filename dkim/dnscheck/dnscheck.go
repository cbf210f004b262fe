// Package dnscheck tells an operator whether a sending domain's DNS will let
// its mail in: SPF (present, authorizes our egress addresses, within the 10
// lookup limit), DKIM (each selector published and equal to our key),
// DMARC (present, at the domain or its organizational domain, and our mail
// aligns under its adkim/aspf modes), and forward-confirmed reverse DNS
// for each egress address (IPv4 and IPv6) matching the HELO name. Every
// finding carries a one-line fix. A lookup the resolver fails to answer is
// a finding of its own (Error, "could not check ...; retry"), never taken
// for a missing record.
package dnscheck

import (
	"context"
	"fmt"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"

	"sluice/dkim"
)

// Status of a finding.
type Status int

// Statuses, from good to bad. Error means the check could not be made
// (the resolver failed); Fail means receivers would reject or junk the
// mail.
const (
	OK Status = iota
	Warn
	Error
	Fail
)

func (s Status) String() string {
	return [...]string{"ok", "warn", "ERR", "FAIL"}[s]
}

// Finding is one result.
type Finding struct {
	Check  string // spf, dkim, dmarc, ptr
	Status Status
	Detail string
	Fix    string
}

// Resolver is the DNS the checks use (relay/resolver.Resolver or a
// net.Resolver).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Input is what to check.
type Input struct {
	Domain string
	Keys   []*dkim.Key // the domain's keys that are not retired
	// FallbackKeys are the active keys of [dkim] fallback_domain: Sluice
	// signs with them when the domain has no active key of its own.
	FallbackKeys []*dkim.Key
	Egress       []net.IP // addresses Sluice sends from
	HELO         string
	Resolver     Resolver
}

// Check runs every check. The findings are in a stable order.
func Check(ctx context.Context, in Input) []Finding {
	in.Domain = strings.ToLower(strings.TrimSuffix(in.Domain, "."))
	var out []Finding
	spfRes, f := checkSPF(ctx, in)
	out = append(out, f...)
	dkimRes, f := checkDKIM(ctx, in)
	out = append(out, f...)
	out = append(out, checkDMARC(ctx, in, spfRes, dkimRes)...)
	out = append(out, checkPTR(ctx, in)...)
	return out
}

// Worst is the highest status among findings.
func Worst(fs []Finding) Status {
	w := OK
	for _, f := range fs {
		if f.Status > w {
			w = f.Status
		}
	}
	return w
}

// unchecked is the finding for a lookup the resolver did not answer.
func unchecked(check, what string, err error) Finding {
	return Finding{check, Error, fmt.Sprintf("could not check %s: the resolver failed (%s)", what, failure(err)),
		"retry; if it keeps failing, check [dns] resolver and that the domain's name servers answer"}
}

func ipMech(ip net.IP) string {
	if ip.To4() != nil {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}

// checked is what an SPF or DKIM check found, for the DMARC verdict.
type checked struct {
	pass    bool     // SPF: every egress address passes
	domains []string // DKIM: d= domains of signatures that would verify
	unknown bool     // a lookup failed: the result may be wrong
}

func checkSPF(ctx context.Context, in Input) (checked, []Finding) {
	txts, err := in.Resolver.LookupTXT(ctx, in.Domain)
	if dnsFailed(err) {
		return checked{unknown: true}, []Finding{unchecked("spf", "the SPF record of "+in.Domain, err)}
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(strings.ToLower(t), "v=spf1") {
			recs = append(recs, t)
		}
	}
	mechs := make([]string, 0, len(in.Egress))
	for _, ip := range in.Egress {
		mechs = append(mechs, ipMech(ip))
	}
	suggest := "v=spf1 " + strings.Join(mechs, " ") + " -all"
	switch {
	case len(recs) == 0:
		return checked{}, []Finding{{"spf", Fail, fmt.Sprintf("%s has no SPF record", in.Domain),
			fmt.Sprintf("publish TXT %q at %s", suggest, in.Domain)}}
	case len(recs) > 1:
		return checked{}, []Finding{{"spf", Fail, fmt.Sprintf("%s has %d SPF records; receivers treat that as an error (permerror)", in.Domain, len(recs)),
			"merge them into one v=spf1 record"}}
	}
	var out []Finding
	opts := []spf.Option{spf.WithResolver(in.Resolver), spf.WithContext(ctx)}
	// Evaluate for an address no record authorizes (TEST-NET-1) so that
	// every include and redirect is followed and the lookups counted.
	if _, err := spf.CheckHostWithSender(net.ParseIP("192.0.2.1"), in.HELO, "postmaster@"+in.Domain, opts...); err == spf.ErrLookupLimitReached || err == spf.ErrVoidLookupLimitReached {
		out = append(out, Finding{"spf", Fail, fmt.Sprintf("the SPF record of %s needs more than 10 DNS lookups (RFC 7208 4.6.4); receivers return permerror", in.Domain),
			"replace include: and a/mx mechanisms by ip4:/ip6: ranges until at most 10 lookups remain"})
		return checked{}, out
	}
	if len(in.Egress) == 0 {
		out = append(out, Finding{"spf", Warn, "no egress addresses configured, so SPF authorization was not checked",
			"set [relay] source_ips to the addresses Sluice sends from"})
		return checked{}, out
	}
	res := checked{pass: true}
	for _, ip := range in.Egress {
		r, err := spf.CheckHostWithSender(ip, in.HELO, "postmaster@"+in.Domain, opts...)
		if r != spf.Pass {
			res.pass = false
		}
		switch r {
		case spf.Pass:
			out = append(out, Finding{"spf", OK, fmt.Sprintf("SPF of %s authorizes %s", in.Domain, ip), ""})
		case spf.Fail:
			out = append(out, Finding{"spf", Fail, fmt.Sprintf("SPF of %s does not authorize %s (fail): receivers reject with 550 5.7.23/5.7.1", in.Domain, ip),
				fmt.Sprintf("add %s to the SPF record before its all mechanism", ipMech(ip))})
		case spf.SoftFail, spf.Neutral, spf.None:
			out = append(out, Finding{"spf", Warn, fmt.Sprintf("SPF of %s gives %s for %s: mail may be junked", in.Domain, r, ip),
				fmt.Sprintf("add %s to the SPF record", ipMech(ip))})
		case spf.TempError:
			// A lookup of an include, a:, mx: or the like failed.
			res.unknown = true
			out = append(out, unchecked("spf", fmt.Sprintf("whether SPF of %s authorizes %s", in.Domain, ip), err))
		default:
			out = append(out, Finding{"spf", Fail, fmt.Sprintf("SPF of %s is broken for %s: %s (%v)", in.Domain, ip, r, err),
				"fix the syntax of the SPF record (one v=spf1 record, valid mechanisms)"})
		}
	}
	return res, out
}

// tags parses a "k=v; k=v" record.
func tags(rec string) map[string]string {
	m := map[string]string{}
	for _, part := range strings.Split(rec, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		m[strings.ToLower(strings.TrimSpace(k))] = strings.Join(strings.Fields(v), "")
	}
	return m
}

func checkDKIM(ctx context.Context, in Input) (checked, []Finding) {
	keys := in.Keys
	var out []Finding
	hasActive := false
	for _, k := range keys {
		hasActive = hasActive || k.State == dkim.Active
	}
	if !hasActive && len(in.FallbackKeys) > 0 {
		fb := in.FallbackKeys[0].Domain
		out = append(out, Finding{"dkim", Warn, fmt.Sprintf("Sluice has no active DKIM key for %s and signs its mail as the fallback domain %s", in.Domain, fb),
			fmt.Sprintf("run: sluice dkim keygen %s, and publish the record it prints, so that the signature is the domain's own", in.Domain)})
		keys = append(append([]*dkim.Key(nil), keys...), in.FallbackKeys...)
	} else if len(keys) == 0 {
		return checked{}, []Finding{{"dkim", Fail, fmt.Sprintf("Sluice has no DKIM key for %s, so its mail goes out unsigned", in.Domain),
			fmt.Sprintf("run: sluice dkim keygen %s, and publish the record it prints", in.Domain)}}
	}
	var res checked
	for _, k := range keys {
		sev := Fail
		if k.State == dkim.Pending {
			sev = Warn
		}
		rec, algo, err := lookupKey(ctx, in.Resolver, k)
		switch {
		case err != nil:
			res.unknown = res.unknown || k.State == dkim.Active
			out = append(out, unchecked("dkim", k.Name()+" ("+k.Algo+", "+k.State+")", err))
		case rec == keyMissing:
			out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s (%s, %s) is not published", k.Name(), k.Algo, k.State),
				fmt.Sprintf("publish: sluice dkim record %s --selector %s", k.Domain, k.Selector)})
		case rec == keyNoP:
			out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s has a TXT record but no DKIM key (p=) in it", k.Name()),
				fmt.Sprintf("publish: sluice dkim record %s --selector %s", k.Domain, k.Selector)})
		case rec == keyDifferent:
			out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s publishes a different public key than Sluice signs with: signatures fail (dkim=fail)", k.Name()),
				fmt.Sprintf("replace the record with: sluice dkim record %s --selector %s", k.Domain, k.Selector)})
		case rec == keyWrongAlgo:
			out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s says k=%s but the key is %s", k.Name(), algo, k.Algo),
				fmt.Sprintf("set k=%s in the record", k.Algo)})
		default:
			out = append(out, Finding{"dkim", OK, fmt.Sprintf("%s (%s, %s) is published and matches", k.Name(), k.Algo, k.State), ""})
			if k.State == dkim.Active {
				res.domains = append(res.domains, k.Domain)
			}
		}
	}
	return res, out
}

// keyRecord is what the DNS publishes for a key.
type keyRecord int

const (
	keyMissing   keyRecord = iota // no record
	keyNoP                        // a TXT record without a key (p=)
	keyDifferent                  // another public key: signatures fail
	keyWrongAlgo                  // the key under another k=: signatures fail
	keyPublished                  // the key: signatures verify
)

// lookupKey judges k's record, as `dns check` and the pre-check both do:
// the first TXT record at its name with a key (p=), skipping, when there
// are several, those whose k= names another algorithm. It also returns
// the algorithm that record names. An error means the resolver failed:
// the record may exist.
func lookupKey(ctx context.Context, r Resolver, k *dkim.Key) (keyRecord, string, error) {
	txts, err := r.LookupTXT(ctx, k.Name())
	if dnsFailed(err) {
		return 0, "", err
	}
	if err != nil {
		return keyMissing, "", nil
	}
	for _, t := range txts {
		tg := tags(t)
		if tg["p"] == "" || tg["k"] != "" && tg["k"] != k.Algo && len(txts) > 1 {
			continue
		}
		algo := tg["k"]
		if algo == "" {
			algo = dkim.RSA
		}
		switch {
		case tg["p"] != k.PublicKeyBase64():
			return keyDifferent, algo, nil
		case algo != k.Algo:
			return keyWrongAlgo, algo, nil
		}
		return keyPublished, algo, nil
	}
	return keyNoP, "", nil
}

func checkDMARC(ctx context.Context, in Input, spfRes, dkimRes checked) []Finding {
	pol, err := lookupDMARC(ctx, in.Resolver, in.Domain)
	if err != nil {
		return []Finding{unchecked("dmarc", "the DMARC record of "+in.Domain, err)}
	}
	if pol == nil {
		name := "_dmarc." + in.Domain
		return []Finding{{"dmarc", Warn, fmt.Sprintf("%s has no DMARC record; Gmail and Yahoo require one from bulk senders", in.Domain),
			fmt.Sprintf("publish TXT \"v=DMARC1; p=none; rua=mailto:dmarc@%s\" at %s, then tighten p= once reports are clean", in.Domain, name)}}
	}
	where := ""
	if pol.at != "_dmarc."+in.Domain {
		where = fmt.Sprintf(" (from %s, the organizational domain's record)", pol.at)
	}
	// SPF is checked for the domain itself (postmaster@domain), so its
	// identifier is the domain; DKIM's are the signing keys' domains.
	switch how := pol.alignment(in.Domain, dkimRes.domains, in.Domain, spfRes.pass); {
	case how != "":
		if how == "SPF" {
			how = "SPF only"
		}
		return []Finding{{"dmarc", OK, fmt.Sprintf("DMARC p=%s%s; Sluice's mail aligns through %s", pol.policy, where, how), ""}}
	case spfRes.unknown || dkimRes.unknown:
		return []Finding{{"dmarc", Error, fmt.Sprintf("could not check whether Sluice's mail aligns with DMARC p=%s%s: an SPF or DKIM lookup failed", pol.policy, where),
			"retry once the lookups above succeed"}}
	}
	why := "neither DKIM nor SPF of Sluice's mail aligns with " + in.Domain
	if len(dkimRes.domains) > 0 {
		why = fmt.Sprintf("the DKIM signature (d=%s) does not align with %s under %s, and SPF does not pass", dkimRes.domains[0], in.Domain, pol.modes())
	}
	fix := "fix the DKIM and SPF findings above"
	if len(dkimRes.domains) > 0 {
		fix = fmt.Sprintf("create a DKIM key for %s (sluice dkim keygen %s) or relax the DMARC record to adkim=r", in.Domain, in.Domain)
	}
	if pol.policy == dmarc.PolicyReject || pol.policy == dmarc.PolicyQuarantine {
		return []Finding{{"dmarc", Fail, fmt.Sprintf("DMARC p=%s%s, but %s: receivers will %s it", pol.policy, where, why, pol.policy), fix}}
	}
	return []Finding{{"dmarc", Warn, fmt.Sprintf("DMARC p=%s%s refuses nothing yet, but %s", pol.policy, where, why), fix}}
}

func checkPTR(ctx context.Context, in Input) []Finding {
	var out []Finding
	helo := strings.ToLower(strings.TrimSuffix(in.HELO, "."))
	for _, ip := range in.Egress {
		names, err := in.Resolver.LookupAddr(ctx, ip.String())
		if dnsFailed(err) {
			out = append(out, unchecked("ptr", "the PTR record of "+ip.String(), err))
			continue
		}
		if len(names) == 0 {
			out = append(out, Finding{"ptr", Fail, fmt.Sprintf("%s has no PTR record: Gmail and Microsoft refuse mail from it (550 5.7.25)", ip),
				fmt.Sprintf("ask the owner of %s (your hosting provider) to set its reverse DNS to %s", ip, helo)})
			continue
		}
		confirmed := ""
		var fwdErr error
		for _, n := range names {
			addrs, err := in.Resolver.LookupIPAddr(ctx, n)
			if dnsFailed(err) {
				fwdErr = err
				continue
			}
			for _, a := range addrs {
				if a.IP.Equal(ip) {
					confirmed = strings.ToLower(strings.TrimSuffix(n, "."))
				}
			}
		}
		switch {
		case confirmed == "" && fwdErr != nil:
			out = append(out, unchecked("ptr", fmt.Sprintf("whether the PTR %s of %s resolves back", strings.Join(names, ","), ip), fwdErr))
		case confirmed == "":
			out = append(out, Finding{"ptr", Fail, fmt.Sprintf("%s has PTR %s, but that name does not resolve back to %s (no forward-confirmed reverse DNS)", ip, strings.Join(names, ","), ip),
				fmt.Sprintf("add an %s record for %s pointing to %s", recordType(ip), strings.TrimSuffix(names[0], "."), ip)})
		case helo != "" && confirmed != helo:
			out = append(out, Finding{"ptr", Warn, fmt.Sprintf("%s has PTR %s, which is not the HELO name %s", ip, confirmed, helo),
				fmt.Sprintf("set [relay] helo = %q, or the PTR of %s to %s", confirmed, ip, helo)})
		default:
			out = append(out, Finding{"ptr", OK, fmt.Sprintf("%s has forward-confirmed PTR %s", ip, confirmed), ""})
		}
	}
	return out
}

func recordType(ip net.IP) string {
	if ip.To4() != nil {
		return "A"
	}
	return "AAAA"
}
