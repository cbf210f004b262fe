package main

// Operating tests, part 2: metrics after a scripted session, /readyz,
// SIGHUP and SIGTERM against the real binary (helpers in ops_test.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"sluice/screen/redistest"
)

// ---------------------------------------------------------------- 1. metrics, health

// TestOpsMetricsAfterScriptedSession: one connection with a wrong
// password, a right one, a sender the login does not own (553) and one good
// message moves exactly the counters it should, by exactly that much; the
// spool gauge counts the message; /healthz and /readyz answer 200.
func TestOpsMetricsAfterScriptedSession(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	s := startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\n", httpAddr), alice)
	base := "http://" + httpAddr

	if body := opsWaitStatus(t, base+"/healthz", 200); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz body %q, want \"ok\"", body)
	}
	if body := opsWaitStatus(t, base+"/readyz", 200); strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz body %q, want \"ready\"", body)
	}

	// The harness made one probe connection to each listener to see that
	// the server is up; they are counted a moment after the accept.
	opsWait(t, opsTimeout, "the harness' probe connections counted", func() (bool, string) {
		m := opsScrape(t, base)
		a := m.value("sluice_connections_total", "listener", "submission", "result", "accepted")
		b := m.value("sluice_connections_total", "listener", "submissions", "result", "accepted")
		return a >= 1 && b >= 1, fmt.Sprintf("submission %v, submissions %v", a, b)
	})
	before := opsScrape(t, base)
	if got := before.value("sluice_spool_messages"); got != 0 {
		t.Fatalf("sluice_spool_messages = %v before any message, want 0", got)
	}

	// The scripted session, on one connection.
	c, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	if code, text, err := c.auth(alice.addr, "wrong-"+alice.password); err != nil || code != 535 || !strings.HasPrefix(text, "5.7.8 ") {
		t.Fatalf("AUTH with a wrong password: %d %s (%v), want 535 5.7.8", code, text, err)
	}
	if code, text, err := c.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH with the right password: %d %s (%v), want 235", code, text, err)
	}
	if code, text, err := c.cmd("MAIL FROM:<mallory@elsewhere.test>"); err != nil || code != 553 || !strings.HasPrefix(text, "5.7.1 ") {
		t.Fatalf("MAIL FROM a sender alice does not own: %d %s (%v), want 553 5.7.1", code, text, err)
	}
	r, err := c.send(alice.addr, "carol@remote.test", opsMessage(alice.addr, "carol@remote.test", "metrics-"+opsLetters(1)))
	id, ok := r.queued()
	if err != nil || !ok {
		t.Fatalf("good message: %v (%v)", r, err)
	}
	if code, _, err := c.cmd("QUIT"); err != nil || code != 221 {
		t.Errorf("QUIT: %d %v", code, err)
	}
	c.conn.Close()
	readSpooled(t, s.dataDir, id)

	after := opsScrape(t, base)
	for _, tc := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"sluice_connections_total", []string{"listener", "submission", "result", "accepted"}, 1},
		{"sluice_connections_total", []string{"listener", "submission", "result", "refused"}, 0},
		{"sluice_connections_total", []string{"listener", "submissions", "result", "accepted"}, 0},
		{"sluice_auth_total", []string{"mechanism", "PLAIN", "result", "ok"}, 1},
		{"sluice_auth_total", []string{"mechanism", "PLAIN", "result", "failed"}, 1},
		{"sluice_messages_total", []string{"verdict", "queued", "stage", "accepted"}, 1},
	} {
		d := after.value(tc.name, tc.labels...) - before.value(tc.name, tc.labels...)
		if d != tc.delta {
			t.Errorf("%s%v moved by %v, want %v", tc.name, tc.labels, d, tc.delta)
		}
	}
	// Nothing else moved: no other auth result, no refused or held message
	// (the 553 comes at MAIL, before any message).
	for _, fam := range []string{"sluice_auth_total", "sluice_messages_total", "sluice_connections_total"} {
		b, a := before.series(fam), after.series(fam)
		total := 0.0
		for k, v := range a {
			total += v - b[k]
		}
		want := map[string]float64{"sluice_auth_total": 2, "sluice_messages_total": 1, "sluice_connections_total": 1}[fam]
		if total != want {
			t.Errorf("%s moved by %v in all, want %v: before %v, after %v", fam, total, want, b, a)
		}
	}
	if got := after.value("sluice_spool_messages"); got != 1 {
		t.Errorf("sluice_spool_messages = %v with one queued message, want 1", got)
	}
	if got := after.value("sluice_spool_oldest_age_seconds"); got < 0 || got > 600 {
		t.Errorf("sluice_spool_oldest_age_seconds = %v for a message just queued", got)
	}
	for _, fam := range []string{"sluice_connections_total", "sluice_auth_total", "sluice_messages_total"} {
		if f := after[fam]; f == nil || f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is not exposed as a counter", fam)
		}
	}
	if f := after["sluice_spool_messages"]; f == nil || f.GetType() != dto.MetricType_GAUGE {
		t.Errorf("sluice_spool_messages is not exposed as a gauge")
	}
	opsGet(t, base+"/healthz", 200)
	opsGet(t, base+"/readyz", 200)
}

