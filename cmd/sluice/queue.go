package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"sluice/relay/spool"
)

const queueUsage = `usage:
  sluice queue list [--login L] [--domain D]
  sluice queue held
  sluice queue show ID
  sluice queue retry ID | --all
  sluice queue hold ID [--reason TEXT]
  sluice queue release ID
  sluice queue delete ID`

// cmdQueue works on the data dir of a running (or stopped) server: it
// changes the message's state file and asks the server, if it runs, to
// reread the queue.
func cmdQueue(args []string, stdout io.Writer) error {
	sc, err := newSubcommand("queue", args, queueUsage, "list", "show", "held", "retry", "hold", "release", "delete")
	if err != nil {
		return err
	}
	sub, fs := sc.name, sc.fs
	login := fs.String("login", "", "only messages of this login")
	domain := fs.String("domain", "", "only messages with a recipient in this domain")
	all := fs.Bool("all", false, "every message")
	reason := fs.String("reason", "held by the operator", "why the message is held")
	pos, err := sc.parse(args)
	if err != nil {
		return err
	}
	cfg, err := sc.config()
	if err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"))
	if err != nil {
		return err
	}
	kick := func() {
		if _, err := callControl(cfg, controlRequest{Cmd: "queue-kick"}); err != nil {
			fmt.Fprintln(stdout, "(no running server answered; the change applies when it starts)")
		}
	}
	one := func() (string, *spool.Envelope, *spool.State, error) {
		if len(pos) != 1 {
			return "", nil, nil, usagef("%s", queueUsage)
		}
		id := strings.ToUpper(pos[0])
		env, rc, err := sp.Open(id)
		if errors.Is(err, spool.ErrNotFound) {
			return "", nil, nil, fmt.Errorf("no message %s in the queue (delivered, bounced or deleted?)", id)
		}
		if err != nil {
			return "", nil, nil, err
		}
		rc.Close()
		st, err := sp.LoadState(id, env)
		return id, env, st, err
	}
	switch sub {
	case "list":
		ids, err := sp.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRECEIVED\tLOGIN\tFROM\tPENDING\tATTEMPTS\tNEXT TRY\tSTATE")
		for _, id := range ids {
			env, rc, err := sp.Open(id)
			if err != nil {
				continue
			}
			rc.Close()
			if *login != "" && !strings.EqualFold(env.Login, *login) {
				continue
			}
			if *domain != "" && !hasDomain(env.To, *domain) {
				continue
			}
			st, _ := sp.LoadState(id, env)
			state, next := "queued", st.NextTry.UTC().Format("15:04:05")
			if st.Held {
				state, next = "held", "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", id, env.Received.UTC().Format("2006-01-02 15:04:05"), env.Login, orNull(env.From),
				len(st.Pending()), len(env.To), st.Attempts, next, state)
		}
		return tw.Flush()
	case "held":
		ids, err := sp.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRECEIVED\tLOGIN\tRCPTS\tRULE AND REASON")
		for _, id := range ids {
			env, rc, err := sp.Open(id)
			if err != nil {
				continue
			}
			rc.Close()
			st, _ := sp.LoadState(id, env)
			if !st.Held {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", id, env.Received.UTC().Format("2006-01-02 15:04:05"), env.Login, len(env.To), st.HeldWhy)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "release with `sluice queue release ID`, drop with `sluice queue delete ID`")
		return nil
	case "show":
		id, env, st, err := one()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "id:        %s\nreceived:  %s\nlogin:     %s\nfrom:      %s\nsize:      %d\nclient:    %s\nattempts:  %d\nnext try:  %s\n",
			id, env.Received.UTC().Format(time.RFC1123), env.Login, orNull(env.From), env.Size, env.ClientIP, st.Attempts, st.NextTry.UTC().Format(time.RFC1123))
		if st.Held {
			fmt.Fprintf(stdout, "held:      %s\n", st.HeldWhy)
		}
		for _, r := range st.Rcpts {
			fmt.Fprintf(stdout, "rcpt %s: %s, %d attempts", r.Addr, r.Status, r.Attempts)
			if r.LastReply != "" {
				fmt.Fprintf(stdout, ", last reply from %s: %s", orDash(r.LastHost), r.LastReply)
			}
			fmt.Fprintln(stdout)
		}
		return nil
	case "retry":
		var ids []string
		if *all {
			if ids, err = sp.List(); err != nil {
				return err
			}
		} else {
			id, _, _, err := one()
			if err != nil {
				return err
			}
			ids = []string{id}
		}
		scheduled, held := 0, 0
		for _, id := range ids {
			env, rc, err := sp.Open(id)
			if err != nil {
				continue
			}
			rc.Close()
			st, err := sp.LoadState(id, env)
			if err != nil {
				continue
			}
			if st.Held {
				held++
				continue
			}
			st.NextTry = time.Now()
			if err := sp.SaveState(id, st); err != nil {
				return err
			}
			scheduled++
		}
		kick()
		fmt.Fprintf(stdout, "%d message(s) scheduled for delivery now\n", scheduled)
		if held > 0 {
			fmt.Fprintf(stdout, "%d held message(s) left alone: release them with sluice queue release ID\n", held)
		}
		return nil
	case "hold", "release":
		id, _, st, err := one()
		if err != nil {
			return err
		}
		st.Held = sub == "hold"
		st.HeldWhy = ""
		if st.Held {
			st.HeldWhy = *reason
		} else {
			st.NextTry = time.Now()
		}
		if err := sp.SaveState(id, st); err != nil {
			return err
		}
		kick()
		fmt.Fprintf(stdout, "%s %s\n", id, map[string]string{"hold": "held", "release": "released"}[sub])
		return nil
	case "delete":
		id, _, _, err := one()
		if err != nil {
			return err
		}
		if err := sp.Remove(id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s deleted (no bounce is sent)\n", id)
		return nil
	}
	return usagef("%s", queueUsage)
}

func hasDomain(rcpts []string, d string) bool {
	for _, r := range rcpts {
		if strings.EqualFold(r[strings.LastIndexByte(r, '@')+1:], d) {
			return true
		}
	}
	return false
}

func orNull(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
