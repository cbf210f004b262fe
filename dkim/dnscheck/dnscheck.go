// Package dnscheck tells an operator whether a sending domain's DNS will let
// its mail in: SPF (present, authorizes our egress addresses, within the 10
// lookup limit), DKIM (each selector published and equal to our key),
// DMARC (present, and our mail aligns), and forward-confirmed reverse DNS
// for each egress address matching the HELO name. Every finding carries a
// one-line fix.
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

// Statuses, from good to bad. Fail means receivers would reject or junk
// the mail.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	return [...]string{"ok", "warn", "FAIL"}[s]
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
	Domain   string
	Keys     []*dkim.Key // the domain's keys that are not retired
	Egress   []net.IP    // addresses Sluice sends from
	HELO     string
	Resolver Resolver
}

// Check runs every check. The findings are in a stable order.
func Check(ctx context.Context, in Input) []Finding {
	in.Domain = strings.ToLower(strings.TrimSuffix(in.Domain, "."))
	var out []Finding
	spfOK, f := checkSPF(ctx, in)
	out = append(out, f...)
	dkimOK, f := checkDKIM(ctx, in)
	out = append(out, f...)
	out = append(out, checkDMARC(ctx, in, spfOK, dkimOK)...)
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

func isNotFound(err error) bool {
	de, ok := err.(*net.DNSError)
	return ok && de.IsNotFound
}

func ipMech(ip net.IP) string {
	if ip.To4() != nil {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}

func checkSPF(ctx context.Context, in Input) (bool, []Finding) {
	txts, err := in.Resolver.LookupTXT(ctx, in.Domain)
	if err != nil && !isNotFound(err) {
		return false, []Finding{{"spf", Warn, fmt.Sprintf("TXT lookup for %s failed: %v", in.Domain, err), "check that the domain's name servers answer"}}
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
		return false, []Finding{{"spf", Fail, fmt.Sprintf("%s has no SPF record", in.Domain),
			fmt.Sprintf("publish TXT %q at %s", suggest, in.Domain)}}
	case len(recs) > 1:
		return false, []Finding{{"spf", Fail, fmt.Sprintf("%s has %d SPF records; receivers treat that as an error (permerror)", in.Domain, len(recs)),
			"merge them into one v=spf1 record"}}
	}
	var out []Finding
	opts := []spf.Option{spf.WithResolver(in.Resolver), spf.WithContext(ctx)}
	// Evaluate for an address no record authorizes (TEST-NET-1) so that
	// every include and redirect is followed and the lookups counted.
	if _, err := spf.CheckHostWithSender(net.ParseIP("192.0.2.1"), in.HELO, "postmaster@"+in.Domain, opts...); err == spf.ErrLookupLimitReached || err == spf.ErrVoidLookupLimitReached {
		out = append(out, Finding{"spf", Fail, fmt.Sprintf("the SPF record of %s needs more than 10 DNS lookups (RFC 7208 4.6.4); receivers return permerror", in.Domain),
			"replace include: and a/mx mechanisms by ip4:/ip6: ranges until at most 10 lookups remain"})
		return false, out
	}
	if len(in.Egress) == 0 {
		out = append(out, Finding{"spf", Warn, "no egress addresses configured, so SPF authorization was not checked",
			"set [relay] source_ips to the addresses Sluice sends from"})
		return false, out
	}
	allPass := true
	for _, ip := range in.Egress {
		res, err := spf.CheckHostWithSender(ip, in.HELO, "postmaster@"+in.Domain, opts...)
		switch res {
		case spf.Pass:
			out = append(out, Finding{"spf", OK, fmt.Sprintf("SPF of %s authorizes %s", in.Domain, ip), ""})
		case spf.Fail:
			allPass = false
			out = append(out, Finding{"spf", Fail, fmt.Sprintf("SPF of %s does not authorize %s (fail): receivers reject with 550 5.7.23/5.7.1", in.Domain, ip),
				fmt.Sprintf("add %s to the SPF record before its all mechanism", ipMech(ip))})
		case spf.SoftFail, spf.Neutral, spf.None:
			allPass = false
			out = append(out, Finding{"spf", Warn, fmt.Sprintf("SPF of %s gives %s for %s: mail may be junked", in.Domain, res, ip),
				fmt.Sprintf("add %s to the SPF record", ipMech(ip))})
		default:
			allPass = false
			out = append(out, Finding{"spf", Fail, fmt.Sprintf("SPF of %s is broken for %s: %s (%v)", in.Domain, ip, res, err),
				"fix the syntax of the SPF record (one v=spf1 record, valid mechanisms)"})
		}
	}
	return allPass, out
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

func checkDKIM(ctx context.Context, in Input) (bool, []Finding) {
	if len(in.Keys) == 0 {
		return false, []Finding{{"dkim", Fail, fmt.Sprintf("Sluice has no DKIM key for %s, so its mail goes out unsigned", in.Domain),
			fmt.Sprintf("run: sluice dkim keygen %s, and publish the record it prints", in.Domain)}}
	}
	var out []Finding
	activeOK := false
	for _, k := range in.Keys {
		sev := Fail
		if k.State == dkim.Pending {
			sev = Warn
		}
		txts, err := in.Resolver.LookupTXT(ctx, k.Name())
		if err != nil {
			out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s (%s, %s) is not published", k.Name(), k.Algo, k.State),
				fmt.Sprintf("publish: sluice dkim record %s --selector %s", k.Domain, k.Selector)})
			continue
		}
		var found bool
		for _, t := range txts {
			tg := tags(t)
			if tg["p"] == "" || tg["k"] != "" && tg["k"] != k.Algo && len(txts) > 1 {
				continue
			}
			found = true
			algo := tg["k"]
			if algo == "" {
				algo = dkim.RSA
			}
			switch {
			case tg["p"] != k.PublicKeyBase64():
				out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s publishes a different public key than Sluice signs with: signatures fail (dkim=fail)", k.Name()),
					fmt.Sprintf("replace the record with: sluice dkim record %s --selector %s", k.Domain, k.Selector)})
			case algo != k.Algo:
				out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s says k=%s but the key is %s", k.Name(), algo, k.Algo),
					fmt.Sprintf("set k=%s in the record", k.Algo)})
			default:
				out = append(out, Finding{"dkim", OK, fmt.Sprintf("%s (%s, %s) is published and matches", k.Name(), k.Algo, k.State), ""})
				if k.State == dkim.Active {
					activeOK = true
				}
			}
			break
		}
		if !found {
			out = append(out, Finding{"dkim", sev, fmt.Sprintf("%s has a TXT record but no DKIM key (p=) in it", k.Name()),
				fmt.Sprintf("publish: sluice dkim record %s --selector %s", k.Domain, k.Selector)})
		}
	}
	return activeOK, out
}