// TestOpsReadyzFollowsRedis: with a shared Redis configured, /readyz is
// 503 while Redis is down and 200 again once it is back; /healthz (the
// process is alive) stays 200 throughout.
func TestOpsReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	httpAddr := freeAddr(t)
	startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\n\n[quota]\nredis_url = %q\n", httpAddr, red.URL()), alice)
	base := "http://" + httpAddr

	opsWaitStatus(t, base+"/readyz", 200)
	red.Stop()
	body := opsWaitStatus(t, base+"/readyz", 503)
	if !strings.Contains(body, "redis unreachable") {
		t.Errorf("/readyz with Redis down says %q, want it to name Redis", body)
	}
	opsGet(t, base+"/healthz", 200)
	red.Restart()
	opsWaitStatus(t, base+"/readyz", 200)
	opsGet(t, base+"/healthz", 200)
}

// ---------------------------------------------------------------- 2. SIGHUP

// TestSIGHUPReload: SIGHUP applies a changed [quota] messages_per_hour, a
// DKIM key made with "sluice dkim keygen" and a renewed certificate to new
// mail and new connections, without dropping an open, authenticated, idle
// session, which can still send afterwards. A configuration with a syntax
// error, or an invalid value, is refused with a log line, and the server
// keeps serving with the old one.
func TestSIGHUPReload(t *testing.T) {
	t.Parallel()
	tlsDir := t.TempDir()
	certFile, keyFile := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	certA, keyA := opsCert(t, 1001)
	opsWriteFile(t, certFile, certA, 0o644)
	opsWriteFile(t, keyFile, keyA, 0o600)
	extra := fmt.Sprintf("\n[quota]\nmessages_per_hour = 2\n\n[tls]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile)
	s := startServerWith(t, extra, alice)
	n := 0
	msg := func() []byte {
		n++
		return opsMessage(alice.addr, "dave@remote.test", "reload-"+opsLetters(n))
	}

	// The session that stays open, authenticated and idle, across reloads.
	idle, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.conn.Close()
	if code, text, err := idle.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH on the idle session: %d %s %v", code, text, err)
	}

	// Before: certificate 1001, quota 2, no DKIM signature.
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{s.submission, false}, {s.tlsAddr, true}} {
		if got := opsPeerSerial(t, l.addr, l.implicit); got != 1001 {
			t.Fatalf("%s shows certificate serial %d, want 1001 from [tls] cert_file", l.addr, got)
		}
	}
	id := opsMustQueue(t, s.submission, false, alice, "dave@remote.test", msg())
	if sigs := dkimSignatures(t, readSpooled(t, s.dataDir, id).msg); len(sigs) != 0 {
		t.Fatalf("message signed before any DKIM key exists: %v", sigs)
	}
	opsMustQueue(t, s.tlsAddr, true, alice, "dave@remote.test", msg())
	r, err := opsSendOne(s.submission, false, alice, "dave@remote.test", msg())
	if err != nil || r.stage != "RCPT" || r.code != 451 || !strings.HasPrefix(r.text, "4.7.1 ") {
		t.Fatalf("third message with messages_per_hour = 2: %v (%v), want 451 4.7.1 at RCPT", r, err)
	}

	// The changes: quota 2 -> 5, a DKIM key for example.test, certificate
	// 1001 -> 2002.
	opsEditConfig(t, s, "messages_per_hour = 2\n", "messages_per_hour = 5\n")
	recs := dkimKeygen(t, s, "example.test", "hup", "ed25519")
	certB, keyB := opsCert(t, 2002)
	opsWriteFile(t, keyFile, keyB, 0o600)
	opsWriteFile(t, certFile, certB, 0o644)
	opsReload(t, s)

	for _, l := range []struct {
		addr     string
		implicit bool
	}{{s.submission, false}, {s.tlsAddr, true}} {
		if got := opsPeerSerial(t, l.addr, l.implicit); got != 2002 {
			t.Errorf("after SIGHUP a new TLS connection to %s shows certificate serial %d, want the renewed 2002", l.addr, got)
		}
	}
	// The next message is signed with the new key, and the raised quota
	// lets it through.
	id = opsMustQueue(t, s.submission, false, alice, "dave@remote.test", msg())
	if got := dkimSignatures(t, readSpooled(t, s.dataDir, id).msg); len(got) != 1 || got[0]["d"] != "example.test" || got[0]["s"] != "hup" || recs[0].name != "hup._domainkey.example.test" {
		t.Errorf("first message after keygen and SIGHUP: DKIM signatures %v, want one with d=example.test s=hup", got)
	}
	// The idle session survived and sends on the new configuration.
	r, err = idle.send(alice.addr, "dave@remote.test", msg())
	if _, ok := r.queued(); err != nil || !ok {
		t.Fatalf("the session opened before SIGHUP: %v (%v), want 250 queued", r, err)
	}
	if serial := idle.state.PeerCertificates[0].SerialNumber.Int64(); serial != 1001 {
		t.Errorf("the idle session's TLS state changed under it: serial %d", serial)
	}

	// An invalid configuration is refused, and nothing changes: quota 5,
	// certificate 2002.
	good, err := os.ReadFile(s.configPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ name, old, new, want string }{
		{"syntax error", "messages_per_hour = 5\n", "messages_per_hour = 5\nthis is not toml = = \n", "line "},
		{"invalid value", "messages_per_hour = 5\n", "messages_per_hour = -1\n", "messages_per_hour must be 0 (unlimited) or more"},
	} {
		opsWriteFile(t, s.configPath, good, 0o600)
		opsEditConfig(t, s, bad.old, bad.new)
		certC, keyC := opsCert(t, 3003) // would be loaded by a reload
		opsWriteFile(t, keyFile, keyC, 0o600)
		opsWriteFile(t, certFile, certC, 0o644)
		line := opsReloadRefused(t, s)
		if !strings.Contains(line, s.configPath) || !strings.Contains(line, bad.want) {
			t.Errorf("%s: refusal log line does not name the file and the problem (%q):\n%s", bad.name, bad.want, line)
		}
		if got := opsPeerSerial(t, s.tlsAddr, true); got != 2002 {
			t.Errorf("%s: after a refused reload the server shows certificate %d, want still 2002", bad.name, got)
		}
		if code, text, err := idle.cmd("NOOP"); err != nil || code != 250 {
			t.Errorf("%s: the idle session after a refused reload: NOOP %d %s %v", bad.name, code, text, err)
		}
	}
	// Still serving with the old limit of 5: message 5 passes, 6 does not.
	opsMustQueue(t, s.tlsAddr, true, alice, "dave@remote.test", msg())
	r, err = opsSendOne(s.submission, false, alice, "dave@remote.test", msg())
	if err != nil || r.code != 451 || !strings.HasPrefix(r.text, "4.7.1 ") {
		t.Errorf("sixth message with the kept messages_per_hour = 5: %v (%v), want 451 4.7.1", r, err)
	}
	if strings.Contains(s.stderr.String(), "level=ERROR msg=\"reload: certificate not reloaded") {
		t.Errorf("the valid reload logged a certificate error:\n%s", s.stderr.String())
	}
	opsWriteFile(t, s.configPath, good, 0o600)
	if code, _, err := idle.cmd("QUIT"); err != nil || code != 221 {
		t.Errorf("QUIT on the idle session: %d %v", code, err)
	}
}

