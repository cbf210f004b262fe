package main

import (
	"fmt"

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
	for _, name := range cfg.Auth.Backends {
		switch name {
		case "file":
			chain = append(chain, users)
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
				c.Grants = users
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

// fileBackendConfigured says whether `sluice user` may write logins.
func fileBackendConfigured(cfg *Config) bool {
	for _, b := range cfg.Auth.Backends {
		if b == "file" {
			return true
		}
	}
	return false
}
