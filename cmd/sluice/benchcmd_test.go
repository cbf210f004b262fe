package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func timeMS(i int) time.Duration { return time.Duration(i) * time.Millisecond }

var bob = testUser{addr: "bob@example.test", password: "bob-secret-pw-42"}

// runBenchCmd runs "sluice bench" in this process and returns its output.
func runBenchCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = cmdBench(args, &o, &e)
	return o.String(), e.String(), err
}

// benchAsAlice runs sluice bench against s as alice with args, expects it
// to succeed, and returns its JSON report.
func benchAsAlice(t *testing.T, s *sluiceServer, args ...string) *benchReport {
	t.Helper()
	out, _, err := runBenchCmd(t, append([]string{"--addr", s.submission, "--user", alice.addr, "--password", alice.password, "--json"}, args...)...)
	if err != nil {
		t.Fatalf("sluice bench: %v\n%s", err, out)
	}
	return benchJSON(t, out)
}

func benchJSON(t *testing.T, out string) *benchReport {
	t.Helper()
	var r benchReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	return &r
}

func findReply(r *benchReport, class, stage string, code int, enh string) *benchReplyLine {
	for i, l := range r.Replies {
		if l.Class == class && l.Stage == stage && l.Code == code && l.Enhanced == enh {
			return &r.Replies[i]
		}
	}
	return nil
}

