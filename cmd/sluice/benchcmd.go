package main

// sluice bench: a load generator for any SMTP submission server. It speaks
// SMTP itself (a small client on net/textproto) so that it can time each
// step exactly and keep every reply code.

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const benchUsage = `usage: sluice bench --addr HOST:PORT [flags]

Load generator for any SMTP submission server (Sluice or another). Opens
--concurrency connections, each sending messages one after the other, and
prints how many were accepted (2xx), deferred (4xx) and rejected (5xx) by
reply code and enhanced code, accepted messages per second, and latency
percentiles (p50, p90, p99, max) of:
  connect  TCP connect, greeting, EHLO and the TLS handshake (with STARTTLS:
           the STARTTLS command and the EHLO after it), until AUTH may start
  auth     from sending AUTH to the 235 reply
  data     from writing the final "." of DATA to the server's reply
  message  from MAIL FROM to the reply after DATA

flags:
  --addr HOST:PORT      server to load (default 127.0.0.1:587)
  --tls MODE            implicit (port 465), starttls (port 587, default) or none.
                        Certificates are NOT verified (InsecureSkipVerify): this is
                        a load tool, do not send real credentials over an untrusted
                        network with it
  --user LOGIN          log in as LOGIN (AUTH PLAIN, or LOGIN if PLAIN is not offered)
  --password PASSWORD   its password (visible in ps: prefer --users on shared hosts)
  --users FILE          many logins: lines "login password" (# comments allowed),
                        used round-robin, one login per connection
  --auth MECH           auto (default), plain, login or none (no AUTH even with users)
  --concurrency N       connections at once (default 10)
  --messages N          stop after N messages (default 1000; with --duration and
                        no --messages: no message limit; 0: none)
  --duration D          stop starting messages after D (e.g. 30s)
  --size BYTES          body size in bytes, lines of 76 characters (default 5000)
  --recipients N        recipients per message (default 1)
  --rate N              start at most N messages per second in all (spread evenly;
                        default 0: as fast as the connections go), to measure
                        latency at a given load
  --reuse N             messages per connection before QUIT and a new connection;
                        0 (default): all on one connection
  --from PATTERN        envelope and header sender (default {user}, the login)
  --to PATTERN          recipients (default rcpt{n}@sink.test)
                        Patterns: {user} the login, {domain} its domain, {worker}
                        the connection slot (0..concurrency-1), {n} the message
                        number in --from and a counter increasing with every
                        recipient in --to
  --pipelining MODE     auto (default): send MAIL, RCPT and DATA in one write when
                        the server offers PIPELINING, as msmtp and Postfix do;
                        off: one command at a time, as PHPMailer does
  --tls-groups LIST     key exchange groups offered in TLS, comma-separated, of
                        x25519, p256, p384, x25519mlkem768 (default x25519,p256:
                        what OpenSSL 3.0 clients offer, PHP's and Python's on
                        Debian 12; x25519mlkem768 first, as Go and OpenSSL 3.5
                        clients do, costs both sides about a third more per
                        handshake)
  --helo NAME           EHLO name (default bench.sluice.invalid)
  --timeout D           deadline for each step (connect, each command and its
                        reply, the DATA upload) (default 60s)
  --json                print the report as JSON instead of text

Ctrl-C stops starting messages, lets the ones in flight finish and prints the
report. On a terminal a progress line is updated on stderr every second.
Exits 1 when messages were sent but none was accepted.`

// benchCred is one login.
type benchCred struct{ login, password string }

type benchOptions struct {
	addr        string
	tlsMode     string // implicit, starttls, none
	auth        string // auto, plain, login, none
	creds       []benchCred
	concurrency int
	messages    int
	duration    time.Duration
	size        int
	recipients  int
	reuse       int
	rate        float64 // messages started per second, 0: no limit
	from, to    string
	helo        string
	pipelining  bool // use PIPELINING when offered
	groups      []tls.CurveID
	timeout     time.Duration
	json        bool
}

func cmdBench(args []string, stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" || a == "help" {
			fmt.Fprintln(stdout, benchUsage)
			return nil
		}
	}
	o, err := parseBenchFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the process at once
	}()
	rep := runBench(ctx, o, stderr)
	if o.json {
		if err := writeBenchJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		writeBenchText(stdout, rep)
	}
	if rep.Sent > 0 && rep.Accepted == 0 {
		return errors.New("no message was accepted; see the replies in the report")
	}
	return nil
}

