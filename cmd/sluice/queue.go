package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"sluice/relay/spool"
)

func cmdQueue(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("usage: sluice queue list | show ID")
	}
	sub := args[0]
	fs := flag.NewFlagSet("queue "+sub, flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"))
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		ids, err := sp.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRECEIVED\tLOGIN\tFROM\tRCPTS\tSIZE")
		for _, id := range ids {
			env, rc, err := sp.Open(id)
			if err != nil {
				continue
			}
			rc.Close()
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", id, env.Received.Format("2006-01-02 15:04:05"), env.Login, env.From, len(env.To), env.Size)
		}
		return tw.Flush()
	case "show":
		if len(pos) != 1 {
			return usagef("usage: sluice queue show ID")
		}
		env, rc, err := sp.Open(pos[0])
		if err != nil {
			return fmt.Errorf("message %s: %w", pos[0], err)
		}
		rc.Close()
		fmt.Fprintf(stdout, "id:       %s\nreceived: %s\nlogin:    %s\nfrom:     %s\nto:       %s\nsize:     %d\nclient:   %s\n",
			env.ID, env.Received.Format("2006-01-02 15:04:05 MST"), env.Login, env.From, strings.Join(env.To, ", "), env.Size, env.ClientIP)
		return nil
	}
	return usagef("unknown subcommand %q; use list or show", sub)
}
