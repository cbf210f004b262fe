// Package sqlauth is the SQL login backend: a hosting panel's own mailbox
// table in PostgreSQL (jackc/pgx) or MySQL/MariaDB (go-sql-driver/mysql),
// read with operator-written queries like Postfix's and maddy's:
//
//	password_query  returns the stored hash, optionally a second column
//	                "enabled" (0/1, false/true) of the login
//	grants_query    returns the addresses and @domains the login may send as
//	quota_query     returns the login's hourly limit (NULL: the default)
//
// Each query takes the login (lower-cased address) as its only parameter
// ($1 for PostgreSQL, ? for MySQL). Positive answers are cached for
// cache_ttl, keyed by the login and a keyed hash of the password, so a
// cached login costs no query and no password hash; a database that does
// not answer is a temporary failure, never a wrong password.
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
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

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
	CacheTTL      time.Duration
	Timeout       time.Duration
	MaxOpenConns  int
}

// Backend authenticates against the database.
type Backend struct {
	cfg Config
	db  *sql.DB
	key []byte

	mu    sync.Mutex
	cache map[string]cached

	// Queries counts database round trips (for tests and metrics).
	Queries func()
}

type cached struct {
	login   *submit.Login
	expires time.Time
}

// Open connects (lazily: a database that is down at start is retried at
// each login).
func Open(cfg Config) (*Backend, error) {
	driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[cfg.Driver]
	if driver == "" {
		return nil, fmt.Errorf("[auth.sql] driver %q: use \"postgres\" or \"mysql\"", cfg.Driver)
	}
	if cfg.PasswordQuery == "" {
		return nil, errors.New("[auth.sql] password_query is required")
	}
	db, err := sql.Open(driver, cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("[auth.sql] dsn: %w", err)
	}
	if cfg.MaxOpenConns <= 0 {
		cfg.MaxOpenConns = 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	db.SetMaxOpenConns(cfg.MaxOpenConns)
	db.SetMaxIdleConns(cfg.MaxOpenConns)
	db.SetConnMaxLifetime(10 * time.Minute)
	key := make([]byte, 32)
	rand.Read(key)
	return &Backend{cfg: cfg, db: db, key: key, cache: map[string]cached{}}, nil
}

// Close closes the pool.
func (b *Backend) Close() error { return b.db.Close() }

// ErrUnavailable wraps database failures.
var ErrUnavailable = errors.New("login database unavailable")

func (b *Backend) cacheKey(login, password string) string {
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(login))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return string(m.Sum(nil))
}

// Authenticate implements submit.Authenticator.
func (b *Backend) Authenticate(ctx context.Context, username, password string) (*submit.Login, error) {
	login := strings.ToLower(strings.TrimSpace(username))
	ck := b.cacheKey(login, password)
	if b.cfg.CacheTTL > 0 {
		b.mu.Lock()
		c, ok := b.cache[ck]
		b.mu.Unlock()
		if ok && time.Now().Before(c.expires) {
			l := *c.login
			return &l, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	hash, enabled, err := b.password(ctx, login)
	if errors.Is(err, sql.ErrNoRows) {
		userdb.CheckPassword(dummyHash, password)
		return nil, submit.ErrBadCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ok, err := userdb.CheckPassword(hash, password)
	if err != nil {
		return nil, fmt.Errorf("sqlauth: login %s: %w", login, err)
	}
	if !ok {
		return nil, submit.ErrBadCredentials
	}
	l := &submit.Login{Name: login, Disabled: !enabled}
	if !enabled {
		l.DisabledReason = "disabled in the hosting panel"
	}
	if b.cfg.GrantsQuery != "" {
		if l.Grants, err = b.grants(ctx, login); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	if b.cfg.QuotaQuery != "" {
		if l.Quota, err = b.quota(ctx, login); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	if b.cfg.CacheTTL > 0 {
		b.mu.Lock()
		if len(b.cache) > 100000 {
			b.cache = map[string]cached{}
		}
		b.cache[ck] = cached{login: l, expires: time.Now().Add(b.cfg.CacheTTL)}
		b.mu.Unlock()
	}
	return l, nil
}

func (b *Backend) counted() {
	if b.Queries != nil {
		b.Queries()
	}
}

func (b *Backend) password(ctx context.Context, login string) (string, bool, error) {
	b.counted()
	rows, err := b.db.QueryContext(ctx, b.cfg.PasswordQuery, login)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", false, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return "", false, err
		}
		return "", false, sql.ErrNoRows
	}
	var hash string
	enabled := true
	if len(cols) >= 2 {
		var en sql.NullString
		if err := rows.Scan(&hash, &en); err != nil {
			return "", false, err
		}
		switch strings.ToLower(en.String) {
		case "0", "f", "false", "no", "n":
			enabled = false
		}
	} else if err := rows.Scan(&hash); err != nil {
		return "", false, err
	}
	return hash, enabled, rows.Err()
}

func (b *Backend) grants(ctx context.Context, login string) ([]string, error) {
	b.counted()
	rows, err := b.db.QueryContext(ctx, b.cfg.GrantsQuery, login)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return nil, err
		}
		if n, err := userdb.NormaliseGrant(g); err == nil {
			out = append(out, n)
		}
	}
	return out, rows.Err()
}

func (b *Backend) quota(ctx context.Context, login string) (*int, error) {
	b.counted()
	var q sql.NullInt64
	err := b.db.QueryRowContext(ctx, b.cfg.QuotaQuery, login).Scan(&q)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !q.Valid {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	n := int(q.Int64)
	return &n, nil
}

var dummyHash, _ = userdb.HashPassword("sluice-timing-equaliser")

// Grants returns the login's grants and quota from the database (for
// logins Dovecot authenticates).
func (b *Backend) Grants(ctx context.Context, login string) ([]string, *int, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	login = strings.ToLower(login)
	var g []string
	var q *int
	var err error
	if b.cfg.GrantsQuery != "" {
		if g, err = b.grants(ctx, login); err != nil {
			return nil, nil, err
		}
	}
	if b.cfg.QuotaQuery != "" {
		if q, err = b.quota(ctx, login); err != nil {
			return nil, nil, err
		}
	}
	return g, q, nil
}