func parseBenchFlags(args []string) (*benchOptions, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &benchOptions{}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:587", "")
	fs.StringVar(&o.tlsMode, "tls", "starttls", "")
	fs.StringVar(&o.auth, "auth", "auto", "")
	user := fs.String("user", "", "")
	password := fs.String("password", "", "")
	usersFile := fs.String("users", "", "")
	fs.IntVar(&o.concurrency, "concurrency", 10, "")
	fs.IntVar(&o.messages, "messages", 1000, "")
	fs.DurationVar(&o.duration, "duration", 0, "")
	fs.IntVar(&o.size, "size", 5000, "")
	fs.IntVar(&o.recipients, "recipients", 1, "")
	fs.IntVar(&o.reuse, "reuse", 0, "")
	fs.Float64Var(&o.rate, "rate", 0, "")
	fs.StringVar(&o.from, "from", "{user}", "")
	fs.StringVar(&o.to, "to", "rcpt{n}@sink.test", "")
	fs.StringVar(&o.helo, "helo", "bench.sluice.invalid", "")
	pipelining := fs.String("pipelining", "auto", "")
	groups := fs.String("tls-groups", "x25519,p256", "")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "")
	fs.BoolVar(&o.json, "json", false, "")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, usagef("%v (see sluice bench --help)", err)
	}
	if len(pos) > 0 {
		return nil, usagef("unexpected argument %q (see sluice bench --help)", pos[0])
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["duration"] && !set["messages"] {
		o.messages = 0
	}

	if _, port, err := net.SplitHostPort(o.addr); err != nil || port == "" {
		return nil, usagef("--addr %q is not host:port, e.g. 127.0.0.1:587", o.addr)
	}
	switch o.tlsMode {
	case "implicit", "starttls", "none":
	default:
		return nil, usagef("--tls %q: use implicit, starttls or none", o.tlsMode)
	}
	if o.groups, err = parseTLSGroups(*groups); err != nil {
		return nil, err
	}
	switch *pipelining {
	case "auto", "off":
		o.pipelining = *pipelining == "auto"
	default:
		return nil, usagef("--pipelining %q: use auto or off", *pipelining)
	}
	switch o.auth {
	case "auto", "plain", "login", "none":
	default:
		return nil, usagef("--auth %q: use auto, plain, login or none", o.auth)
	}
	switch {
	case *usersFile != "" && *user != "":
		return nil, usagef("give --user or --users, not both")
	case *password != "" && *user == "":
		return nil, usagef("--password needs --user")
	case *user != "":
		o.creds = []benchCred{{*user, *password}}
	case *usersFile != "":
		o.creds, err = readBenchUsers(*usersFile)
		if err != nil {
			return nil, err
		}
	}
	switch {
	case o.concurrency < 1 || o.concurrency > 100000:
		return nil, usagef("--concurrency must be from 1 to 100000")
	case o.messages < 0:
		return nil, usagef("--messages must be 0 or more")
	case o.duration < 0:
		return nil, usagef("--duration must be positive")
	case o.messages == 0 && o.duration == 0:
		return nil, usagef("give --messages N or --duration D: the run must end by itself")
	case o.size < 0 || o.size > 1<<30:
		return nil, usagef("--size must be from 0 to 1073741824 bytes")
	case o.recipients < 1:
		return nil, usagef("--recipients must be at least 1")
	case o.rate < 0:
		return nil, usagef("--rate must be 0 (no limit) or more messages per second")
	case o.reuse < 0:
		return nil, usagef("--reuse must be 0 (all messages on one connection) or more")
	case o.timeout <= 0:
		return nil, usagef("--timeout must be positive, e.g. 30s")
	case o.from == "":
		return nil, usagef("--from is empty")
	case o.to == "":
		return nil, usagef("--to is empty")
	case o.helo == "" || strings.ContainsAny(o.helo, " \t\r\n"):
		return nil, usagef("--helo %q is not a host name", o.helo)
	}
	if len(o.creds) == 0 {
		if strings.Contains(o.from, "{user}") || strings.Contains(o.from, "{domain}") ||
			strings.Contains(o.to, "{user}") || strings.Contains(o.to, "{domain}") {
			return nil, usagef("without --user or --users there is no login for {user} or {domain}; give --from ADDRESS")
		}
		if o.auth == "plain" || o.auth == "login" {
			return nil, usagef("--auth %s needs --user or --users", o.auth)
		}
		o.auth = "none"
	}
	for _, p := range []string{o.from, o.to} {
		if strings.ContainsAny(p, "<>\r\n \t") {
			return nil, usagef("address pattern %q: write a bare address, without <>, spaces or line breaks", p)
		}
	}
	return o, nil
}

