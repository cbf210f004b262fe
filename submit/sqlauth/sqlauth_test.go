package sqlauth

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/submit"
	"sluice/submit/sqlauth/sqltest"
)

func TestNewQuery(t *testing.T) {
	cases := []struct {
		name, driver, q string
		args            int
		err             string
	}{
		{"pg $1", "postgres", "SELECT password FROM mailbox WHERE username = $1", 1, ""},
		{"pg $1 twice", "postgres", "SELECT a FROM x WHERE u = $1 UNION SELECT b FROM y WHERE u = $1", 1, ""},
		{"pg $2", "postgres", "SELECT a FROM x WHERE u = $1 AND d = $2", 0, "uses $2"},
		{"pg none", "postgres", "SELECT a FROM x", 0, "no $1"},
		{"pg $1 only in a string", "postgres", "SELECT '$1' FROM x", 0, "no $1"},
		{"pg $1 only in a comment", "postgres", "SELECT a FROM x -- $1", 0, "no $1"},
		{"pg $1 after a block comment", "postgres", "SELECT a /* $2 */ FROM x WHERE u = $1", 1, ""},
		{"pg dollar quoting", "postgres", "SELECT $$x$$ FROM x WHERE u = $1", 1, ""},
		{"mysql one ?", "mysql", "SELECT password FROM mailbox WHERE username = ?", 1, ""},
		{"mysql two ?", "mysql", "SELECT a FROM x WHERE u = ? UNION SELECT b FROM y WHERE u = ?", 2, ""},
		{"mysql ? in strings", "mysql", `SELECT 'a?', "b?", 'it''s?', 'esc\'?' FROM x WHERE u = ?`, 1, ""},
		{"mysql ? in comments", "mysql", "SELECT a FROM x # ?\nWHERE u = ? -- ?\n/* ? */", 1, ""},
		{"mysql none", "mysql", "SELECT a FROM x", 0, "no ?"},
		{"empty", "mysql", "  ", 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := newQuery(c.driver, "password_query", c.q)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "[auth.sql] password_query") {
					t.Fatalf("error %v, want one naming [auth.sql] password_query and %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q.args != c.args {
				t.Fatalf("%d parameters, want %d", q.args, c.args)
			}
		})
	}
}