// ---------------------------------------------------------------- 3. SIGTERM

// TestSIGTERMUnderLoad: concurrent senders (raw clients on both listeners
// and swaks) submit while the server gets SIGTERM. The listeners close at
// once, a session in the middle of its message may finish it, and the
// process exits 0 within [submission] shutdown_timeout; every message that
// got a 250 is in the spool under its queue ID, and nothing else is; after
// a restart every one of them is delivered to the smarthost exactly once.
func TestSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	swaksBin := requireTool(t, "swaks", "swaks")
	sink := opsStartSink(t, false) // deferring: the spool keeps everything
	s := startServerWith(t, "\n[quota]\nmessages_per_hour = 0\n"+sink.relayTOML(), alice)

	// [submission] belongs to the harness' base config; the shutdown
	// deadline is set there by editing it and reloading.
	const shutdownTimeout = 8 * time.Second
	opsEditConfig(t, s, "[submission]\n", fmt.Sprintf("[submission]\nshutdown_timeout = %q\n", shutdownTimeout.String()))
	opsReload(t, s)

	var (
		mu      sync.Mutex
		acked   = map[string]string{} // queue ID -> tag
		errs    []string              // failures before SIGTERM
		termed  atomic.Bool
		counter atomic.Int64
		wg      sync.WaitGroup
	)
	record := func(id, tag string) {
		mu.Lock()
		acked[id] = tag
		mu.Unlock()
	}
	failed := func(format string, args ...any) {
		if !termed.Load() {
			mu.Lock()
			errs = append(errs, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
	}
	const maxPerSender = 150 // a sender still served after this many is a bug
	raw := func(implicit bool, name string) {
		defer wg.Done()
		addr := s.submission
		if implicit {
			addr = s.tlsAddr
		}
		for i := 0; i < maxPerSender; i++ {
			tag := "term-" + name + "-" + opsLetters(int(counter.Add(1)))
			r, err := opsSendOne(addr, implicit, alice, "erin@remote.test", opsMessage(alice.addr, "erin@remote.test", tag))
			if id, ok := r.queued(); ok {
				record(id, tag)
				continue
			}
			if termed.Load() {
				return // refused or cut after SIGTERM: fine, it was not acknowledged
			}
			failed("%s: %v (%v)", tag, r, err)
			return
		}
		failed("%s: still accepted after %d messages", name, maxPerSender)
	}
	viaSwaks := func(name string) {
		defer wg.Done()
		for i := 0; i < maxPerSender; i++ {
			tag := "term-" + name + "-" + opsLetters(int(counter.Add(1)))
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			cmd := exec.CommandContext(ctx, swaksBin, "--server", s.submission, "--tls",
				"--helo", "client.sluice.test", "--auth", "PLAIN", "--auth-user", alice.addr, "--auth-password", alice.password,
				"--from", alice.addr, "--to", "erin@remote.test",
				"--header", "Subject: ops "+tag, "--add-header", "X-Ops-Tag: "+tag, "--body", "this is message "+tag, "--timeout", "20")
			cmd.Env = cleanEnv()
			out, err := cmd.CombinedOutput()
			cancel()
			if m := queuedRe.FindAllStringSubmatch(string(out), -1); err == nil && len(m) == 1 {
				record(m[0][1], tag)
				continue
			}
			if termed.Load() {
				return
			}
			failed("%s: swaks: %v\n%s", tag, err, out)
			return
		}
		failed("%s: still accepted after %d messages", name, maxPerSender)
	}
	for i := 0; i < 3; i++ {
		wg.Add(2)
		go raw(false, "starttls"+opsLetters(i))
		go raw(true, "implicit"+opsLetters(i))
	}
	wg.Add(2)
	go viaSwaks("swaksa")
	go viaSwaks("swaksb")

	// One more session is in the middle of its message when SIGTERM comes:
	// half the message sent, the rest after the listeners closed.
	inflightTag := "term-inflight"
	inflight, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.conn.Close()
	if code, text, err := inflight.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("in-flight session AUTH: %d %s %v", code, text, err)
	}
	for _, c := range []struct {
		line string
		want int
	}{{"MAIL FROM:<" + alice.addr + ">", 250}, {"RCPT TO:<erin@remote.test>", 250}, {"DATA", 354}} {
		if code, text, err := inflight.cmd("%s", c.line); err != nil || code != c.want {
			t.Fatalf("in-flight session %s: %d %s %v", c.line, code, text, err)
		}
	}
	inflightMsg := opsMessage(alice.addr, "erin@remote.test", inflightTag)
	half := bytes.Index(inflightMsg, []byte("\r\n\r\n"))
	dw := inflight.tp.DotWriter()
	if _, err := dw.Write(inflightMsg[:half]); err != nil {
		t.Fatal(err)
	}
	if err := inflight.tp.W.Flush(); err != nil {
		t.Fatal(err)
	}

	// SIGTERM once the load is well under way.
	opsWait(t, opsTimeout, "senders acknowledged 30 messages", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("sending failed before SIGTERM:\n%s", strings.Join(errs, "\n"))
		}
		return len(acked) >= 30, fmt.Sprintf("%d acknowledged", len(acked))
	})
	termed.Store(true)
	s.stopping = true
	termAt := time.Now()
	opsSignal(t, s, syscall.SIGTERM)

	// The listeners close at once; the in-flight session may finish.
	opsWait(t, shutdownTimeout, "both listeners refuse new connections after SIGTERM", func() (bool, string) {
		var open []string
		for _, a := range []string{s.submission, s.tlsAddr} {
			if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				c.Close()
				open = append(open, a)
			}
		}
		return len(open) == 0, fmt.Sprintf("still accepting on %v", open)
	})
	if _, err := dw.Write(inflightMsg[half:]); err != nil {
		t.Fatalf("in-flight session after SIGTERM: %v", err)
	}
	if err := dw.Close(); err != nil {
		t.Fatalf("in-flight session after SIGTERM: %v", err)
	}
	code, text, err := inflight.tp.ReadResponse(0)
	inflightID, ok := opsReply{"message", code, text}.queued()
	if err != nil || !ok {
		t.Fatalf("the message in flight at SIGTERM: %d %s (%v), want 250 queued: open sessions may finish", code, text, err)
	}
	record(inflightID, inflightTag)
	if code, _, err := inflight.cmd("QUIT"); err != nil || code != 221 {
		t.Errorf("QUIT of the in-flight session: %d %v", code, err)
	}
	inflight.conn.Close()
	select {
	case <-s.done:
	case <-time.After(shutdownTimeout + stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("sluice serve still running %v after SIGTERM (shutdown_timeout %v)", shutdownTimeout+stopTimeout, shutdownTimeout)
	}
	took := time.Since(termAt)
	if s.err != nil {
		t.Errorf("sluice serve exited with %v after SIGTERM, want status 0", s.err)
	}
	if took > shutdownTimeout {
		t.Errorf("sluice serve took %v to exit after SIGTERM, more than shutdown_timeout %v", took, shutdownTimeout)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(commandTimeout):
		t.Fatalf("senders still running %v after the server exited", commandTimeout)
	}
	mu.Lock()
	if len(errs) > 0 {
		t.Errorf("sending failed before SIGTERM:\n%s", strings.Join(errs, "\n"))
	}
	final := map[string]string{}
	for id, tag := range acked {
		final[id] = tag
	}
	mu.Unlock()
	serverLog := s.stderr.String()
	if !strings.Contains(serverLog, "shutting down: no new connections") || !strings.Contains(serverLog, "submission stopped") {
		t.Errorf("the log does not show the graceful shutdown:\n%s", serverLog)
	}
	if strings.Contains(serverLog, "sessions cut at the shutdown deadline") {
		t.Errorf("sessions were cut although every client ends its session at once:\n%s", serverLog)
	}
	t.Logf("%d messages acknowledged; the server exited %v after SIGTERM", len(final), took.Round(time.Millisecond))

	// Every acknowledged message is in the spool, as sent; nothing else is.
	spooled := map[string]bool{}
	for _, id := range spoolIDs(t, s.dataDir) {
		spooled[id] = true
	}
	for id, tag := range final {
		sp := readSpooled(t, s.dataDir, id)
		if m := opsTagRe.FindSubmatch(sp.msg); m == nil || string(m[1]) != tag {
			t.Errorf("spool file %s does not hold message %s:\n%s", id, tag, dkimHead(sp.msg))
		}
	}
	for id := range spooled {
		if _, ok := final[id]; !ok {
			t.Errorf("spool holds %s, which no client saw acknowledged", id)
		}
	}
	if byID, _, _ := sink.snapshot(); len(byID) != 0 {
		t.Fatalf("the closed sink received messages: %v", byID)
	}

	// Restart with the sink accepting: all of them are delivered, once.
	sink.setOpen(true)
	s.restart()
	opsWaitDelivered(t, sink, final, s)
}

