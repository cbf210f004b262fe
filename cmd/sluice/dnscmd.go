package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"sluice/dkim"
	"sluice/dkim/dnscheck"
	"sluice/relay/resolver"
)

const dnsUsage = `usage:
  sluice dns check DOMAIN     is DOMAIN's DNS ready for mail sent through Sluice?
  sluice dns records DOMAIN   the records to publish (SPF, DKIM, DMARC, and the SRV records
                              that let mail clients find the submission ports)`

// errFindings makes `dns check` exit 1 when receivers would reject or junk
// the domain's mail, and 3 when only the resolver failed (nothing was
// proven wrong; check again).
type errFindings struct{ fails, unchecked int }

func (e errFindings) Error() string {
	if e.fails == 0 {
		return fmt.Sprintf("%d check(s) could not be made because the resolver failed; run it again", e.unchecked)
	}
	return fmt.Sprintf("%d finding(s) would make receivers reject or junk mail", e.fails)
}

// ExitCode is the process exit status for this error.
func (e errFindings) ExitCode() int {
	if e.fails == 0 {
		return 3
	}
	return 1
}

func cmdDNS(args []string, stdout io.Writer) error {
	sc, err := newSubcommand("dns", args, dnsUsage, "check", "records")
	if err != nil {
		return err
	}
	sub := sc.name
	pos, err := sc.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s", dnsUsage)
	}
	domain := strings.ToLower(strings.TrimSuffix(pos[0], "."))
	cfg, err := sc.config()
	if err != nil {
		return err
	}
	ring, err := dkim.Open(dkimDir(cfg))
	if err != nil {
		return err
	}
	var keys []*dkim.Key
	for _, k := range ring.Keys() {
		if k.Domain == domain && k.State != dkim.Retired {
			keys = append(keys, k)
		}
	}
	var egress []net.IP
	for _, s := range cfg.Relay.SourceIPs {
		egress = append(egress, net.ParseIP(s))
	}
	switch sub {
	case "check":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		in := dnscheck.Input{Domain: domain, Keys: keys, Egress: egress, HELO: cfg.heloName(), Resolver: resolver.New(cfg.DNS.Resolver)}
		if fb := strings.ToLower(cfg.DKIM.FallbackDomain); fb != "" && fb != domain && len(ring.SigningKeys(domain)) == 0 {
			in.FallbackKeys = ring.SigningKeys(fb)
		}
		fsd := dnscheck.Check(ctx, in)
		fails, unchecked := 0, 0
		for _, f := range fsd {
			fmt.Fprintf(stdout, "%-4s  %-5s  %s\n", f.Status, f.Check, f.Detail)
			if f.Fix != "" {
				fmt.Fprintf(stdout, "             fix: %s\n", f.Fix)
			}
			switch f.Status {
			case dnscheck.Fail:
				fails++
			case dnscheck.Error:
				unchecked++
			}
		}
		if fails+unchecked > 0 {
			return errFindings{fails, unchecked}
		}
		return nil
	case "records":
		mechs := []string{}
		for _, ip := range egress {
			if ip.To4() != nil {
				mechs = append(mechs, "ip4:"+ip.String())
			} else {
				mechs = append(mechs, "ip6:"+ip.String())
			}
		}
		if len(mechs) == 0 {
			mechs = append(mechs, "a:"+cfg.heloName())
		}
		fmt.Fprintf(stdout, "; SPF: who may send for %s\n%s. 3600 IN TXT \"v=spf1 %s -all\"\n", domain, domain, strings.Join(mechs, " "))
		fmt.Fprintf(stdout, "; DMARC: start with p=none, read the reports, then quarantine/reject\n_dmarc.%s. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc@%s\"\n", domain, domain)
		if len(keys) == 0 {
			fmt.Fprintf(stdout, "; DKIM: no key yet; run: sluice dkim keygen %s\n", domain)
		}
		for _, k := range keys {
			fmt.Fprintf(stdout, "; DKIM %s key, selector %s (%s)\n%s\n", k.Algo, k.Selector, k.State, k.ZoneLine())
		}
		fmt.Fprintf(stdout, "; Mail clients find the submission server (RFC 6186, RFC 8314)\n_submissions._tcp.%s. 3600 IN SRV 0 1 465 %s.\n_submission._tcp.%s. 3600 IN SRV 10 1 587 %s.\n",
			domain, cfg.Hostname, domain, cfg.Hostname)
		return nil
	}
	return usagef("%s", dnsUsage)
}
