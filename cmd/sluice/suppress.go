package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"sluice/relay"
)

const suppressUsage = `usage:
  sluice suppress list
  sluice suppress delete ADDRESS [--sender-domain D]`

func cmdSuppress(args []string, stdout io.Writer) error {
	sc, err := newSubcommand("suppress", args, suppressUsage, "list", "delete")
	if err != nil {
		return err
	}
	sub := sc.name
	senderDomain := sc.fs.String("sender-domain", "", "only for mail from this domain")
	pos, err := sc.parse(args)
	if err != nil {
		return err
	}
	cfg, err := sc.config()
	if err != nil {
		return err
	}
	sup, err := relay.OpenSuppressions(filepath.Join(cfg.DataDir, "suppress.json"), cfg.Relay.SuppressFor.Duration)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RECIPIENT\tSENDER DOMAIN\tSINCE\tUNTIL\tREPLY")
		for _, e := range sup.List() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Rcpt, e.SenderDomain, e.Since.Format("2006-01-02"), e.Until.Format("2006-01-02"), e.Reply)
		}
		return tw.Flush()
	case "delete":
		if len(pos) != 1 {
			return usagef("%s", suppressUsage)
		}
		// A running server owns the list: ask it; else edit the file.
		if _, err := callControl(cfg, controlRequest{Cmd: "suppress-delete", Login: pos[0], Domain: *senderDomain}); err == nil {
			fmt.Fprintf(stdout, "%s removed from the suppression list\n", pos[0])
			return nil
		} else if !strings.HasPrefix(err.Error(), "no running sluice") {
			return err
		}
		if sup.Delete(*senderDomain, pos[0]) == 0 {
			return fmt.Errorf("%s is not suppressed", pos[0])
		}
		fmt.Fprintf(stdout, "%s removed from the suppression list\n", pos[0])
		return nil
	}
	return usagef("%s", suppressUsage)
}
