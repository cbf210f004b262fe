package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"sluice/submit"
	"sluice/submit/dovecotauth"
	"sluice/submit/sqlauth"
	"sluice/submit/userdb"
)

// authChain builds the login backends of [auth] backends, in order.
func authChain(cfg *Config, users *userdb.File) (submit.Authenticator, func(), error) {
	var chain submit.Chain
	var sqlb *sqlauth.Backend
	closeAll := func() {
		if sqlb != nil {
			sqlb.Close()
		}
	}
	openSQL := func() (*sqlauth.Backend, error) {
		if sqlb != nil {
			return sqlb, nil
		}
		b, err := sqlauth.Open(sqlauth.Config{Driver: cfg.Auth.SQL.Driver, DSN: cfg.Auth.SQL.DSN,
			PasswordQuery: cfg.Auth.SQL.PasswordQuery, GrantsQuery: cfg.Auth.SQL.GrantsQuery, QuotaQuery: cfg.Auth.SQL.QuotaQuery,
			CacheTTL: cfg.Auth.SQL.CacheTTL.Duration, Timeout: cfg.Auth.SQL.Timeout.Duration})
		sqlb = b
		return b, err
	}
	for i, name := range cfg.Auth.Backends {
		switch name {
		case "file":
			if i < len(cfg.Auth.Backends)-1 {
				// Another backend follows and equalises the time of an
				// unknown login; the file need not hash for it too.
				chain = append(chain, fileThenOthers{users})
			} else {
				chain = append(chain, users)
			}
		case "sql":
			b, err := openSQL()
			if err != nil {
				return nil, closeAll, err
			}
			chain = append(chain, b)
		case "dovecot":
			c := &dovecotauth.Client{Addr: cfg.Auth.Dovecot.Socket, Service: cfg.Auth.Dovecot.Service, Timeout: cfg.Auth.Dovecot.Timeout.Duration}
			switch cfg.Auth.Dovecot.Grants {
			case "file":
				c.Grants = dovecotauth.FileGrants(users)
			case "sql":
				b, err := openSQL()
				if err != nil {
					return nil, closeAll, err
				}
				c.Grants = b
			}
			chain = append(chain, c)
		default:
			return nil, closeAll, fmt.Errorf("[auth] unknown backend %q", name)
		}
	}
	if len(chain) == 1 {
		return chain[0], closeAll, nil
	}
	return chain, closeAll, nil
}

// fileThenOthers is the user file when another backend follows it: a
// login that is not in the file is passed on at once, without the dummy
// hash that hides unknown logins (the last backend does that), so an SQL
// or Dovecot login does not pay for an argon2id hash first.
type fileThenOthers struct{ f *userdb.File }

func (b fileThenOthers) Authenticate(ctx context.Context, username, password string) (*submit.Login, error) {
	if _, err := b.f.Get(username); errors.Is(err, userdb.ErrNotFound) {
		return nil, submit.ErrBadCredentials
	}
	return b.f.Authenticate(ctx, username, password)
}

// What the user file is to the configured backends.
const (
	roleLogins = "logins" // "file" is a backend: logins with passwords
	roleGrants = "grants" // Dovecot checks passwords, the file holds grants
	roleNone   = ""       // not used: every backend is read-only for Sluice
)

func userFileRole(cfg *Config) string {
	role := roleNone
	for _, b := range cfg.Auth.Backends {
		switch {
		case b == "file":
			return roleLogins
		case b == "dovecot" && cfg.Auth.Dovecot.Grants == "file":
			role = roleGrants
		}
	}
	return role
}

// readOnlyBackends is the one line `sluice user` answers when no backend
// it can write is configured.
func readOnlyBackends(cfg *Config) error {
	var where []string
	for _, b := range cfg.Auth.Backends {
		switch b {
		case "sql":
			where = append(where, "the hosting panel's database")
		case "dovecot":
			where = append(where, "Dovecot's passdb")
		}
	}
	return fmt.Errorf("logins come from [auth] backends = %s, which Sluice only reads; manage them in %s, or add \"file\" to [auth] backends",
		strings.Join(cfg.Auth.Backends, ", "), strings.Join(where, " and "))
}

// nonFileBackends are the configured backends other than the user file.
func nonFileBackends(cfg *Config) []string {
	var others []string
	for _, b := range cfg.Auth.Backends {
		if b != "file" {
			others = append(others, b)
		}
	}
	return others
}

// backendNames lists nonFileBackends; "" when the file is the only backend.
func backendNames(cfg *Config) string { return strings.Join(nonFileBackends(cfg), ", ") }

// otherBackends says where else a login not in the user file may live,
// for "no login" messages; "" when the file is the only backend.
func otherBackends(cfg *Config) string {
	others := nonFileBackends(cfg)
	if len(others) == 0 {
		return ""
	}
	return fmt.Sprintf(" in the user file (logins of the %s backend are managed there, not with sluice user)", strings.Join(others, " and "))
}
