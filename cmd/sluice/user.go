package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sluice/submit/userdb"
)

const userUsage = `usage:
  sluice user add ADDRESS [--password-stdin] [--grant ADDRESS|@DOMAIN ...] [--quota N]
  sluice user set ADDRESS [--grant ...] [--revoke ...] [--quota N]
  sluice user list
  sluice user show ADDRESS
  sluice user passwd ADDRESS [--password-stdin]
  sluice user disable ADDRESS [--reason TEXT]
  sluice user enable ADDRESS
  sluice user delete ADDRESS`

func cmdUser(args []string, stdin io.Reader, stdout io.Writer) error {
	sc, err := newSubcommand("user", args, userUsage, "add", "set", "list", "show", "passwd", "disable", "enable", "delete")
	if err != nil {
		return err
	}
	sub, fs := sc.name, sc.fs
	pwStdin := fs.Bool("password-stdin", false, "read the password from standard input")
	quota := fs.String("quota", "", "recipients per hour for this login: N, 0 for unlimited, or \"default\"")
	reason := fs.String("reason", "", "why the login is disabled")
	var grants, revokes multiFlag
	fs.Var(&grants, "grant", "address or @domain the login may send as")
	fs.Var(&revokes, "revoke", "grant to remove")
	pos, err := sc.parse(args)
	if err != nil {
		return err
	}
	q, err := parseQuota(*quota)
	if err != nil {
		return err
	}
	cfg, err := sc.config()
	if err != nil {
		return err
	}
	role := userFileRole(cfg)
	switch {
	case role == roleNone && sub != "show" && sub != "enable":
		// show and enable also serve logins of read-only backends: they
		// read and lift Sluice's own suspension of them.
		return readOnlyBackends(cfg)
	case role == roleGrants && (sub == "passwd" || *pwStdin):
		return errors.New("Dovecot checks the passwords of these logins ([auth] backends has no \"file\"); change the password in Dovecot's passdb")
	}
	noLogin := func(addr string) error { return fmt.Errorf("no login %s%s", addr, otherBackends(cfg)) }
	var db *userdb.File
	if role != roleNone {
		if db, err = userdb.Open(cfg.usersFile()); err != nil {
			return err
		}
	}
	needAddr := func() (string, error) {
		if len(pos) != 1 {
			return "", usagef("%s needs exactly one ADDRESS\n%s", sub, userUsage)
		}
		a := strings.ToLower(strings.TrimSpace(pos[0]))
		if err := userdb.CheckAddress(a); err != nil {
			return "", usagef("%v", err)
		}
		return a, nil
	}
	normGrants := func(in []string) ([]string, error) {
		var out []string
		for _, g := range in {
			n, err := userdb.NormaliseGrant(g)
			if err != nil {
				return nil, usagef("%v", err)
			}
			out = append(out, n)
		}
		return out, nil
	}

	switch sub {
	case "add":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		gs, err := normGrants(grants)
		if err != nil {
			return err
		}
		pw, hash, generated, err := newPassword(*pwStdin, stdin)
		if err != nil {
			return err
		}
		if role == roleGrants {
			// The entry holds grants and quota; Dovecot checks the
			// password, so the random one here is never used or shown.
			generated = false
		}
		err = db.Update(func(users map[string]*userdb.User) error {
			if users[addr] != nil {
				return fmt.Errorf("login %s exists already; use 'sluice user set' or 'sluice user passwd'", addr)
			}
			u := &userdb.User{Address: addr, Hash: hash, Grants: gs, Created: time.Now().UTC()}
			if *quota != "" {
				u.Quota = q
			}
			users[addr] = u
			return nil
		})
		if err != nil {
			return err
		}
		if role == roleGrants {
			fmt.Fprintf(stdout, "added login %s (grants and quota; Dovecot checks its password)\n", addr)
		} else {
			fmt.Fprintf(stdout, "added login %s\n", addr)
		}
		if generated {
			fmt.Fprintf(stdout, "password: %s\n", pw)
		}
		return nil
	case "set":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		gs, err := normGrants(grants)
		if err != nil {
			return err
		}
		rs, err := normGrants(revokes)
		if err != nil {
			return err
		}
		return db.Update(func(users map[string]*userdb.User) error {
			u := users[addr]
			if u == nil {
				return fmt.Errorf("%w; add it with 'sluice user add %s'", noLogin(addr), addr)
			}
			for _, g := range gs {
				if !contains(u.Grants, g) {
					u.Grants = append(u.Grants, g)
				}
			}
			var kept []string
			for _, g := range u.Grants {
				if !contains(rs, g) {
					kept = append(kept, g)
				}
			}
			u.Grants = kept
			if *quota != "" {
				u.Quota = q
			}
			fmt.Fprintf(stdout, "updated login %s\n", addr)
			return nil
		})
	case "list":
		list, err := db.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LOGIN\tSTATE\tQUOTA\tGRANTS")
		for _, u := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Address, state(u), quotaText(u.Quota), strings.Join(u.Grants, " "))
		}
		return tw.Flush()
	case "show":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		return userShow(cfg, db, addr, stdout)
	case "passwd":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		pw, hash, generated, err := newPassword(*pwStdin, stdin)
		if err != nil {
			return err
		}
		err = db.Update(func(users map[string]*userdb.User) error {
			u := users[addr]
			if u == nil {
				return noLogin(addr)
			}
			u.Hash = hash
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password of %s changed\n", addr)
		if generated {
			fmt.Fprintf(stdout, "password: %s\n", pw)
		}
		return nil
	case "enable":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		return userEnable(cfg, db, addr, stdout)
	case "disable":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		err = db.Update(func(users map[string]*userdb.User) error {
			u := users[addr]
			if u == nil {
				return noLogin(addr)
			}
			u.Disabled, u.Suspended, u.Reason = true, false, *reason
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "login %s disabled\n", addr)
		return nil
	case "delete":
		addr, err := needAddr()
		if err != nil {
			return err
		}
		err = db.Update(func(users map[string]*userdb.User) error {
			if users[addr] == nil {
				return noLogin(addr)
			}
			delete(users, addr)
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "login %s deleted\n", addr)
		return nil
	}
	return usagef("unknown subcommand %q\n%s", sub, userUsage)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func state(u *userdb.User) string {
	if u.Disabled {
		return "disabled"
	}
	return "enabled"
}

func quotaText(q *int) string {
	switch {
	case q == nil:
		return "default"
	case *q == 0:
		return "unlimited"
	}
	return fmt.Sprint(*q)
}

// parseQuota reads --quota: "" (not given), "default", or a number >= 0.
func parseQuota(s string) (*int, error) {
	if s == "" || s == "default" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return nil, usagef("--quota %q: give a number of recipients per hour, 0 for unlimited, or \"default\"", s)
	}
	return &n, nil
}

// The length a password may have, for `sluice user` and the admin API.
const minPasswordLen, maxPasswordLen = 8, 1024

// newPassword is the password of `user add` and `user passwd`
// (obtainPassword) with its hash for the user file.
func newPassword(fromStdin bool, stdin io.Reader) (pw, hash string, generated bool, err error) {
	if pw, generated, err = obtainPassword(fromStdin, stdin); err != nil {
		return "", "", false, err
	}
	if hash, err = userdb.HashPassword(pw); err != nil {
		return "", "", false, err
	}
	return pw, hash, generated, nil
}

// obtainPassword reads one line from stdin, or generates a strong password
// that the caller prints once.
func obtainPassword(fromStdin bool, stdin io.Reader) (string, bool, error) {
	if !fromStdin {
		const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
		b := make([]byte, 20)
		for i := range b {
			n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
			if err != nil {
				return "", false, err
			}
			b[i] = alphabet[n.Int64()]
		}
		return string(b), true, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", false, usagef("--password-stdin: no password on standard input")
	}
	pw := strings.TrimRight(line, "\r\n")
	if len(pw) < minPasswordLen {
		return "", false, usagef("the password must be at least %d characters", minPasswordLen)
	}
	if len(pw) > maxPasswordLen {
		return "", false, usagef("the password is longer than %d characters", maxPasswordLen)
	}
	return pw, false, nil
}

// userShow prints a login of the user file, or, with other backends
// configured, what Sluice knows of a login of theirs: whether the
// compromise rule suspended it (the suspension store: Redis, or
// data_dir/suspended.json).
func userShow(cfg *Config, db *userdb.File, addr string, stdout io.Writer) error {
	var u *userdb.User
	if db != nil {
		var err error
		if u, err = db.Get(addr); errors.Is(err, userdb.ErrNotFound) {
			u = nil
		} else if err != nil {
			return err
		}
	}
	store, closeStore, err := openSuspensions(cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	sus, liftedAt, serr := store.State(context.Background(), addr)
	if u == nil && sus == nil && serr == nil {
		return noSuspension(cfg, db, addr, "")
	}
	staleFile := liftedElsewhere(u, sus, liftedAt)
	if u != nil {
		st := state(u)
		switch {
		case sus != nil:
			st = "suspended"
		case staleFile:
			st = "enabled"
		}
		fmt.Fprintf(stdout, "login:   %s\nstate:   %s\nquota:   %s\ngrants:  %s\ncreated: %s\n",
			u.Address, st, quotaText(u.Quota), strings.Join(u.Grants, " "), u.Created.Format(time.RFC3339))
	} else {
		st := "not suspended by Sluice"
		if sus != nil {
			st = "suspended"
		}
		fmt.Fprintf(stdout, "login:   %s\nbackend: %s (not in the user file; Sluice only reads it)\nstate:   %s\n", addr, backendNames(cfg), st)
	}
	switch {
	case staleFile:
		fmt.Fprintf(stdout, "lifted:  %s (the suspension was lifted through another instance; this user file is updated at the login's next AUTH)\n", liftedAt.UTC().Format(time.RFC3339))
	case u != nil && u.Reason != "":
		fmt.Fprintf(stdout, "reason:  %s\n", u.Reason)
	case sus != nil:
		fmt.Fprintf(stdout, "reason:  %s\n", sus.Reason)
	}
	if sus != nil {
		fmt.Fprintf(stdout, "since:   %s\n", sus.Since.UTC().Format(time.RFC3339))
	}
	if serr != nil {
		return fmt.Errorf("the suspension store did not answer, so a suspension of %s is not shown: %v", addr, serr)
	}
	return nil
}

// noSuspension is the error for a login the user file does not hold and
// Sluice has not suspended.
func noSuspension(cfg *Config, db *userdb.File, addr, what string) error {
	if db == nil {
		return fmt.Errorf("no suspension of %s%s by Sluice; %v", addr, what, readOnlyBackends(cfg))
	}
	if backendNames(cfg) == "" {
		return fmt.Errorf("no login %s", addr)
	}
	return fmt.Errorf("no login %s in the user file and no suspension of it%s (logins of the %s backend are managed there, not with sluice user)", addr, what, backendNames(cfg))
}

// userEnable enables a login of the user file and lifts its suspension
// everywhere: in the file and in the suspension store (with Redis, for
// every instance). For a login of a read-only backend (SQL, Dovecot) it
// only lifts Sluice's suspension: a login disabled there stays disabled.
// If the store cannot answer, nothing is changed.
func userEnable(cfg *Config, db *userdb.File, addr string, stdout io.Writer) error {
	inFile := false
	if db != nil {
		if _, err := db.Get(addr); err == nil {
			inFile = true
		} else if !errors.Is(err, userdb.ErrNotFound) {
			return err
		}
	}
	store, closeStore, err := openSuspensions(cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	if !inFile && backendNames(cfg) == "" {
		return fmt.Errorf("no login %s", addr)
	}
	lifted, err := store.Lift(context.Background(), addr)
	if err != nil {
		return fmt.Errorf("the suspension store did not answer, nothing was changed; try again: %v", err)
	}
	where := storeWhere(store)
	if !inFile {
		if !lifted {
			return noSuspension(cfg, db, addr, " to lift")
		}
		fmt.Fprintf(stdout, "suspension of login %s lifted %s\n", addr, where)
		fmt.Fprintf(stdout, "the %s backend is read-only for Sluice: enable only lifted Sluice's suspension; a login disabled there stays disabled\n", backendNames(cfg))
		return nil
	}
	if _, err := enableInFile(db, addr, true); err != nil {
		if lifted {
			return fmt.Errorf("suspension lifted %s, but the user file was not changed: %w", where, err)
		}
		return err
	}
	fmt.Fprintf(stdout, "login %s enabled\n", addr)
	if lifted {
		fmt.Fprintf(stdout, "suspension lifted %s\n", where)
	}
	return nil
}
