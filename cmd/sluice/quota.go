package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"sluice/submit/userdb"
)

const quotaUsage = `usage:
  sluice quota show LOGIN [--json]
  sluice quota reset LOGIN`

// cmdQuota works against the running configuration's store: Redis directly
// when redis_url is set, otherwise the running server over its control
// socket.
func cmdQuota(args []string, stdout io.Writer) error {
	sc, err := newSubcommand("quota", args, quotaUsage, "show", "reset")
	if err != nil {
		return err
	}
	sub := sc.name
	asJSON := sc.fs.Bool("json", false, "print JSON")
	pos, err := sc.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || !strings.Contains(pos[0], "@") {
		return usagef("%s", quotaUsage)
	}
	login := strings.ToLower(pos[0])
	cfg, err := sc.config()
	if err != nil {
		return err
	}
	ctx := context.Background()
	var rep *quotaReport
	switch sub {
	case "show":
		if cfg.Quota.RedisURL != "" {
			st, err := openStores(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				return err
			}
			defer st.Close()
			var override *int
			if db, err := userdb.Open(cfg.usersFile()); err == nil {
				if u, err := db.Get(login); err == nil {
					override = u.Quota
				}
			}
			if rep, err = quotaShow(ctx, st.quota, cfg, login, override); err != nil {
				return err
			}
		} else {
			resp, err := callControl(cfg, controlRequest{Cmd: "quota-show", Login: login})
			if err != nil {
				return err
			}
			rep = resp.Quota
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(rep)
		}
		limit := fmt.Sprint(rep.Limit)
		if rep.Limit == 0 {
			limit = "unlimited"
		}
		fmt.Fprintf(stdout, "login:    %s\nlimit:    %s recipients per %s\nused:     %d\nreserved: %d\n", rep.Login, limit, humanWindow(cfg.Quota.Window.Duration), rep.Used, rep.Reserved)
		if rep.Resets != "" {
			fmt.Fprintf(stdout, "frees up: %s (oldest charge leaves the window)\n", rep.Resets)
		}
		if rep.DomainLimit > 0 {
			fmt.Fprintf(stdout, "domain:   %d of %d used\n", rep.DomainUsed, rep.DomainLimit)
		}
		return nil
	case "reset":
		if cfg.Quota.RedisURL != "" {
			st, err := openStores(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				return err
			}
			defer st.Close()
			if err := quotaReset(ctx, st.quota, login); err != nil {
				return err
			}
		} else if _, err := callControl(cfg, controlRequest{Cmd: "quota-reset", Login: login}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "quota of %s reset\n", login)
		return nil
	}
	return usagef("%s", quotaUsage)
}

// humanWindow writes a quota window as people say it: "hour", "10 minutes".
func humanWindow(d time.Duration) string {
	switch {
	case d == time.Hour:
		return "hour"
	case d%time.Hour == 0:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}
