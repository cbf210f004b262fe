package main

// Logins from a hosting platform: the real sluice binary with [auth]
// backends = ["sql"] against a real PostgreSQL and MariaDB, and
// ["dovecot"] against a real Dovecot, driven with swaks.

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/submit/dovecotauth/dovecottest"
	"sluice/submit/sqlauth/sqltest"
)

// paSwaks runs swaks over STARTTLS with AUTH. quitAfter "AUTH" stops
// after the login; "" sends a message from `from` to the recipients.
func paSwaks(t *testing.T, addr, mech, user, pass, from, quitAfter string, to ...string) result {
	t.Helper()
	if len(to) == 0 {
		to = []string{"rcpt@remote.test"}
	}
	var extra []string
	if quitAfter != "" {
		extra = []string{"--quit-after", quitAfter}
	}
	return swaks(t, addr, "--tls", mech, testUser{addr: user, password: pass}, from, strings.Join(to, ","),
		"platform auth", "hello from the platform test", extra...)
}

// paReplied asserts that swaks saw a reply with this code and enhanced
// code (and text, when given).
func paReplied(t *testing.T, r result, code, enhanced, text string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^<~?[* ] ?` + regexp.QuoteMeta(code+" "+enhanced) + ` (.*)$`)
	m := re.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("want a %s %s reply:\n%s", code, enhanced, r)
	}
	if !strings.Contains(m[1], text) {
		t.Fatalf("reply %q does not say %q:\n%s", m[0], text, r)
	}
}

// paAuthOK asserts a successful AUTH (235) and, when a message was sent,
// returns its queue id.
func paAuthOK(t *testing.T, r result, sent bool) string {
	t.Helper()
	if !regexp.MustCompile(`(?m)^<~  235 2\.0\.0 `).MatchString(r.stdout) {
		t.Fatalf("AUTH did not succeed:\n%s", r)
	}
	if !sent {
		return ""
	}
	return queueID(t, r.stdout)
}

type paMailbox struct {
	login, password, scheme string
	active                  bool
	quota                   int // < 0: NULL, the default
	grants                  []string
}

var paMailboxes = []paMailbox{
	{"shop@panel.test", "shop pass 1", "bcrypt", true, -1, []string{"info@panel.test", "@shop.test"}},
	{"argon@panel.test", "argon pass 2", "argon2id", true, -1, nil},
	{"dove@panel.test", "dove pass 3", "SHA512-CRYPT", true, -1, nil},
	{"limited@panel.test", "limited pass 4", "bcrypt", true, 3, nil},
	{"off@panel.test", "off pass 5", "bcrypt", false, -1, nil},
	{"cache@panel.test", "cache pass 6", "bcrypt", true, -1, nil},
	{"fresh@panel.test", "fresh pass 7", "SHA512-CRYPT", true, -1, nil},
}

// paSQLConfig is the [auth] part of the sluice configuration for db.
func paSQLConfig(db *sqltest.Server, q sqltest.Queries, ttl time.Duration) string {
	return fmt.Sprintf(`backends = ["sql"]

[auth.sql]
driver = %q
dsn = %q
password_query = '''%s'''
grants_query = '''%s'''
quota_query = '''%s'''
cache_ttl = %q
timeout = "2s"
`, db.Driver, db.DSN, q.Password, q.Grants, q.Quota, ttl.String())
}

func TestPASQLLogins(t *testing.T) {
	requireTool(t, "swaks", "swaks")
	for _, c := range []struct {
		name  string
		start func(testing.TB) *sqltest.Server
		one   bool   // one password_query returns everything
		mark  string // marker of the password query, to count it
	}{
		{"postgres", sqltest.StartPostgres, true, sqltest.MarkOne},
		{"mariadb", sqltest.StartMariaDB, false, sqltest.MarkPassword},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := c.start(t)
			db.CreateSchema()
			for _, m := range paMailboxes {
				db.AddMailbox(m.login, sqltest.Hash(t, m.scheme, m.password), m.active, m.quota, m.grants...)
			}
			q := db.SeparateQueries()
			if c.one {
				q = db.OneQuery()
			}
			const ttl = 3 * time.Second
			s := startServerWith(t, paSQLConfig(db, q, ttl))
			paSQLScenario(t, s, db, c.mark, ttl)
		})
	}
}

func paSQLScenario(t *testing.T, s *sluiceServer, db *sqltest.Server, mark string, ttl time.Duration) {
	addr := s.submission
	mb := func(login string) paMailbox {
		for _, m := range paMailboxes {
			if m.login == login {
				return m
			}
		}
		t.Fatalf("no mailbox %s", login)
		return paMailbox{}
	}

	t.Run("hash formats", func(t *testing.T) {
		for _, login := range []string{"shop@panel.test", "argon@panel.test", "dove@panel.test"} {
			m := mb(login)
			for _, mech := range []string{"PLAIN", "LOGIN"} {
				t.Run(m.scheme+" "+mech, func(t *testing.T) {
					id := paAuthOK(t, paSwaks(t, addr, mech, m.login, m.password, m.login, ""), true)
					sp := readSpooled(t, s.dataDir, id)
					if sp.env.Login != m.login || sp.env.From != m.login {
						t.Errorf("spooled as login %q from %q, want %s", sp.env.Login, sp.env.From, m.login)
					}
					r := paSwaks(t, addr, mech, m.login, m.password+" wrong", m.login, "AUTH")
					paReplied(t, r, "535", "5.7.8", "")
				})
			}
		}
		r := paSwaks(t, addr, "PLAIN", "nobody@panel.test", "shop pass 1", "nobody@panel.test", "AUTH")
		paReplied(t, r, "535", "5.7.8", "")
	})

	t.Run("grants", func(t *testing.T) {
		m := mb("shop@panel.test")
		for _, from := range []string{"info@panel.test", "sales@shop.test"} {
			paAuthOK(t, paSwaks(t, addr, "PLAIN", m.login, m.password, from, ""), true)
		}
		r := paSwaks(t, addr, "PLAIN", m.login, m.password, "someone@other.test", "")
		paReplied(t, r, "553", "5.7.1", "sender someone@other.test is not an address of login shop@panel.test")
	})

	t.Run("quota", func(t *testing.T) {
		m := mb("limited@panel.test") // hourly_quota 3 in the panel
		paAuthOK(t, paSwaks(t, addr, "PLAIN", m.login, m.password, m.login, "", "a@remote.test", "b@remote.test", "c@remote.test"), true)
		r := paSwaks(t, addr, "PLAIN", m.login, m.password, m.login, "", "d@remote.test")
		paReplied(t, r, "451", "4.7.1", "has sent its 3 messages")
	})

	t.Run("disabled", func(t *testing.T) {
		m := mb("off@panel.test")
		r := paSwaks(t, addr, "PLAIN", m.login, m.password, m.login, "AUTH")
		paReplied(t, r, "535", "5.7.8", "login off@panel.test is disabled")
	})

	t.Run("cache", func(t *testing.T) {
		m := mb("cache@panel.test")
		before := db.Statements(mark)
		start := time.Now()
		paAuthOK(t, paSwaks(t, addr, "PLAIN", m.login, m.password, m.login, "AUTH"), false)
		paAuthOK(t, paSwaks(t, addr, "LOGIN", m.login, m.password, m.login, "AUTH"), false)
		if d := time.Since(start); d >= ttl {
			t.Fatalf("two swaks runs took %v, longer than the cache TTL %v: the machine is too slow for this test", d, ttl)
		}
		if n := db.Statements(mark) - before; n != 1 {
			t.Fatalf("two logins within the cache TTL ran the password query %d times, want 1", n)
		}
		db.Exec(db.Placeholder("UPDATE mailbox SET password = $1 WHERE username = $2"), sqltest.Hash(t, "bcrypt", "cache pass 8"), m.login)
		paAuthOK(t, paSwaks(t, addr, "PLAIN", m.login, "cache pass 8", m.login, "AUTH"), false)
		// The old password lives on in the cache until the TTL, no longer.
		deadline := time.Now().Add(ttl + 15*time.Second)
		for {
			r := paSwaks(t, addr, "PLAIN", m.login, m.password, m.login, "AUTH")
			if strings.Contains(r.stdout, "535 5.7.8") {
				if d := time.Since(start); d < ttl {
					t.Fatalf("the old password was refused %v after the first login, within the cache TTL %v", d, ttl)
				}
				break
			}
			paAuthOK(t, r, false)
			if time.Now().After(deadline) {
				t.Fatalf("the old password is still accepted %v after it was changed (cache TTL %v)", time.Since(start), ttl)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("database down", func(t *testing.T) {
		m := mb("fresh@panel.test") // never logged in: not in the cache
		db.Stop()
		for _, pw := range []string{m.password, "a wrong password"} {
			r := paSwaks(t, addr, "PLAIN", m.login, pw, m.login, "AUTH")
			paReplied(t, r, "454", "4.7.0", "try again")
			for _, internal := range []string{" 535 ", "sqlauth", "password_query", "refused", "dial", db.Addr} {
				if strings.Contains(r.stdout, internal) {
					t.Fatalf("the client sees %q with the database down:\n%s", internal, r)
				}
			}
		}
		db.Start()
		id := paAuthOK(t, paSwaks(t, addr, "PLAIN", m.login, m.password, m.login, ""), true)
		readSpooled(t, s.dataDir, id)
		if !strings.Contains(s.stderr.String(), "authentication backend unavailable") {
			t.Errorf("the outage is not in Sluice's log:\n%s", s.stderr.String())
		}
	})
}

func TestPADovecotLogins(t *testing.T) {
	requireTool(t, "swaks", "swaks")
	dv := dovecottest.Start(t,
		dovecottest.User{Name: "alice@dove.test", Password: "alice dove 1"},
		dovecottest.User{Name: "bob@dove.test", Password: "bob dove 2", Scheme: "BLF-CRYPT"},
		dovecottest.User{Name: "closed@dove.test", Password: "closed dove 3", Extra: "nologin reason=closed"},
	)
	conf := func(socket string) string {
		return fmt.Sprintf("backends = [\"dovecot\"]\n\n[auth.dovecot]\nsocket = %q\ngrants = \"file\"\ntimeout = \"3s\"\n", socket)
	}
	s := startServerWith(t, conf(dv.Socket))
	addr := s.submission
	// Grants of a Dovecot login live in the user file.
	if r := s.cli("user", "add", "alice@dove.test", "--grant", "@alias.test"); r.exit != 0 || !strings.Contains(r.stdout, "Dovecot checks its password") || strings.Contains(r.stdout, "password:") {
		t.Fatalf("sluice user add for a Dovecot login:\n%s", r)
	}
	if r := s.cli("user", "passwd", "alice@dove.test"); r.exit != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "Dovecot checks the passwords") {
		t.Fatalf("sluice user passwd for a Dovecot login: want one line and exit 1:\n%s", r)
	}

	t.Run("as Dovecot decides", func(t *testing.T) {
		cases := []struct {
			name, mech, user, pass string
			ok                     bool
		}{
			{"PLAIN", "PLAIN", "alice@dove.test", "alice dove 1", true},
			{"LOGIN", "LOGIN", "alice@dove.test", "alice dove 1", true},
			{"bcrypt hash", "LOGIN", "bob@dove.test", "bob dove 2", true},
			{"PLAIN wrong password", "PLAIN", "alice@dove.test", "alice dove 2", false},
			{"LOGIN wrong password", "LOGIN", "bob@dove.test", "alice dove 1", false},
			{"unknown user", "PLAIN", "carol@dove.test", "alice dove 1", false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if !c.ok {
					paReplied(t, paSwaks(t, addr, c.mech, c.user, c.pass, c.user, "AUTH"), "535", "5.7.8", "")
					return
				}
				id := paAuthOK(t, paSwaks(t, addr, c.mech, c.user, c.pass, c.user, ""), true)
				if sp := readSpooled(t, s.dataDir, id); sp.env.Login != c.user {
					t.Errorf("spooled as login %q, want %s", sp.env.Login, c.user)
				}
			})
		}
		r := paSwaks(t, addr, "PLAIN", "closed@dove.test", "closed dove 3", "closed@dove.test", "AUTH")
		paReplied(t, r, "535", "5.7.8", "login closed@dove.test is disabled")
	})

	t.Run("grants from the user file", func(t *testing.T) {
		paAuthOK(t, paSwaks(t, addr, "PLAIN", "alice@dove.test", "alice dove 1", "news@alias.test", ""), true)
		r := paSwaks(t, addr, "PLAIN", "bob@dove.test", "bob dove 2", "news@alias.test", "")
		paReplied(t, r, "553", "5.7.1", "sender news@alias.test is not an address of login bob@dove.test")
		// sluice user disable works on a Dovecot login through its entry.
		if r := s.cli("user", "disable", "alice@dove.test"); r.exit != 0 {
			t.Fatalf("sluice user disable:\n%s", r)
		}
		paReplied(t, paSwaks(t, addr, "PLAIN", "alice@dove.test", "alice dove 1", "alice@dove.test", "AUTH"), "535", "5.7.8", "is disabled")
		if r := s.cli("user", "enable", "alice@dove.test"); r.exit != 0 {
			t.Fatalf("sluice user enable:\n%s", r)
		}
		paAuthOK(t, paSwaks(t, addr, "PLAIN", "alice@dove.test", "alice dove 1", "alice@dove.test", "AUTH"), false)
	})

	t.Run("TCP listener", func(t *testing.T) {
		s2 := startServerWith(t, conf(dv.Addr))
		paAuthOK(t, paSwaks(t, s2.submission, "LOGIN", "bob@dove.test", "bob dove 2", "bob@dove.test", "AUTH"), false)
		paReplied(t, paSwaks(t, s2.submission, "PLAIN", "bob@dove.test", "wrong", "bob@dove.test", "AUTH"), "535", "5.7.8", "")
	})

	t.Run("Dovecot down", func(t *testing.T) {
		dv.Stop()
		for _, pw := range []string{"alice dove 1", "wrong"} {
			r := paSwaks(t, addr, "PLAIN", "alice@dove.test", pw, "alice@dove.test", "AUTH")
			paReplied(t, r, "454", "4.7.0", "try again")
		}
		dv.Start()
		paAuthOK(t, paSwaks(t, addr, "PLAIN", "alice@dove.test", "alice dove 1", "alice@dove.test", "AUTH"), false)
	})
}

// TestPAUserCommandsReadOnly: with only read-only backends every `sluice
// user` command says so in one line and exits 1; with "file" among them,
// the file is written and a login that lives elsewhere is named so.
func TestPAUserCommandsReadOnly(t *testing.T) {
	dir := t.TempDir()
	write := func(name, auth string) string {
		p := filepath.Join(dir, name)
		cfg := fmt.Sprintf("data_dir = %q\n\n[auth]\n%s", filepath.Join(dir, name+".data"), auth)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const sql = `
[auth.sql]
driver = "postgres"
dsn = "postgres://sluice@127.0.0.1:9/panel"
password_query = "SELECT password FROM mailbox WHERE username = $1"
`
	const dovecot = "\n[auth.dovecot]\nsocket = \"/nonexistent/auth-client\"\ngrants = \"sql\"\n"
	readOnly := []struct{ backends, cfg string }{
		{"sql", write("sql.toml", "backends = [\"sql\"]\n"+sql)},
		{"dovecot", write("dovecot.toml", "backends = [\"dovecot\"]\n"+dovecot+sql)},
		{"sql, dovecot", write("both.toml", "backends = [\"sql\", \"dovecot\"]\n"+dovecot+sql)},
		{"dovecot", write("none.toml", "backends = [\"dovecot\"]\n\n[auth.dovecot]\nsocket = \"127.0.0.1:9\"\ngrants = \"none\"\n")},
	}
	cmds := [][]string{
		{"add", "x@panel.test"}, {"set", "x@panel.test", "--grant", "@panel.test"}, {"list"}, {"show", "x@panel.test"},
		{"passwd", "x@panel.test"}, {"disable", "x@panel.test"}, {"enable", "x@panel.test"}, {"delete", "x@panel.test"},
	}
	for _, ro := range readOnly {
		for _, c := range cmds {
			t.Run(filepath.Base(ro.cfg)+" "+c[0], func(t *testing.T) {
				r := runCommand(t, dir, cleanEnv(), "a long enough password\n", sluiceBin, append(append([]string{"user"}, c...), "--config", ro.cfg)...)
				if r.exit != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
					!strings.Contains(r.stderr, "which Sluice only reads") || !strings.Contains(r.stderr, "backends = "+ro.backends+",") {
					t.Fatalf("want one line naming the read-only backends and exit 1:\n%s", r)
				}
			})
		}
	}

	mixed := write("mixed.toml", "backends = [\"sql\", \"file\"]\n"+sql)
	r := runCommand(t, dir, cleanEnv(), "a long enough password\n", sluiceBin, "user", "add", "local@panel.test", "--password-stdin", "--config", mixed)
	if r.exit != 0 || !strings.Contains(r.stdout, "added login local@panel.test") {
		t.Fatalf("sluice user add with \"file\" among the backends:\n%s", r)
	}
	r = runCommand(t, dir, cleanEnv(), "", sluiceBin, "user", "delete", "panel-only@panel.test", "--config", mixed)
	if r.exit != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "no login panel-only@panel.test in the user file (logins of the sql backend are managed there") {
		t.Fatalf("deleting a login the file does not hold:\n%s", r)
	}
}

// TestPAAuthLatency measures AUTH PLAIN through the real server with the
// SQL backend (PostgreSQL, one query a login, bcrypt hashes as PHP makes
// them): 50 concurrent clients, each session STARTTLS then AUTH, cold
// (every login a cache miss) and cached. Next to each AUTH the client
// times a NOOP on the same connection, so "cached AUTH minus NOOP" is what
// the login costs beyond the round trip. A measurement, not a check:
//
//	SLUICE_AUTH_BENCH=1 go test -count=1 -run TestPAAuthLatency -v ./cmd/sluice
func TestPAAuthLatency(t *testing.T) {
	if os.Getenv("SLUICE_AUTH_BENCH") != "1" {
		t.Skip("a measurement: set SLUICE_AUTH_BENCH=1 to run it")
	}
	const (
		workers = 50
		logins  = 500
		rounds  = 3
		pw      = "bench password 1"
	)
	db := sqltest.StartPostgres(t)
	db.CreateSchema()
	db.Exec(`INSERT INTO mailbox (username, password, active) SELECT 'u' || i || '@bench.test', $1, true FROM generate_series(1, $2::int) AS i`,
		sqltest.Hash(t, "bcrypt", pw), logins)
	s := startServerWith(t, paSQLConfig(db, db.OneQuery(), time.Hour))

	run := func(passes int) (auth, noop []time.Duration) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		jobs := make(chan string)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for login := range jobs {
					a, n, err := paTimedAuth(s.submission, login, pw)
					if err != nil {
						t.Error(err)
						continue
					}
					mu.Lock()
					auth, noop = append(auth, a), append(noop, n)
					mu.Unlock()
				}
			}()
		}
		for p := 0; p < passes; p++ {
			for i := 1; i <= logins; i++ {
				jobs <- fmt.Sprintf("u%d@bench.test", i)
			}
		}
		close(jobs)
		wg.Wait()
		return auth, noop
	}
	stmts := db.Statements(sqltest.MarkOne)
	coldAuth, coldNoop := run(1)
	perMiss := float64(db.Statements(sqltest.MarkOne)-stmts) / logins
	stmts = db.Statements(sqltest.MarkOne)
	hotAuth, hotNoop := run(rounds)
	hotQueries := db.Statements(sqltest.MarkOne) - stmts
	fmt.Printf("AUTH PLAIN through sluice serve, SQL backend (PostgreSQL, bcrypt cost 10), %d concurrent clients:\n", workers)
	fmt.Printf("  cold   (%4d): AUTH p50 %v p99 %v; NOOP p50 %v p99 %v; %.2f queries per miss\n",
		len(coldAuth), paPct(coldAuth, 50), paPct(coldAuth, 99), paPct(coldNoop, 50), paPct(coldNoop, 99), perMiss)
	fmt.Printf("  cached (%4d): AUTH p50 %v p99 %v; NOOP p50 %v p99 %v; %d queries\n",
		len(hotAuth), paPct(hotAuth, 50), paPct(hotAuth, 99), paPct(hotNoop, 50), paPct(hotNoop, 99), hotQueries)
}

// paTimedAuth opens a session, STARTTLS, and times a NOOP and AUTH PLAIN.
func paTimedAuth(addr, user, pass string) (auth, noop time.Duration, err error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if err := c.Hello("bench.sluice.test"); err != nil {
		return 0, 0, err
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := c.Noop(); err != nil {
		return 0, 0, err
	}
	noop = time.Since(start)
	host, _, _ := net.SplitHostPort(addr)
	start = time.Now()
	if err := c.Auth(smtp.PlainAuth("", user, pass, host)); err != nil {
		return 0, 0, fmt.Errorf("AUTH %s: %w", user, err)
	}
	auth = time.Since(start)
	c.Quit()
	return auth, noop, nil
}

func paPct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := max((len(s)*p+99)/100-1, 0)
	return s[i].Round(10 * time.Microsecond)
}