// TestBenchAgainstServe: 50 messages over STARTTLS from two logins used
// round-robin are all accepted, counted, timed, and in the spool as valid
// messages of the asked size.
func TestBenchAgainstServe(t *testing.T) {
	t.Parallel()
	s := startServer(t, alice, bob)
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("# login password\n"+alice.addr+" "+alice.password+"\n\n"+bob.addr+"\t"+bob.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runBenchCmd(t, "--addr", s.submission, "--tls", "starttls", "--users", users,
		"--concurrency", "5", "--messages", "50", "--reuse", "10", "--size", "5000",
		"--recipients", "2", "--to", "rcpt{n}@sink.test", "--json")
	if err != nil {
		t.Fatalf("sluice bench: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	r := benchJSON(t, out)
	if r.Sent != 50 || r.Accepted != 50 || r.Deferred != 0 || r.Rejected != 0 || r.Errors != 0 {
		t.Fatalf("sent %d: accepted %d, deferred %d, rejected %d, errors %d; want 50 accepted\n%s",
			r.Sent, r.Accepted, r.Deferred, r.Rejected, r.Errors, out)
	}
	if l := findReply(r, "accepted", "eod", 250, "2.0.0"); l == nil || l.Count != 50 || len(r.Replies) != 1 {
		t.Errorf("replies %+v, want only 50 x accepted eod 250 2.0.0", r.Replies)
	}
	// 5 workers, 10 messages per connection: at least 5 connections, and
	// every connection logged in once.
	if r.Connections.Opened < 5 || r.Connections.Failed != 0 {
		t.Errorf("connections %+v, want at least 5 opened and none failed", r.Connections)
	}
	if r.Latency.Connect.N < uint64(r.Connections.Opened) || r.Latency.Auth.N != uint64(r.Connections.Opened) {
		t.Errorf("latency samples connect %d, auth %d for %d connections", r.Latency.Connect.N, r.Latency.Auth.N, r.Connections.Opened)
	}
	if r.Latency.Data.N != 50 || r.Latency.Message.N != 50 {
		t.Errorf("data latency samples %d, message %d, want 50", r.Latency.Data.N, r.Latency.Message.N)
	}
	for name, l := range map[string]benchLatency{"connect": r.Latency.Connect, "auth": r.Latency.Auth, "data": r.Latency.Data} {
		if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s latency %+v: want 0 < p50 <= p90 <= p99 <= max", name, l)
		}
	}
	if r.MsgsPerSecond <= 0 || r.Elapsed <= 0 {
		t.Errorf("msgs/s %v in %vs", r.MsgsPerSecond, r.Elapsed)
	}
	// 50 TLS sessions cannot cost the client nothing, nor more CPU than
	// the run's wall time on every core.
	if r.ClientCPU <= 0 || r.ClientCPU > r.Elapsed*float64(runtime.NumCPU()) {
		t.Errorf("client CPU %vs in a %vs run", r.ClientCPU, r.Elapsed)
	}

	ids := spoolIDs(t, s.dataDir)
	if len(ids) != 50 {
		t.Fatalf("%d messages in the spool, want 50", len(ids))
	}
	logins := map[string]int{}
	rcpts := map[string]bool{}
	for _, id := range ids {
		sp := readSpooled(t, s.dataDir, id)
		logins[sp.env.Login]++
		if sp.env.From != sp.env.Login || len(sp.env.To) != 2 {
			t.Errorf("spool %s: from %q login %q to %q", id, sp.env.From, sp.env.Login, sp.env.To)
		}
		for _, rc := range sp.env.To {
			rcpts[rc] = true
		}
		head, body, ok := bytes.Cut(sp.msg, []byte("\r\n\r\n"))
		if !ok {
			t.Fatalf("spool %s: no header/body separator", id)
		}
		h := string(head) + "\r\n"
		for _, re := range []string{
			`\r\nFrom: ` + regexp.QuoteMeta(sp.env.Login) + `\r\n`,
			`\r\nTo: ` + regexp.QuoteMeta(sp.env.To[0]) + `,\r\n ` + regexp.QuoteMeta(sp.env.To[1]) + `\r\n`,
			`\r\nSubject: sluice bench message [0-9]+\r\n`,
			`\r\nDate: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [-+][0-9]{4}\r\n`,
			`\r\nMessage-ID: <bench\.[0-9]+\.[0-9a-f]{12}@example\.test>\r\n`,
		} {
			if !regexp.MustCompile(re).MatchString(h) {
				t.Errorf("spool %s: header does not match %q:\n%s", id, re, h)
			}
		}
		if len(body) != 5000 {
			t.Errorf("spool %s: body is %d bytes, want 5000", id, len(body))
		}
		for i, line := range strings.Split(strings.TrimSuffix(string(body), "\r\n"), "\r\n") {
			if len(line) > 77 || strings.HasPrefix(line, ".") || strings.ContainsAny(line, "\r\n") {
				t.Errorf("spool %s: body line %d is %q", id, i+1, line)
				break
			}
		}
	}
	if logins[alice.addr] == 0 || logins[bob.addr] == 0 || logins[alice.addr]+logins[bob.addr] != 50 {
		t.Errorf("messages per login %v, want both logins used", logins)
	}
	if len(rcpts) != 100 {
		t.Errorf("%d distinct recipients, want 100 ({n} counts recipients)", len(rcpts))
	}
}

// TestBenchCountsRefusals: deferrals, rejections and failed logins are
// counted by stage and reply code, over implicit TLS, in the text report.
func TestBenchCountsRefusals(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, "\n[quota]\nmessages_per_hour = 10\n", alice)

	// 15 messages, quota 10: 10 accepted, 5 deferred at RCPT with 451 4.7.1.
	out, _, err := runBenchCmd(t, "--addr", s.tlsAddr, "--tls", "implicit", "--user", alice.addr, "--password", alice.password,
		"--concurrency", "1", "--messages", "15", "--size", "300")
	if err != nil {
		t.Fatalf("sluice bench: %v\n%s", err, out)
	}
	for _, want := range []string{
		"15 messages in ", ": 10 accepted, 5 deferred (4xx), 0 rejected (5xx), 0 errors",
		"1 connections opened, 0 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^  accepted +eod +250 2\.0\.0 +10 *$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^  deferred +rcpt +451 4\.7\.1 +5 +login alice@example\.test has sent`).MatchString(out) {
		t.Errorf("report lacks the reply lines accepted 250 2.0.0 x10 and deferred rcpt 451 4.7.1 x5:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^ +data +10 `).MatchString(out) {
		t.Errorf("report lacks 10 data latency samples:\n%s", out)
	}

	// A sender the login does not own: rejected at MAIL, 553 5.7.1.
	out, _, err = runBenchCmd(t, "--addr", s.submission, "--user", alice.addr, "--password", alice.password,
		"--messages", "3", "--concurrency", "2", "--from", "someone{n}@elsewhere.test", "--json")
	if err == nil {
		t.Errorf("sluice bench with nothing accepted returned no error")
	}
	r := benchJSON(t, out)
	if l := findReply(r, "rejected", "mail", 553, "5.7.1"); r.Rejected != 3 || l == nil || l.Count != 3 ||
		!strings.Contains(l.Text, "is not an address of login") {
		t.Errorf("want 3 rejected at MAIL with 553 5.7.1, got %+v", r)
	}

	// A wrong password: each message's connection fails at AUTH.
	out, _, _ = runBenchCmd(t, "--addr", s.submission, "--user", alice.addr, "--password", "not-the-password",
		"--messages", "2", "--concurrency", "1", "--json")
	r = benchJSON(t, out)
	if l := findReply(r, "rejected", "auth", 535, "5.7.8"); r.Sent != 2 || l == nil || l.Count != 2 ||
		r.Connections.Failed != 2 || r.Connections.Opened != 0 || r.Latency.Auth.N != 2 {
		t.Errorf("want 2 rejected at AUTH with 535 5.7.8 on 2 failed connections, got %+v", r)
	}

	// Nothing listening: errors, not replies.
	out, _, _ = runBenchCmd(t, "--addr", freeAddr(t), "--user", alice.addr, "--password", alice.password,
		"--messages", "2", "--concurrency", "1", "--json")
	r = benchJSON(t, out)
	if r.Errors != 2 || len(r.Replies) != 1 || r.Replies[0].Stage != "connect" || r.Replies[0].Kind != "connection refused" {
		t.Errorf("want 2 connect errors \"connection refused\", got %+v", r.Replies)
	}
}

// TestBenchDuration: --duration without --messages runs for that long with
// no message limit, and --reuse 1 opens a connection per message.
func TestBenchDuration(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, "\n[quota]\nmessages_per_hour = 0\n", alice)
	r := benchAsAlice(t, s, "--duration", "1500ms", "--concurrency", "2", "--reuse", "1", "--size", "1000")
	if r.MessagesLimit != 0 || r.DurationLimit != 1.5 || r.Elapsed < 1.5 || r.Elapsed > 30 {
		t.Errorf("limits %d messages, %vs; ran %vs", r.MessagesLimit, r.DurationLimit, r.Elapsed)
	}
	if r.Accepted < 2 || r.Accepted != r.Sent || r.Connections.Opened != r.Sent {
		t.Errorf("accepted %d of %d on %d connections; want all accepted, one connection each", r.Accepted, r.Sent, r.Connections.Opened)
	}
}

// TestBenchRate: --rate spreads the messages over the run: 20 messages at
// 20 a second take at least 0.95 s, whatever the number of connections.
func TestBenchRate(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, "\n[quota]\nmessages_per_hour = 0\n", alice)
	r := benchAsAlice(t, s, "--messages", "20", "--rate", "20", "--concurrency", "4", "--size", "1000")
	if r.Sent != 20 || r.Accepted != 20 || r.Rate != 20 {
		t.Errorf("sent %d, accepted %d at rate %v; want 20 and 20 at 20", r.Sent, r.Accepted, r.Rate)
	}
	if r.Elapsed < 0.95 {
		t.Errorf("20 messages at 20 a second took %.2fs, want at least 0.95s", r.Elapsed)
	}
}

