// Package sqlauth is the SQL login backend: a hosting panel's own mailbox
// table in PostgreSQL (jackc/pgx) or MySQL/MariaDB (go-sql-driver/mysql),
// read with operator-written queries like Postfix's and maddy's:
//
//	password_query  returns the stored hash in its first column; further
//	                columns, by name: enabled (or active: 0/1, false/true),
//	                quota (the hourly limit, NULL: the default) and grants
//	                (addresses and @domains separated by commas or spaces,
//	                or a PostgreSQL text[]). An unnamed second column is
//	                taken as enabled.
//	grants_query    returns the addresses and @domains the login may send
//	                as, one a row (not needed when password_query returns
//	                grants)
//	quota_query     returns the login's hourly limit (not needed when
//	                password_query returns quota)
//
// Each query takes the login (lower-cased address) as its parameter: $1
// for PostgreSQL (as often as needed), ? for MySQL (each ? gets the login).
// One password_query that returns everything makes a login cost one query.
//
// Positive answers are cached for cache_ttl, keyed by the login and a
// keyed hash of the password, so a cached login costs no query and no
// password hash; a changed password or a disabled login is seen when the
// entry expires. Concurrent logins with the same credentials share one
// lookup. A database that does not answer is a temporary failure, never a
// wrong password.
package sqlauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql" // driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"

	"sluice/submit"
	"sluice/submit/userdb"
)

// Config is the [auth.sql] section.
type Config struct {
	Driver        string // "postgres" or "mysql"
	DSN           string
	PasswordQuery string
	GrantsQuery   string
	QuotaQuery    string
	CacheTTL      time.Duration // 0: no cache
	Timeout       time.Duration // per trip to the database; default 2s
	MaxOpenConns  int           // default 16
}

// maxCached bounds the cache; past it expired entries are swept, and if
// that is not enough the cache starts afresh.
const maxCached = 100000

// Backend authenticates against the database.
type Backend struct {
	cfg     Config
	db      *sql.DB
	key     []byte
	queries atomic.Uint64

	pwQ, grantsQ, quotaQ query

	mu      sync.Mutex
	cache   map[string]cached
	flights map[string]*flight
}

type cached struct {
	login   *submit.Login
	expires time.Time
}

// flight is one lookup that concurrent logins with the same credentials
// wait for.
type flight struct {
	done  chan struct{}
	login *submit.Login
	err   error
}

// Check reports what is wrong with the driver and the queries of cfg,
// without connecting: for configuration checks.
func Check(cfg Config) error {
	_, err := open(cfg, true)
	return err
}

// Open checks the configuration and prepares the pool. Connections are made
// lazily: a database that is down at start is tried again at each login.
func Open(cfg Config) (*Backend, error) { return open(cfg, false) }

func open(cfg Config, checkOnly bool) (*Backend, error) {
	driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[cfg.Driver]
	if driver == "" {
		return nil, fmt.Errorf("[auth.sql] driver %q: use \"postgres\" or \"mysql\"", cfg.Driver)
	}
	if strings.TrimSpace(cfg.PasswordQuery) == "" {
		return nil, errors.New("[auth.sql] password_query is required")
	}
	b := &Backend{cfg: cfg, cache: map[string]cached{}, flights: map[string]*flight{}}
	var err error
	if b.pwQ, err = newQuery(cfg.Driver, "password_query", cfg.PasswordQuery); err != nil {
		return nil, err
	}
	if b.grantsQ, err = newQuery(cfg.Driver, "grants_query", cfg.GrantsQuery); err != nil {
		return nil, err
	}
	if b.quotaQ, err = newQuery(cfg.Driver, "quota_query", cfg.QuotaQuery); err != nil {
		return nil, err
	}
	if checkOnly {
		return nil, nil
	}
	b.db, err = sql.Open(driver, cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("[auth.sql] dsn: %w", err)
	}
	if b.cfg.MaxOpenConns <= 0 {
		b.cfg.MaxOpenConns = 16
	}
	if b.cfg.Timeout <= 0 {
		b.cfg.Timeout = 2 * time.Second
	}
	b.db.SetMaxOpenConns(b.cfg.MaxOpenConns)
	b.db.SetMaxIdleConns(b.cfg.MaxOpenConns)
	b.db.SetConnMaxLifetime(10 * time.Minute)
	b.db.SetConnMaxIdleTime(5 * time.Minute)
	b.key = make([]byte, 32)
	if _, err := rand.Read(b.key); err != nil {
		return nil, err
	}
	return b, nil
}

// Close closes the pool.
func (b *Backend) Close() error { return b.db.Close() }

// Queries is the number of queries sent to the database so far.
func (b *Backend) Queries() uint64 { return b.queries.Load() }

// ErrUnavailable wraps database failures.
var ErrUnavailable = errors.New("login database unavailable")

func (b *Backend) cacheKey(login, password string) string {
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(login))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return string(m.Sum(nil))
}