// readBenchUsers reads "login password" lines.
// parseTLSGroups reads --tls-groups.
func parseTLSGroups(list string) ([]tls.CurveID, error) {
	names := map[string]tls.CurveID{"x25519": tls.X25519, "p256": tls.CurveP256, "p384": tls.CurveP384,
		"x25519mlkem768": tls.X25519MLKEM768}
	var ids []tls.CurveID
	for _, n := range strings.Split(list, ",") {
		id, ok := names[strings.ToLower(strings.TrimSpace(n))]
		if !ok {
			return nil, usagef("--tls-groups: %q is not one of x25519, p256, p384, x25519mlkem768", strings.TrimSpace(n))
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func readBenchUsers(path string) ([]benchCred, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--users: %w", err)
	}
	var creds []benchCred
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		login, pw, ok := strings.Cut(t, " ")
		if !ok {
			login, pw, ok = strings.Cut(t, "\t")
		}
		pw = strings.TrimSpace(pw)
		if !ok || login == "" || pw == "" {
			return nil, usagef("--users %s line %d: want \"login password\"", path, i+1)
		}
		creds = append(creds, benchCred{login, pw})
	}
	if len(creds) == 0 {
		return nil, usagef("--users %s holds no \"login password\" line", path)
	}
	return creds, nil
}

// benchRun is one run: the options, the shared budget and the statistics.
type benchRun struct {
	o        *benchOptions
	ctx      context.Context
	tokenLen int    // the body's first line, different in every message
	body     []byte // the rest of the body, the same in every message
	tlsConf  *tls.Config
	deadline time.Time // zero: no --duration
	start    time.Time

	claimed atomic.Int64 // messages handed out
	rcptN   atomic.Int64 // {n} in --to
	connN   atomic.Int64 // connections started (round-robin over logins)
	st      *benchStats
}

func runBench(ctx context.Context, o *benchOptions, stderr io.Writer) *benchReport {
	host, _, _ := net.SplitHostPort(o.addr)
	r := &benchRun{
		o: o, ctx: ctx, st: newBenchStats(),
		tlsConf: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, CurvePreferences: o.groups},
	}
	if net.ParseIP(host) == nil {
		r.tlsConf.ServerName = host
	}
	r.tokenLen, r.body = benchBodyParts(o.size)
	cpu0 := processCPU()
	start := time.Now()
	r.start = start
	if o.duration > 0 {
		r.deadline = start.Add(o.duration)
	}
	stopProgress := startBenchProgress(r, stderr, start)
	var wg sync.WaitGroup
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r.worker(w)
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	rep := r.st.report(o, elapsed, ctx.Err() != nil)
	rep.ClientCPU = (processCPU() - cpu0).Seconds()
	return rep
}

// processCPU is the CPU time (user and system) this process has used so
// far: the load generator's own cost, which shares the machine with the
// server it measures when both run on one host.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// claim hands out the next message number, or false when the run is over.
func (r *benchRun) claim() (int64, bool) {
	if r.ctx.Err() != nil {
		return 0, false
	}
	if !r.deadline.IsZero() && !time.Now().Before(r.deadline) {
		return 0, false
	}
	n := r.claimed.Add(1)
	if r.o.messages > 0 && n > int64(r.o.messages) {
		return 0, false
	}
	if r.o.rate > 0 {
		// Message n starts at its place in the schedule, not before.
		due := r.start.Add(time.Duration(float64(n-1) / r.o.rate * float64(time.Second)))
		if !r.deadline.IsZero() && !due.Before(r.deadline) {
			return 0, false
		}
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-r.ctx.Done():
				return 0, false
			case <-t.C:
			}
		}
	}
	return n, true
}

func (r *benchRun) worker(w int) {
	var c *benchConn
	defer func() {
		if c != nil {
			c.quit()
		}
	}()
	for {
		n, ok := r.claim()
		if !ok {
			return
		}
		if c == nil {
			var f *benchFail
			c, f = r.open(w)
			if f != nil {
				r.st.connFailed()
				r.st.fail(f)
				// Do not spin on a server that refuses: a short pause.
				select {
				case <-r.ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
		}
		keep := c.send(n)
		c.sent++ // accepted or not, the message counts for --reuse
		if !keep {
			c.close()
			c = nil
			continue
		}
		if r.o.reuse > 0 && c.sent >= r.o.reuse {
			c.quit()
			c = nil
		}
	}
}