// TestSIGTERMCutsSessionsAtDeadline: sessions that do not end by
// themselves (one idle after AUTH, one stalled in the middle of DATA) hold
// the shutdown until [submission] shutdown_timeout, are cut then, and the
// process still exits 0; the unfinished message is not in the spool.
func TestSIGTERMCutsSessionsAtDeadline(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, "", alice)
	const shutdownTimeout = 2 * time.Second
	opsEditConfig(t, s, "[submission]\n", fmt.Sprintf("[submission]\nshutdown_timeout = %q\n", shutdownTimeout.String()))
	opsReload(t, s)

	idle, err := opsDial(s.tlsAddr, true)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.conn.Close()
	if code, text, err := idle.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH: %d %s %v", code, text, err)
	}
	stalled, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.conn.Close()
	if code, text, err := stalled.auth(alice.addr, alice.password); err != nil || code != 235 {
		t.Fatalf("AUTH: %d %s %v", code, text, err)
	}
	for _, c := range []struct {
		line string
		want int
	}{{"MAIL FROM:<" + alice.addr + ">", 250}, {"RCPT TO:<erin@remote.test>", 250}, {"DATA", 354}} {
		if code, text, err := stalled.cmd("%s", c.line); err != nil || code != c.want {
			t.Fatalf("%s: %d %s %v", c.line, code, text, err)
		}
	}
	dw := stalled.tp.DotWriter()
	dw.Write(opsMessage(alice.addr, "erin@remote.test", "term-stalled")[:40])
	if err := stalled.tp.W.Flush(); err != nil {
		t.Fatal(err)
	}

	s.stopping = true
	termAt := time.Now()
	opsSignal(t, s, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(shutdownTimeout + stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("sluice serve still running %v after SIGTERM with shutdown_timeout %v", shutdownTimeout+stopTimeout, shutdownTimeout)
	}
	took := time.Since(termAt)
	if s.err != nil {
		t.Errorf("sluice serve exited with %v after cutting sessions, want status 0", s.err)
	}
	if took < shutdownTimeout-100*time.Millisecond {
		t.Errorf("sluice serve exited %v after SIGTERM, before shutdown_timeout %v, with two sessions open", took, shutdownTimeout)
	}
	if !strings.Contains(s.stderr.String(), "sessions cut at the shutdown deadline") {
		t.Errorf("the log does not say that sessions were cut at the deadline:\n%s", s.stderr.String())
	}
	// Both clients see their connection end.
	for name, c := range map[string]*opsConn{"idle": idle, "stalled": stalled} {
		c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c.conn); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Errorf("%s session after the deadline: %v, want the connection closed", name, err)
		}
	}
	if ids := spoolIDs(t, s.dataDir); len(ids) != 0 {
		t.Errorf("spool holds %v: the message cut in DATA was never acknowledged", ids)
	}
}