// copyLogin returns a copy the caller may change.
func copyLogin(l *submit.Login) *submit.Login {
	c := *l
	c.Grants = append([]string(nil), l.Grants...)
	if l.Quota != nil {
		q := *l.Quota
		c.Quota = &q
	}
	return &c
}

// Authenticate implements submit.Authenticator.
func (b *Backend) Authenticate(ctx context.Context, username, password string) (*submit.Login, error) {
	login := strings.ToLower(strings.TrimSpace(username))
	if login == "" || strings.ContainsRune(login, 0) {
		return nil, submit.ErrBadCredentials
	}
	ck := b.cacheKey(login, password)
	now := time.Now()
	b.mu.Lock()
	if c, ok := b.cache[ck]; ok && now.Before(c.expires) {
		b.mu.Unlock()
		return copyLogin(c.login), nil
	}
	if f := b.flights[ck]; f != nil {
		b.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
		if f.err != nil {
			return nil, f.err
		}
		return copyLogin(f.login), nil
	}
	f := &flight{done: make(chan struct{})}
	b.flights[ck] = f
	b.mu.Unlock()

	f.login, f.err = b.lookup(ctx, login, password)

	b.mu.Lock()
	delete(b.flights, ck)
	// Only enabled logins are cached: enabling one in the panel takes
	// effect at the next login.
	if f.err == nil && b.cfg.CacheTTL > 0 && !f.login.Disabled {
		b.store(ck, f.login, now.Add(b.cfg.CacheTTL))
	}
	b.mu.Unlock()
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	return copyLogin(f.login), nil
}

// store adds an entry; b.mu is held.
func (b *Backend) store(ck string, l *submit.Login, expires time.Time) {
	if len(b.cache) >= maxCached {
		now := time.Now()
		for k, c := range b.cache {
			if !now.Before(c.expires) {
				delete(b.cache, k)
			}
		}
		if len(b.cache) >= maxCached {
			b.cache = map[string]cached{}
		}
	}
	b.cache[ck] = cached{login: l, expires: expires}
}

// lookup asks the database and checks the password. Each trip to the
// database has its own timeout; waiting for a CPU to hash on is not one
// (userdb.CheckPassword runs one verification per CPU at a time: hashing
// is CPU-bound, and an argon2id hash as PHP and doveadm write it takes
// 64 MiB).
func (b *Backend) lookup(ctx context.Context, login, password string) (*submit.Login, error) {
	qctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	rec, err := b.record(qctx, login)
	cancel()
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: password_query: %v", ErrUnavailable, err)
	}
	if err != nil { // unknown login: cost the same time as a wrong password
		userdb.CheckUnknown(password)
		return nil, submit.ErrBadCredentials
	}
	ok, err := userdb.CheckPassword(rec.hash, password)
	if err != nil {
		// A hash Sluice cannot read: the operator must fix the row. Not
		// "wrong password", since the password may be right.
		return nil, fmt.Errorf("sqlauth: login %s: %w", login, err)
	}
	if !ok {
		return nil, submit.ErrBadCredentials
	}
	l := &submit.Login{Name: login, Disabled: !rec.enabled, Grants: rec.grants, Quota: rec.quota}
	if !rec.enabled {
		l.DisabledReason = "disabled in the hosting panel"
		return l, nil
	}
	qctx, cancel = context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	if err := b.extra(qctx, login, rec, l); err != nil {
		return nil, err
	}
	return l, nil
}

// extra runs grants_query and quota_query unless password_query answered
// them already.
func (b *Backend) extra(ctx context.Context, login string, rec *record, l *submit.Login) error {
	var err error
	if b.grantsQ.text != "" && !rec.hasGrants {
		if l.Grants, err = b.grants(ctx, login); err != nil {
			return fmt.Errorf("%w: grants_query: %v", ErrUnavailable, err)
		}
	}
	if b.quotaQ.text != "" && !rec.hasQuota {
		if l.Quota, err = b.quota(ctx, login); err != nil {
			return fmt.Errorf("%w: quota_query: %v", ErrUnavailable, err)
		}
	}
	return nil
}

// Grants returns the login's grants and quota from the database (for
// logins Dovecot authenticates): from grants_query and quota_query, or
// from the grants and quota columns of password_query when those queries
// are not set. A login the database does not know has no grants.
func (b *Backend) Grants(ctx context.Context, login string) ([]string, *int, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	login = strings.ToLower(strings.TrimSpace(login))
	rec := &record{}
	needRecord := b.grantsQ.text == "" || b.quotaQ.text == ""
	if needRecord {
		r, err := b.record(ctx, login)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, nil, fmt.Errorf("%w: password_query: %v", ErrUnavailable, err)
		default:
			rec = r
		}
	}
	l := &submit.Login{Grants: rec.grants, Quota: rec.quota}
	if err := b.extra(ctx, login, rec, l); err != nil {
		return nil, nil, err
	}
	return l.Grants, l.Quota, nil
}
