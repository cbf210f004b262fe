package main

// Real mail clients against a running sluice: swaks, PHPMailer (php-cli),
// Python's smtplib and msmtp. Each must be installed; see requireTool.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSwaks: swaks over STARTTLS and implicit TLS, with AUTH PLAIN and
// LOGIN, gets "250 2.0.0 Ok: queued as ID" and ID is in the spool.
func TestSwaks(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks", "swaks")
	s := startServer(t, alice)
	for _, tc := range []struct{ name, mode, mech string }{
		{"starttls-plain", "--tls", "PLAIN"},
		{"starttls-login", "--tls", "LOGIN"},
		{"implicit-tls-plain", "--tlsc", "PLAIN"},
		{"implicit-tls-login", "--tlsc", "LOGIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := expectMessage{login: alice.addr, from: alice.addr, to: []string{"bob@remote.test"},
				subject: "swaks " + tc.name, body: []string{"hello from swaks " + tc.name}}
			r := swaks(t, addrFor(s, tc.mode), tc.mode, tc.mech, alice, alice.addr, "bob@remote.test", want.subject, want.body[0])
			if r.exit != 0 {
				t.Fatalf("swaks:\n%s", r)
			}
			if !regexp.MustCompile(`(?m)^<~  235 2\.0\.0 `).MatchString(r.stdout) {
				t.Errorf("no \"235 2.0.0\" reply to AUTH %s:\n%s", tc.mech, r.stdout)
			}
			id := queueID(t, r.stdout)
			checkSpooled(t, s.dataDir, id, want)
		})
	}
}

const phpmailerDir = "/usr/share/php/libphp-phpmailer"

// phpmailerResult is what testdata/phpmailer_send.php prints, key=value.
type phpmailerResult struct {
	result, transactionID, dataReply, errorInfo string
}

func runPHPMailer(t *testing.T, s *sluiceServer, secure, addr string, u testUser, from, to, subject, body string) (phpmailerResult, result) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, r := runPHPMailerScript(t, "phpmailer_send.php",
		"SMTP_HOST="+host, "SMTP_PORT="+port, "SMTP_SECURE="+secure,
		"SMTP_USER="+u.addr, "SMTP_PASS="+u.password,
		"MAIL_FROM="+from, "MAIL_TO="+to, "MAIL_SUBJECT="+subject, "MAIL_BODY="+body)
	return phpmailerResult{result: out["result"], transactionID: out["transaction_id"], dataReply: out["data_reply"], errorInfo: out["error"]}, r
}

// runPHPMailerScript runs testdata/script with php-cli and PHPMailer, env
// added to the environment, and returns the key=value lines it printed;
// one of them must be result=.
func runPHPMailerScript(t *testing.T, script string, env ...string) (map[string]string, result) {
	t.Helper()
	php := requireTool(t, "php", "php-cli")
	requireFile(t, filepath.Join(phpmailerDir, "src", "PHPMailer.php"), "libphp-phpmailer")
	path, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	r := runCommand(t, "", cleanEnv(append([]string{"PHPMAILER_DIR=" + phpmailerDir}, env...)...), "", php, "-d", "display_errors=stderr", path)
	out := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	if out["result"] == "" {
		t.Fatalf("%s printed no result:\n%s", script, r)
	}
	return out, r
}

// TestPHPMailer: PHPMailer with SMTPSecure 'tls' (STARTTLS) and 'ssl'
// (implicit TLS) sends, and the queue ID it saw is in the spool; a From
// address the login does not own fails with 553 5.7.1 in ErrorInfo.
func TestPHPMailer(t *testing.T) {
	t.Parallel()
	requireTool(t, "php", "php-cli")
	requireFile(t, filepath.Join(phpmailerDir, "src", "PHPMailer.php"), "libphp-phpmailer")
	s := startServer(t, alice)

	for _, tc := range []struct{ secure string }{{"tls"}, {"ssl"}} {
		t.Run(tc.secure, func(t *testing.T) {
			t.Parallel()
			addr := s.submission
			if tc.secure == "ssl" {
				addr = s.tlsAddr
			}
			want := expectMessage{login: alice.addr, from: alice.addr, to: []string{"dave@remote.test"},
				subject: "phpmailer " + tc.secure, body: []string{"hello from PHPMailer over " + tc.secure}}
			pr, r := runPHPMailer(t, s, tc.secure, addr, alice, alice.addr, "dave@remote.test", want.subject, want.body[0])
			if pr.result != "ok" || r.exit != 0 {
				t.Fatalf("PHPMailer send() failed: %s\n%s", pr.errorInfo, r)
			}
			id := queueID(t, pr.dataReply)
			if pr.transactionID != id {
				t.Errorf("PHPMailer getLastTransactionID() = %q, DATA reply %q", pr.transactionID, pr.dataReply)
			}
			checkSpooled(t, s.dataDir, id, want)
		})
	}

	t.Run("foreign-from", func(t *testing.T) {
		t.Parallel()
		subject := "phpmailer foreign from"
		pr, r := runPHPMailer(t, s, "tls", s.submission, alice, "mallory@elsewhere.test", "dave@remote.test", subject, "must not be queued")
		if pr.result != "fail" || r.exit == 0 {
			t.Fatalf("PHPMailer sent as an address the login does not own:\n%s", r)
		}
		for _, want := range []string{"553", "5.7.1", "mallory@elsewhere.test"} {
			if !strings.Contains(pr.errorInfo, want) {
				t.Errorf("ErrorInfo does not contain %q: %s", want, pr.errorInfo)
			}
		}
		if ids := spooledWithSubject(t, s.dataDir, subject); len(ids) != 0 {
			t.Errorf("refused message is in the spool as %v", ids)
		}
	})
}