func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls", "ssl"}, "--tls"},
		{[]string{"--messages", "0"}, "--messages N or --duration D"},
		{[]string{"--from", "x@y.test", "--auth", "plain"}, "--auth plain needs --user"},
		{[]string{}, "no login for {user}"},
		{[]string{"--user", "a@b.test", "--users", "f"}, "not both"},
		{[]string{"--user", "a@b.test", "--to", "<x@y.test>"}, "bare address"},
		{[]string{"--user", "a@b.test", "extra"}, "unexpected argument"},
		{[]string{"--user", "a@b.test", "--rate", "-1"}, "--rate"},
		{[]string{"--user", "a@b.test", "--pipelining", "on"}, "--pipelining"},
		{[]string{"--user", "a@b.test", "--tls-groups", "x448"}, "--tls-groups"},
	} {
		_, err := parseBenchFlags(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sluice bench %q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	o, err := parseBenchFlags([]string{"--user", "a@b.test", "--duration", "5s"})
	if err != nil || o.messages != 0 || o.reuse != 0 || o.size != 5000 || o.tlsMode != "starttls" {
		t.Errorf("defaults with --duration: %+v, %v", o, err)
	}
	var out bytes.Buffer
	if err := cmdBench([]string{"--help"}, &out, &out); err != nil || !strings.Contains(out.String(), "InsecureSkipVerify") {
		t.Errorf("--help: %v\n%s", err, out.String())
	}
}

func TestBenchBodySize(t *testing.T) {
	for _, size := range []int{0, 1, 2, 3, 77, 78, 79, 80, 156, 157, 158, 5000, 5001, 65536} {
		tok, rest := benchBodyParts(size)
		body := append(benchToken(tok), rest...)
		want := size
		if size == 1 {
			want = 0 // no room for a line
		}
		if len(body) != want {
			t.Errorf("size %d: body of %d bytes", size, len(body))
			continue
		}
		if want > 0 && !bytes.HasSuffix(body, []byte("\r\n")) {
			t.Errorf("size %d: body does not end in CRLF", size)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(body), "\r\n"), "\r\n") {
			if len(line) > 77 || strings.HasPrefix(line, ".") || strings.ContainsAny(line, "\r\n") {
				t.Errorf("size %d: line %q", size, line)
			}
		}
	}
	if bytes.Equal(benchToken(78), benchToken(78)) {
		t.Error("two messages got the same first body line")
	}
}

func TestBenchHistogram(t *testing.T) {
	var h benchHist
	for i := 1; i <= 1000; i++ {
		h.add(timeMS(i))
	}
	for _, c := range []struct {
		q    float64
		want int
	}{{0.5, 500}, {0.9, 900}, {0.99, 990}, {1, 1000}} {
		got := h.quantile(c.q)
		if d := float64(got-timeMS(c.want)) / float64(timeMS(c.want)); d < 0 || d > 0.01 {
			t.Errorf("q%v = %v, want %dms within 1%%", c.q, got, c.want)
		}
	}
	if h.max != timeMS(1000) || h.min != timeMS(1) {
		t.Errorf("min %v max %v", h.min, h.max)
	}
	for i := 0; i < histBuckets; i++ {
		if histIndex(histUpper(i)) != i || i > 0 && histIndex(histUpper(i-1)+1) != i {
			t.Fatalf("bucket %d: bounds do not round-trip", i)
		}
	}
}