func checkDMARC(ctx context.Context, in Input, spfOK, dkimOK bool) []Finding {
	name := "_dmarc." + in.Domain
	txts, err := in.Resolver.LookupTXT(ctx, name)
	if err != nil && !isNotFound(err) {
		return []Finding{{"dmarc", Warn, fmt.Sprintf("TXT lookup for %s failed: %v", name, err), "check that the domain's name servers answer"}}
	}
	var rec *dmarc.Record
	for _, t := range txts {
		if r, err := dmarc.Parse(t); err == nil {
			rec = r
			break
		}
	}
	if rec == nil {
		return []Finding{{"dmarc", Warn, fmt.Sprintf("%s has no DMARC record; Gmail and Yahoo require one from bulk senders", in.Domain),
			fmt.Sprintf("publish TXT \"v=DMARC1; p=none; rua=mailto:dmarc@%s\" at %s, then tighten p= once reports are clean", in.Domain, name)}}
	}
	aligned := dkimOK || spfOK
	switch {
	case aligned:
		how := "DKIM"
		if !dkimOK {
			how = "SPF only"
		}
		return []Finding{{"dmarc", OK, fmt.Sprintf("DMARC p=%s; Sluice's mail aligns through %s", rec.Policy, how), ""}}
	case rec.Policy == dmarc.PolicyReject || rec.Policy == dmarc.PolicyQuarantine:
		return []Finding{{"dmarc", Fail, fmt.Sprintf("DMARC p=%s but neither DKIM nor SPF of Sluice's mail aligns with %s: receivers will %s it", rec.Policy, in.Domain, rec.Policy),
			"fix the DKIM and SPF findings above"}}
	}
	return []Finding{{"dmarc", Warn, fmt.Sprintf("DMARC p=%s, but Sluice's mail does not align yet", rec.Policy), "fix the DKIM and SPF findings above"}}
}

func checkPTR(ctx context.Context, in Input) []Finding {
	var out []Finding
	helo := strings.ToLower(strings.TrimSuffix(in.HELO, "."))
	for _, ip := range in.Egress {
		names, err := in.Resolver.LookupAddr(ctx, ip.String())
		if err != nil || len(names) == 0 {
			out = append(out, Finding{"ptr", Fail, fmt.Sprintf("%s has no PTR record: Gmail and Microsoft refuse mail from it (550 5.7.25)", ip),
				fmt.Sprintf("ask the owner of %s (your hosting provider) to set its reverse DNS to %s", ip, helo)})
			continue
		}
		confirmed := ""
		for _, n := range names {
			addrs, err := in.Resolver.LookupIPAddr(ctx, n)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if a.IP.Equal(ip) {
					confirmed = strings.ToLower(strings.TrimSuffix(n, "."))
				}
			}
		}
		switch {
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
