package sqltest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Hash makes a stored password hash the way hosting panels and Dovecot
// make them, with the real tools:
//
//	bcrypt, argon2id            PHP password_hash ($2y$, $argon2id$)
//	SHA512-CRYPT, SHA256-CRYPT,
//	BLF-CRYPT, ARGON2ID         doveadm pw, with the {SCHEME} prefix
//	sha512crypt, sha256crypt    mkpasswd (glibc crypt), no prefix
//
// A missing tool fails the test under CI=true and skips it otherwise.
func Hash(t testing.TB, scheme, password string) string {
	t.Helper()
	var cmd *exec.Cmd
	switch scheme {
	case "bcrypt", "argon2id":
		php := tool(t, "php", "php-cli")
		algo := map[string]string{"bcrypt": "PASSWORD_BCRYPT", "argon2id": "PASSWORD_ARGON2ID"}[scheme]
		cmd = exec.Command(php, "-r", "echo password_hash($argv[1], "+algo+");", "--", password)
	case "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID":
		doveadm := tool(t, "doveadm", "dovecot-core")
		conf := filepath.Join(t.TempDir(), "empty.conf") // not the system's config
		if err := os.WriteFile(conf, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(doveadm, "-c", conf, "pw", "-s", scheme, "-p", password)
	case "sha512crypt", "sha256crypt":
		cmd = exec.Command(tool(t, "mkpasswd", "whois"), "-m", scheme, "--", password)
	default:
		t.Fatalf("sqltest.Hash: unknown scheme %q", scheme)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name, debianPackage)
	}
	return p
}

// schema is a hosting panel's mailbox tables, in SQL both databases read:
// mailbox (login, hash, active, hourly quota), sender_grant (further
// addresses a mailbox may send as) and domain_admin (whole domains).
const schema = `
CREATE TABLE mailbox (
	username VARCHAR(255) PRIMARY KEY,
	password VARCHAR(255) NOT NULL,
	active BOOLEAN NOT NULL DEFAULT TRUE,
	hourly_quota INTEGER NULL
);
CREATE TABLE sender_grant (
	username VARCHAR(255) NOT NULL REFERENCES mailbox (username) ON DELETE CASCADE,
	address VARCHAR(255) NOT NULL
);
CREATE TABLE domain_admin (
	username VARCHAR(255) NOT NULL REFERENCES mailbox (username) ON DELETE CASCADE,
	domain VARCHAR(255) NOT NULL
)`

// CreateSchema creates the panel tables.
func (s *Server) CreateSchema() {
	s.t.Helper()
	for _, stmt := range strings.Split(schema, ";") {
		s.Exec(stmt)
	}
}

var dollarN = regexp.MustCompile(`\$[0-9]+`)

// Placeholder turns a query written with $1, $2... into the driver's
// form (? for MySQL, in order).
func (s *Server) Placeholder(q string) string {
	if s.Driver == "mysql" {
		return dollarN.ReplaceAllString(q, "?")
	}
	return q
}

// Markers in the queries below, for Statements.
const (
	MarkPassword = "sluice-pw"
	MarkGrants   = "sluice-grants"
	MarkQuota    = "sluice-quota"
	MarkOne      = "sluice-one"
)

// Queries are an operator's [auth.sql] queries for the panel schema.
type Queries struct {
	Password, Grants, Quota string
}

// SeparateQueries are three queries: the hash and active flag, the
// grants (addresses and @domains), the hourly quota.
func (s *Server) SeparateQueries() Queries {
	return Queries{
		Password: s.Placeholder("SELECT password, active FROM mailbox WHERE username = $1 /* " + MarkPassword + " */"),
		Grants: s.Placeholder("SELECT address FROM sender_grant WHERE username = $1 " +
			"UNION ALL SELECT CONCAT('@', domain) FROM domain_admin WHERE username = $1 /* " + MarkGrants + " */"),
		Quota: s.Placeholder("SELECT hourly_quota FROM mailbox WHERE username = $1 /* " + MarkQuota + " */"),
	}
}

// OneQuery is one password_query that returns everything (enabled,
// quota and grants columns): a login costs one query. PostgreSQL returns
// the grants as a text[] array, MySQL as a comma-separated list.
func (s *Server) OneQuery() Queries {
	if s.Driver == "mysql" {
		return Queries{Password: "SELECT m.password, m.active AS enabled, m.hourly_quota AS quota, " +
			"CONCAT_WS(',', (SELECT GROUP_CONCAT(g.address) FROM sender_grant g WHERE g.username = m.username), " +
			"(SELECT GROUP_CONCAT(CONCAT('@', d.domain)) FROM domain_admin d WHERE d.username = m.username)) AS grants " +
			"FROM mailbox m WHERE m.username = ? /* " + MarkOne + " */"}
	}
	return Queries{Password: "SELECT m.password, m.active AS enabled, m.hourly_quota AS quota, " +
		"ARRAY(SELECT g.address FROM sender_grant g WHERE g.username = m.username " +
		"UNION ALL SELECT CONCAT('@', d.domain) FROM domain_admin d WHERE d.username = m.username) AS grants " +
		"FROM mailbox m WHERE m.username = $1 /* " + MarkOne + " */"}
}

// AddMailbox inserts a mailbox with its grants ("a@x" or "@domain").
// quota < 0 stores NULL (the default).
func (s *Server) AddMailbox(username, hash string, active bool, quota int, grants ...string) {
	s.t.Helper()
	var q any
	if quota >= 0 {
		q = quota
	}
	s.Exec(s.Placeholder("INSERT INTO mailbox (username, password, active, hourly_quota) VALUES ($1, $2, $3, $4)"), username, hash, active, q)
	for _, g := range grants {
		if strings.HasPrefix(g, "@") {
			s.Exec(s.Placeholder("INSERT INTO domain_admin (username, domain) VALUES ($1, $2)"), username, g[1:])
		} else {
			s.Exec(s.Placeholder("INSERT INTO sender_grant (username, address) VALUES ($1, $2)"), username, g)
		}
	}
}
