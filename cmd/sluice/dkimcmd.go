package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"sluice/dkim"
)

const dkimUsage = `usage:
  sluice dkim keygen DOMAIN [--selector S] [--algo rsa|ed25519|both]
  sluice dkim list
  sluice dkim record DOMAIN [--selector S]
  sluice dkim activate DOMAIN SELECTOR
  sluice dkim retire DOMAIN SELECTOR`

func dkimDir(cfg *Config) string { return filepath.Join(cfg.DataDir, "dkim") }

func cmdDKIM(args []string, stdout io.Writer) error {
	sc, err := newSubcommand("dkim", args, dkimUsage, "keygen", "list", "record", "activate", "retire")
	if err != nil {
		return err
	}
	sub, cfgPath := sc.name, sc.cfgPath
	selector := sc.fs.String("selector", "", "selector (default: s + this month, e.g. s202611)")
	algo := sc.fs.String("algo", "both", "rsa, ed25519 or both")
	pos, err := sc.parse(args)
	if err != nil {
		return err
	}
	cfg, err := sc.config()
	if err != nil {
		return err
	}
	ring, err := dkim.Open(dkimDir(cfg))
	if err != nil {
		return err
	}
	switch sub {
	case "keygen":
		if len(pos) != 1 {
			return usagef("%s", dkimUsage)
		}
		sel := *selector
		if sel == "" {
			sel = "s" + time.Now().UTC().Format("200601")
		}
		keys, err := ring.Generate(pos[0], sel, *algo)
		if err != nil {
			return err
		}
		for _, k := range keys {
			fmt.Fprintf(stdout, "created %s key for %s, selector %s (%s)\n", k.Algo, k.Domain, k.Selector, k.State)
		}
		fmt.Fprintf(stdout, "\nPublish in DNS:\n\n")
		for _, k := range keys {
			fmt.Fprintf(stdout, "%s\n", k.ZoneLine())
		}
		for _, k := range keys {
			if k.State == dkim.Pending {
				// activate takes the selector given to keygen and
				// activates every key made under it (both algorithms).
				fmt.Fprintf(stdout, "\nThe new key is pending: %s keeps signing with its current key. Once the record is published, run\n  sluice dkim activate %s %s%s\n", k.Domain, k.Domain, sel, configFlag(*cfgPath))
				break
			}
		}
		fmt.Fprintf(stdout, "\nThen check with: sluice dns check %s%s\n", keys[0].Domain, configFlag(*cfgPath))
		return nil
	case "record":
		if len(pos) != 1 {
			return usagef("%s", dkimUsage)
		}
		n := 0
		for _, k := range ring.Keys() {
			sel := strings.ToLower(*selector)
			if k.Domain == strings.ToLower(pos[0]) && k.State != dkim.Retired && (sel == "" || k.Selector == sel || k.Selector == sel+"-"+k.Algo) {
				fmt.Fprintln(stdout, k.ZoneLine())
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("no key for %s; create one with `sluice dkim keygen %s`", pos[0], pos[0])
		}
		return nil
	case "list":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGO\tSTATE\tSIGNING\tCREATED")
		for _, k := range ring.Keys() {
			signing := "no"
			for _, s := range ring.SigningKeys(k.Domain) {
				if s == k {
					signing = "yes"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Domain, k.Selector, k.Algo, k.State, signing, k.Created.Format("2006-01-02"))
		}
		return tw.Flush()
	case "activate", "retire":
		if len(pos) != 2 {
			return usagef("%s", dkimUsage)
		}
		if sub == "activate" {
			err = ring.Activate(pos[0], pos[1])
		} else {
			err = ring.Retire(pos[0], pos[1])
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s selector %s: %sd\n", strings.ToLower(pos[0]), strings.ToLower(pos[1]), sub)
		return nil
	}
	return usagef("%s", dkimUsage)
}

// configFlag repeats --config FILE in a printed hint, so that the suggested
// command reads the same configuration.
func configFlag(path string) string {
	if path == "" {
		return ""
	}
	return " --config " + path
}