// smtplibResult is the JSON printed by testdata/smtplib_send.py.
type smtplibResult struct {
	AuthBeforeTLS bool               `json:"auth_before_tls"`
	AuthAfterTLS  string             `json:"auth_after_tls"`
	Auth          [2]json.RawMessage `json:"auth"`
	Mail          [2]json.RawMessage `json:"mail"`
	Rcpt          [2]json.RawMessage `json:"rcpt"`
	Data          [2]json.RawMessage `json:"data"`
	Message       string             `json:"message"`
}

// reply turns smtplib's (code, text) into "code text".
func reply(pair [2]json.RawMessage) string {
	var code int
	var text string
	json.Unmarshal(pair[0], &code)
	json.Unmarshal(pair[1], &text)
	return fmt.Sprintf("%d %s", code, text)
}

// TestPythonSmtplib: smtplib over STARTTLS with AUTH PLAIN and LOGIN, with
// and without an initial response; the DATA reply's queue ID is in the
// spool, and the spool ends with exactly the message smtplib sent (after
// dot-unstuffing).
func TestPythonSmtplib(t *testing.T) {
	t.Parallel()
	python := requireTool(t, "python3", "python3")
	script, err := filepath.Abs(filepath.Join("testdata", "smtplib_send.py"))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, alice)
	host, port, _ := net.SplitHostPort(s.submission)

	for _, mech := range []string{"PLAIN", "PLAIN-NOIR", "LOGIN", "LOGIN-NOIR"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			body := "hello from smtplib " + mech + "\n.a line starting with a dot\n..two dots"
			want := expectMessage{login: alice.addr, from: alice.addr, to: []string{"erin@remote.test"},
				subject: "smtplib " + mech,
				body:    []string{"hello from smtplib " + mech, ".a line starting with a dot", "..two dots"}}
			r := runCommand(t, "", cleanEnv(), "", python, script, host, port, alice.addr, alice.password, mech,
				alice.addr, "erin@remote.test", want.subject, body)
			if r.exit != 0 {
				t.Fatalf("smtplib_send.py:\n%s", r)
			}
			var res smtplibResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("smtplib_send.py output is not JSON: %v\n%s", err, r)
			}
			if res.AuthBeforeTLS {
				t.Errorf("AUTH advertised before STARTTLS")
			}
			if strings.TrimSpace(res.AuthAfterTLS) != "PLAIN LOGIN" {
				t.Errorf("AUTH after STARTTLS = %q, want \"PLAIN LOGIN\"", res.AuthAfterTLS)
			}
			for _, step := range []struct {
				name, got, want string
			}{
				{"AUTH", reply(res.Auth), "235 2.0.0 "},
				{"MAIL", reply(res.Mail), "250 2.0.0 "},
				{"RCPT", reply(res.Rcpt), "250 2.0.0 "},
				{"DATA", reply(res.Data), "250 2.0.0 Ok: queued as "},
			} {
				if !strings.HasPrefix(step.got, step.want) {
					t.Errorf("%s reply %q, want %q...", step.name, step.got, step.want)
				}
			}
			id := queueID(t, reply(res.Data))
			sp := checkSpooled(t, s.dataDir, id, want)
			if !bytes.HasSuffix(sp.msg, []byte(res.Message)) {
				t.Errorf("spool %s does not end with the message smtplib sent:\nsent:\n%q\nspooled:\n%q", id, res.Message, sp.msg)
			}
		})
	}
}

// TestMsmtp: msmtp with STARTTLS and no certificate check sends a message;
// it exits 0, the spool holds one more message, and the ID msmtp logged is
// that message.
func TestMsmtp(t *testing.T) {
	t.Parallel()
	msmtp := requireTool(t, "msmtp", "msmtp")
	s := startServer(t, alice)
	host, port, _ := net.SplitHostPort(s.submission)

	dir := t.TempDir()
	logFile := filepath.Join(dir, "msmtp.log")
	rc := filepath.Join(dir, "msmtprc")
	conf := fmt.Sprintf(`account sluice
host %s
port %s
tls on
tls_starttls on
tls_certcheck off
auth on
user %s
password %s
from %s
logfile %s
timeout 20

account default : sluice
`, host, port, alice.addr, alice.password, alice.addr, logFile)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	before := len(spoolIDs(t, s.dataDir))
	want := expectMessage{login: alice.addr, from: alice.addr, to: []string{"frank@remote.test"},
		subject: "msmtp starttls", body: []string{"hello from msmtp", "second line"}}
	msg := "From: Alice <" + alice.addr + ">\nTo: frank@remote.test\nSubject: " + want.subject + "\n\nhello from msmtp\nsecond line\n"
	r := runCommand(t, dir, cleanEnv("HOME="+dir), msg, msmtp, "-C", rc, "frank@remote.test")
	if r.exit != 0 {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("msmtp:\n%s\n--- msmtp log:\n%s", r, log)
	}
	ids := spoolIDs(t, s.dataDir)
	if len(ids) != before+1 {
		t.Fatalf("spool holds %d messages after msmtp, want %d", len(ids), before+1)
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "smtpstatus=250") || !strings.Contains(string(log), "exitcode=EX_OK") {
		t.Errorf("msmtp log does not record a 250 and EX_OK:\n%s", log)
	}
	id := queueID(t, strings.ReplaceAll(string(log), "'", "\n"))
	checkSpooled(t, s.dataDir, id, want)
}