func TestParseColumns(t *testing.T) {
	grants := []struct{ in, want string }{
		{"a@example.test,@example.org", "a@example.test @example.org"},
		{"{a@example.test,\"b@example.test\"}", "a@example.test b@example.test"},
		{" A@Example.TEST ;\n@x.test ", "a@example.test @x.test"},
		{"{}", ""},
		{"not-an-address,@nodot", ""},
	}
	for _, c := range grants {
		t.Run("grants "+c.in, func(t *testing.T) {
			if got := strings.Join(parseGrants(c.in, nil), " "); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
	for _, c := range []struct {
		in   string
		want bool
	}{{"1", true}, {"true", true}, {"t", true}, {"0", false}, {"false", false}, {"f", false}, {"N", false}, {"off", false}} {
		if truthy(c.in) != c.want {
			t.Errorf("truthy(%q) = %v", c.in, !c.want)
		}
	}
	for _, c := range []struct {
		in    sql.NullString
		want  string
		error bool
	}{
		{sql.NullString{}, "default", false},
		{sql.NullString{Valid: true, String: "40"}, "40", false},
		{sql.NullString{Valid: true, String: "0"}, "0", false},
		{sql.NullString{Valid: true, String: "-1"}, "default", false},
		{sql.NullString{Valid: true, String: "lots"}, "", true},
	} {
		q, err := parseQuota(c.in)
		got := quotaString(q)
		if (err != nil) != c.error || err == nil && got != c.want {
			t.Errorf("parseQuota(%+v) = %s, %v; want %s (error %v)", c.in, got, err, c.want, c.error)
		}
	}
}

// panelUser is a mailbox of the test panel.
type panelUser struct {
	login, password, scheme string
	active                  bool
	quota                   int // < 0: NULL
	grants                  []string
}

// hashUsers are one mailbox a stored hash format, hashed by the tool a
// panel or Dovecot would use.
var hashUsers = []panelUser{
	{"bcrypt@panel.test", "Grüße aus Köln 1", "bcrypt", true, 25, []string{"info@panel.test", "@shop.test"}},
	{"argon2id@panel.test", "argon pass 2", "argon2id", true, -1, nil},
	{"sha512@panel.test", "sha512 pass 3", "SHA512-CRYPT", true, 0, nil},
	{"sha256@panel.test", "sha256 pass 4", "SHA256-CRYPT", true, -1, nil},
	{"blf@panel.test", "blowfish pass 5", "BLF-CRYPT", true, -1, nil},
	{"dvargon@panel.test", "dovecot argon 6", "ARGON2ID", true, -1, nil},
	{"crypt6@panel.test", "glibc crypt 7", "sha512crypt", true, -1, nil},
	{"crypt5@panel.test", "glibc crypt 8", "sha256crypt", true, -1, nil},
}

// startPanel starts one database with the panel schema and mailboxes.
func startPanel(t *testing.T, driver string, users ...panelUser) *sqltest.Server {
	t.Helper()
	var s *sqltest.Server
	if driver == "postgres" {
		s = sqltest.StartPostgres(t)
	} else {
		s = sqltest.StartMariaDB(t)
	}
	s.CreateSchema()
	for _, u := range users {
		s.AddMailbox(u.login, sqltest.Hash(t, u.scheme, u.password), u.active, u.quota, u.grants...)
	}
	return s
}

func openBackend(t *testing.T, s *sqltest.Server, q sqltest.Queries, ttl time.Duration) *Backend {
	t.Helper()
	b, err := Open(Config{Driver: s.Driver, DSN: s.DSN, PasswordQuery: q.Password, GrantsQuery: q.Grants,
		QuotaQuery: q.Quota, CacheTTL: ttl, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestDatabases(t *testing.T) {
	for _, driver := range []string{"postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) { testDatabase(t, driver) })
	}
}

func testDatabase(t *testing.T, driver string) {
	users := append(slices.Clone(hashUsers),
		panelUser{"off@panel.test", "disabled pass 9", "bcrypt", false, -1, nil},
		panelUser{"plain@panel.test", "plain pass 10", "bcrypt", true, -1, nil},
	)
	s := startPanel(t, driver, users...)
	s.Exec(s.Placeholder("UPDATE mailbox SET password = $1 WHERE username = $2"), "{PLAIN}plain pass 10", "plain@panel.test")
	ctx := context.Background()

	for _, form := range []struct {
		name    string
		q       sqltest.Queries
		perMiss int
	}{
		{"separate queries", s.SeparateQueries(), 3},
		{"one query", s.OneQuery(), 1},
	} {
		t.Run(form.name, func(t *testing.T) {
			b := openBackend(t, s, form.q, time.Minute)
			for _, u := range hashUsers {
				t.Run(u.scheme, func(t *testing.T) {
					before := b.Queries()
					l, err := b.Authenticate(ctx, strings.ToUpper(u.login), u.password)
					if err != nil {
						t.Fatalf("right password: %v", err)
					}
					if n := b.Queries() - before; n != uint64(form.perMiss) {
						t.Errorf("%d queries for a cache miss, want %d", n, form.perMiss)
					}
					if l.Name != u.login || l.Disabled {
						t.Errorf("login %+v", l)
					}
					wantQuota := "default"
					if u.quota >= 0 {
						wantQuota = strconv.Itoa(u.quota)
					}
					if got := quotaString(l.Quota); got != wantQuota {
						t.Errorf("quota %s, want %s", got, wantQuota)
					}
					for _, g := range u.grants {
						addr := g
						if strings.HasPrefix(g, "@") {
							addr = "anyone" + g
						}
						if !l.Owns(addr) {
							t.Errorf("login %+v does not own %s", l, addr)
						}
					}
					if !l.Owns(u.login) || l.Owns("x@elsewhere.test") || len(l.Grants) != len(u.grants) {
						t.Errorf("grants %v, want %v", l.Grants, u.grants)
					}
					if _, err := b.Authenticate(ctx, u.login, u.password+"x"); !errors.Is(err, submit.ErrBadCredentials) {
						t.Errorf("wrong password: %v", err)
					}
				})
			}
			t.Run("unknown login", func(t *testing.T) {
				if _, err := b.Authenticate(ctx, "nobody@panel.test", "whatever"); !errors.Is(err, submit.ErrBadCredentials) {
					t.Fatalf("got %v", err)
				}
			})
			t.Run("disabled", func(t *testing.T) {
				for i := 0; i < 2; i++ { // not cached: asked again
					before := b.Queries()
					l, err := b.Authenticate(ctx, "off@panel.test", "disabled pass 9")
					if err != nil || !l.Disabled || l.DisabledReason == "" {
						t.Fatalf("got %+v, %v; want a disabled login", l, err)
					}
					if b.Queries() == before {
						t.Fatal("a disabled login was answered from the cache")
					}
				}
				if _, err := b.Authenticate(ctx, "off@panel.test", "wrong"); !errors.Is(err, submit.ErrBadCredentials) {
					t.Fatalf("disabled login, wrong password: %v", err)
				}
			})
			t.Run("unreadable hash", func(t *testing.T) {
				l, err := b.Authenticate(ctx, "plain@panel.test", "plain pass 10")
				if err == nil || errors.Is(err, submit.ErrBadCredentials) || !strings.Contains(err.Error(), "{PLAIN}") {
					t.Fatalf("got %+v, %v; want an error naming the scheme", l, err)
				}
			})
			t.Run("grants for dovecot", func(t *testing.T) {
				g, q, err := b.Grants(ctx, "BCRYPT@panel.test")
				if err != nil || len(g) != 2 || quotaString(q) != "25" {
					t.Fatalf("got %v %s %v", g, quotaString(q), err)
				}
				if g, q, err := b.Grants(ctx, "nobody@panel.test"); err != nil || g != nil || q != nil {
					t.Fatalf("unknown login: %v %v %v", g, q, err)
				}
			})
		})
	}

	t.Run("more than one row", func(t *testing.T) {
		b := openBackend(t, s, sqltest.Queries{Password: s.Placeholder(
			"SELECT m.password FROM mailbox m, mailbox m2 WHERE m.username = $1")}, 0)
		if _, err := b.Authenticate(ctx, "bcrypt@panel.test", hashUsers[0].password); err == nil || errors.Is(err, submit.ErrBadCredentials) {
			t.Fatalf("got %v, want an error", err)
		}
	})

	t.Run("cache", func(t *testing.T) {
		const ttl = 2 * time.Second
		b := openBackend(t, s, s.OneQuery(), ttl)
		u := hashUsers[0]
		stmts := s.Statements(sqltest.MarkOne)
		start := time.Now()
		if _, err := b.Authenticate(ctx, u.login, u.password); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Authenticate(ctx, u.login, u.password); err != nil {
			t.Fatal(err)
		}
		if n := s.Statements(sqltest.MarkOne) - stmts; n != 1 {
			t.Fatalf("the database ran %d queries for a miss and a hit, want 1", n)
		}
		for i := 0; i < 2; i++ {
			if _, err := b.Authenticate(ctx, u.login, "wrong password"); !errors.Is(err, submit.ErrBadCredentials) {
				t.Fatal(err)
			}
		}
		if n := s.Statements(sqltest.MarkOne) - stmts; n != 3 {
			t.Fatalf("wrong passwords: %d queries in all, want 3 (a wrong password is never cached)", n)
		}

		// The panel changes the password: the new one works at once, the
		// old one until its entry expires, and not after.
		s.Exec(s.Placeholder("UPDATE mailbox SET password = $1 WHERE username = $2"), sqltest.Hash(t, "bcrypt", "changed pw 11"), u.login)
		if _, err := b.Authenticate(ctx, u.login, "changed pw 11"); err != nil {
			t.Fatalf("new password: %v", err)
		}
		deadline := time.Now().Add(ttl + 10*time.Second)
		for {
			_, err := b.Authenticate(ctx, u.login, u.password)
			if errors.Is(err, submit.ErrBadCredentials) {
				if time.Since(start) < ttl {
					t.Fatalf("old password refused after %v, before the cache TTL %v", time.Since(start), ttl)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("old password still accepted %v after it was changed (cache TTL %v)", time.Since(start), ttl)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("concurrent misses share one query", func(t *testing.T) {
		b := openBackend(t, s, s.OneQuery(), time.Minute)
		u := hashUsers[2]
		stmts := s.Statements(sqltest.MarkOne)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := b.Authenticate(ctx, u.login, u.password); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := s.Statements(sqltest.MarkOne) - stmts; n != 1 {
			t.Fatalf("20 concurrent logins cost %d queries, want 1", n)
		}
	})

	t.Run("database down", func(t *testing.T) {
		b := openBackend(t, s, s.SeparateQueries(), time.Minute)
		cached := hashUsers[1]
		if _, err := b.Authenticate(ctx, cached.login, cached.password); err != nil {
			t.Fatal(err)
		}
		s.Stop()
		u := hashUsers[2]
		for _, pw := range []string{u.password, "wrong password"} {
			start := time.Now()
			l, err := b.Authenticate(ctx, u.login, pw)
			if l != nil || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("password %q with the database down: %+v, %v; want ErrUnavailable", pw, l, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to notice the database is down (timeout 2s)", d)
			}
		}
		if _, _, err := b.Grants(ctx, u.login); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Grants with the database down: %v", err)
		}
		if _, err := b.Authenticate(ctx, cached.login, cached.password); err != nil {
			t.Fatalf("a cached login with the database down: %v", err)
		}
		s.Start()
		if _, err := b.Authenticate(ctx, u.login, u.password); err != nil {
			t.Fatalf("first login after the database restarted: %v", err)
		}
		if _, err := b.Authenticate(ctx, u.login, "wrong password"); !errors.Is(err, submit.ErrBadCredentials) {
			t.Fatalf("wrong password after restart: %v", err)
		}
	})
}

func quotaString(q *int) string {
	if q == nil {
		return "default"
	}
	return strconv.Itoa(*q)
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		err  string
	}{
		{"ok", Config{Driver: "postgres", PasswordQuery: "SELECT password FROM mailbox WHERE username = $1"}, ""},
		{"driver", Config{Driver: "sqlite", PasswordQuery: "SELECT 1 WHERE x = ?"}, `driver "sqlite"`},
		{"no password_query", Config{Driver: "mysql"}, "password_query is required"},
		{"grants_query without ?", Config{Driver: "mysql", PasswordQuery: "SELECT p FROM m WHERE u = ?", GrantsQuery: "SELECT a FROM g"}, "grants_query has no ?"},
		{"quota_query with $2", Config{Driver: "postgres", PasswordQuery: "SELECT p FROM m WHERE u = $1", QuotaQuery: "SELECT q FROM m WHERE u = $1 AND d = $2"}, "quota_query uses $2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(c.cfg)
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("Check: %v, want %q", err, c.err)
			}
		})
	}
}

// FuzzPlaceholders: any query text is counted without a panic, and a
// query whose only ? sits in a string or comment has none.
func FuzzPlaceholders(f *testing.F) {
	f.Add("SELECT a FROM x WHERE u = ? -- ?\n")
	f.Add("SELECT '$1' /* $2 */ FROM x WHERE u = $1")
	f.Add("'unterminated ? \\")
	f.Fuzz(func(t *testing.T, q string) {
		for _, driver := range []string{"mysql", "postgres"} {
			n, maxN := placeholders(driver, q)
			if n < 0 || maxN < 0 || driver == "mysql" && n > strings.Count(q, "?") {
				t.Fatalf("%s %q: %d placeholders (max $%d)", driver, q, n, maxN)
			}
		}
		if n, _ := placeholders("mysql", "SELECT '"+strings.ReplaceAll(strings.ReplaceAll(q, "\\", ""), "'", "")+"'"); n != 0 {
			t.Fatalf("a ? inside a string literal counted: %q", q)
		}
	})
}
