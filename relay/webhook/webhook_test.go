package webhook_test

// Tests of the outbox against real HTTP receivers on loopback (net/http
// servers): signatures a receiver can verify, selection by event type,
// retries after a refused connection or a 500, events kept across a
// reopen (a restart), a slow receiver not holding up another, redirects
// and old events.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/relay/webhook"
)

const secret = "test-secret-0123456789abcdef"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// got is one request a receiver saw.
type got struct {
	header http.Header
	body   []byte
	ev     webhook.Event
	at     time.Time
}

// receiver is a real HTTP server on loopback that records what it gets.
// status decides the answer of each request (default 204).
type receiver struct {
	t    *testing.T
	addr string
	srv  *http.Server

	mu     sync.Mutex
	got    []got
	status func(n int) int // n: 1 for the first request
	block  chan struct{}   // when set, requests wait for it to close
}

func startReceiver(t *testing.T, addr string) *receiver {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, addr: l.Addr().String()}
	r.srv = &http.Server{Handler: r}
	go r.srv.Serve(l)
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) stop() {
	r.mu.Lock()
	if r.block != nil {
		select {
		case <-r.block:
		default:
			close(r.block)
		}
	}
	r.mu.Unlock()
	r.srv.Close()
}

func (r *receiver) url() string { return "http://" + r.addr + "/hooks/sluice" }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		<-block
	}
	var ev webhook.Event
	json.Unmarshal(body, &ev)
	r.mu.Lock()
	r.got = append(r.got, got{header: req.Header.Clone(), body: body, ev: ev, at: time.Now()})
	n := len(r.got)
	status := r.status
	r.mu.Unlock()
	code := http.StatusNoContent
	if status != nil {
		code = status(n)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/hooks/sluice" {
		code = http.StatusNotFound
	}
	w.WriteHeader(code)
}

func (r *receiver) requests() []got {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]got(nil), r.got...)
}

// waitFor polls until cond holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; %s", what, timeout, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recompute is the receiver's side of the signature, written from the
// documented format, not with the package's Sign.
func recompute(t *testing.T, header string, body []byte) (ts int64, ok bool) {
	t.Helper()
	var sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts, _ = strconv.ParseInt(v, 10, 64)
		case "v1":
			sig = v
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10) + "."))
	m.Write(body)
	want := hex.EncodeToString(m.Sum(nil))
	return ts, ts > 0 && hmac.Equal([]byte(sig), []byte(want))
}

func run(t *testing.T, o *webhook.Outbox) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func open(t *testing.T, dir string, eps ...webhook.Endpoint) *webhook.Outbox {
	t.Helper()
	o, err := webhook.Open(dir, eps, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"message.held"}`)
	now := time.Unix(1700000000, 0)
	good := webhook.Sign(secret, now.Unix(), body)
	if !strings.HasPrefix(good, "t=1700000000,v1=") {
		t.Fatalf("Sign = %q, want t=1700000000,v1=HEX", good)
	}
	if _, ok := recompute(t, good, body); !ok {
		t.Fatalf("Sign = %q does not match HMAC-SHA256(secret, \"t.\" + body) computed by the receiver", good)
	}
	for _, c := range []struct {
		name, secret, header string
		body                 []byte
		now                  time.Time
		ok                   bool
	}{
		{"valid", secret, good, body, now, true},
		{"valid-with-old-and-new-v1", secret, strings.Replace(good, "v1=", "v1=00ff,v1=", 1), body, now, true},
		{"wrong-secret", "another-secret", good, body, now, false},
		{"body-changed", secret, good, []byte(`{"id":"evt_1","type":"login.suspended"}`), now, false},
		{"timestamp-changed", secret, strings.Replace(good, "t=1700000000", "t=1700000001", 1), body, now.Add(time.Second), false},
		{"too-old", secret, good, body, now.Add(6 * time.Minute), false},
		{"from-the-future", secret, good, body, now.Add(-6 * time.Minute), false},
		{"no-signature", secret, "t=1700000000", body, now, false},
		{"empty", secret, "", body, now, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.Verify(c.secret, c.header, c.body, c.now, 5*time.Minute)
			if (err == nil) != c.ok {
				t.Errorf("Verify(%q) = %v, want ok=%v", c.header, err, c.ok)
			}
			if err != nil && !errors.Is(err, webhook.ErrBadSignature) {
				t.Errorf("Verify error %v is not ErrBadSignature", err)
			}
		})
	}
}

func TestOpenRefusesBadEndpoints(t *testing.T) {
	for _, c := range []struct {
		name string
		eps  []webhook.Endpoint
		want string
	}{
		{"no-secret", []webhook.Endpoint{{URL: "http://127.0.0.1:1/x"}}, "has no secret"},
		{"twice", []webhook.Endpoint{{URL: "http://127.0.0.1:1/x", Secret: secret}, {URL: "http://127.0.0.1:1/x", Secret: secret}}, "configured twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := webhook.Open(t.TempDir(), c.eps, quiet)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open = %v, want one line saying %q", err, c.want)
			}
		})
	}
}

// TestEventsSelectedSignedOnce: each receiver gets the types it chose,
// each once, signed, with the event's id in a header; the outbox ends
// empty.
func TestEventsSelectedSignedOnce(t *testing.T) {
	all := startReceiver(t, "")
	def := startReceiver(t, "")
	quota := startReceiver(t, "")
	dir := t.TempDir()
	o := open(t, dir,
		webhook.Endpoint{URL: all.url(), Secret: secret, Events: webhook.Types},
		webhook.Endpoint{URL: def.url(), Secret: secret},
		webhook.Endpoint{URL: quota.url(), Secret: secret, Events: []string{webhook.QuotaReached}})
	run(t, o)
	for _, typ := range webhook.Types {
		o.Emit(typ, map[string]string{"login": "info@example.test", "what": typ})
	}
	want := map[*receiver][]string{
		all:   webhook.Types,
		def:   {webhook.MessageHeld, webhook.LoginSuspended, webhook.QuotaReached, webhook.MessageBounced},
		quota: {webhook.QuotaReached},
	}
	waitFor(t, "every event delivered and the outbox empty", 10*time.Second, func() (bool, string) {
		n := 0
		for r := range want {
			n += len(r.requests())
		}
		return o.Pending() == 0 && n == 10, fmt.Sprintf("%d requests, %d pending", n, o.Pending())
	})
	ids := map[string]string{}
	for r, types := range want {
		reqs := r.requests()
		var gotTypes []string
		for _, g := range reqs {
			gotTypes = append(gotTypes, g.ev.Type)
			ts, ok := recompute(t, g.header.Get("Sluice-Signature"), g.body)
			if !ok {
				t.Errorf("%s: signature %q does not verify", g.ev.Type, g.header.Get("Sluice-Signature"))
			}
			if d := time.Since(time.Unix(ts, 0)); d < -time.Second || d > time.Minute {
				t.Errorf("%s: signature time %d is %v from now", g.ev.Type, ts, d)
			}
			if g.header.Get("Sluice-Event") != g.ev.Type || g.header.Get("Sluice-Event-Id") != g.ev.ID || !strings.HasPrefix(g.ev.ID, "evt_") {
				t.Errorf("headers Sluice-Event=%q Sluice-Event-Id=%q for event %s %s", g.header.Get("Sluice-Event"), g.header.Get("Sluice-Event-Id"), g.ev.Type, g.ev.ID)
			}
			if ct := g.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if prev, ok := ids[g.ev.ID]; ok && prev != g.ev.Type {
				t.Errorf("event id %s used for %s and %s", g.ev.ID, prev, g.ev.Type)
			}
			ids[g.ev.ID] = g.ev.Type
			if d := g.ev.Data.(map[string]any)["what"]; d != g.ev.Type {
				t.Errorf("event %s carries data %v", g.ev.Type, g.ev.Data)
			}
		}
		if strings.Join(gotTypes, " ") != strings.Join(types, " ") {
			t.Errorf("receiver %s got %v, want %v, in that order, each once", r.addr, gotTypes, types)
		}
	}
}

// pendingFiles reads the outbox's files.
func pendingFiles(t *testing.T, dir string) []map[string]any {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var out []map[string]any
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var m map[string]any
		if json.Unmarshal(data, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func attempted(t *testing.T, dir string, n int) func() (bool, string) {
	return func() (bool, string) {
		files := pendingFiles(t, dir)
		for _, f := range files {
			if a, _ := f["attempts"].(float64); int(a) >= n {
				return true, ""
			}
		}
		return false, fmt.Sprintf("outbox: %v", files)
	}
}

// TestRetriesUntilReceiverAnswers: a receiver that refuses connections,
// then answers 500, then 204, gets each event once it answers 2xx, in the
// order they were emitted.
func TestRetriesUntilReceiverAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: connections are refused
	dir := t.TempDir()
	o := open(t, dir, webhook.Endpoint{URL: "http://" + addr + "/hooks/sluice", Secret: secret})
	o.SetRetry([]time.Duration{100 * time.Millisecond}, time.Hour)
	run(t, o)
	o.Emit(webhook.MessageHeld, map[string]string{"n": "1"})
	o.Emit(webhook.MessageHeld, map[string]string{"n": "2"})
	waitFor(t, "a refused attempt recorded", 10*time.Second, attempted(t, dir, 1))

	r := startReceiver(t, addr)
	r.mu.Lock()
	r.status = func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	r.mu.Unlock()
	waitFor(t, "both events delivered", 10*time.Second, func() (bool, string) {
		return o.Pending() == 0, fmt.Sprintf("%d requests, %d pending", len(r.requests()), o.Pending())
	})
	var order []string
	for _, g := range r.requests() {
		order = append(order, g.ev.Data.(map[string]any)["n"].(string))
	}
	// The first event is tried until it passes; the second waits behind it.
	if strings.Join(order, ",") != "1,1,1,2" {
		t.Errorf("requests carried events %v, want 1,1,1,2 (two 500s for the first, then each once)", order)
	}
}

// TestSurvivesRestart: events emitted while the receiver is down are on
// disk; a new Outbox on the same directory (the next process) sends them,
// each once.
func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	r := startReceiver(t, "")
	url := r.url()
	first := open(t, dir, webhook.Endpoint{URL: url, Secret: secret})
	for i := range 3 {
		first.Emit(webhook.MessageBounced, map[string]int{"n": i})
	}
	if n := first.Pending(); n != 3 {
		t.Fatalf("outbox holds %d events after 3 emits with nothing running, want 3", n)
	}
	// A torn temporary file of a write cut by a crash is cleaned up.
	if err := os.WriteFile(filepath.Join(dir, ".d123.json.tmp"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An event stored under the file name of an older version is kept.
	oldName, _ := json.Marshal(map[string]any{"endpoint": 0, "url": url, "body": json.RawMessage(`{"id":"evt_old","type":"message.held","data":{}}`),
		"attempts": 2, "next_try": time.Now(), "created": time.Now()})
	if err := os.WriteFile(filepath.Join(dir, "d1700000000000abcdef.json"), oldName, 0o600); err != nil {
		t.Fatal(err)
	}
	second := open(t, dir, webhook.Endpoint{URL: url, Secret: secret})
	if _, err := os.Stat(filepath.Join(dir, ".d123.json.tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary file left after Open: %v", err)
	}
	run(t, second)
	waitFor(t, "4 events delivered after the restart", 10*time.Second, func() (bool, string) {
		return second.Pending() == 0, fmt.Sprintf("%d requests", len(r.requests()))
	})
	seen := map[string]int{}
	for _, g := range r.requests() {
		seen[g.ev.ID]++
	}
	if len(seen) != 4 || len(r.requests()) != 4 || seen["evt_old"] != 1 {
		t.Errorf("receiver got %d requests for events %v, want 4 events (evt_old among them) once each", len(r.requests()), seen)
	}
}

// TestSlowReceiverDoesNotBlockOthers: while one receiver holds its request
// open, another still gets its events.
func TestSlowReceiverDoesNotBlockOthers(t *testing.T) {
	slow := startReceiver(t, "")
	slow.mu.Lock()
	slow.block = make(chan struct{})
	slow.mu.Unlock()
	fast := startReceiver(t, "")
	o := open(t, t.TempDir(), webhook.Endpoint{URL: slow.url(), Secret: secret}, webhook.Endpoint{URL: fast.url(), Secret: secret})
	o.SetTimeout(time.Minute)
	run(t, o)
	o.Emit(webhook.MessageHeld, map[string]int{"n": 1})
	o.Emit(webhook.MessageHeld, map[string]int{"n": 2})
	waitFor(t, "the fast receiver has both events while the slow one hangs", 10*time.Second, func() (bool, string) {
		return len(fast.requests()) == 2, fmt.Sprintf("fast got %d", len(fast.requests()))
	})
	slow.stop()
}

// TestRedirectIsAFailure: a 302 is not followed (the signed event would go
// somewhere not configured, as a GET); the event stays for a retry.
func TestRedirectIsAFailure(t *testing.T) {
	target := startReceiver(t, "")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target.url(), http.StatusFound) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	o := open(t, dir, webhook.Endpoint{URL: "http://" + l.Addr().String() + "/hook", Secret: secret})
	run(t, o)
	o.Emit(webhook.QuotaReached, map[string]int{"limit": 1})
	waitFor(t, "the redirect answer recorded as a failed attempt", 10*time.Second, attempted(t, dir, 1))
	files := pendingFiles(t, dir)
	if len(files) != 1 || files[0]["last_error"] != "HTTP 302" {
		t.Errorf("outbox after a redirect: %v, want the event kept with last_error HTTP 302", files)
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("the redirect target got %d requests, want none", n)
	}
}

// TestDropped: an event older than the maximum age is dropped after a
// failed try, and events for a receiver removed from the configuration
// are dropped at the next start.
func TestDropped(t *testing.T) {
	t.Run("too-old", func(t *testing.T) {
		dir := t.TempDir()
		o := open(t, dir, webhook.Endpoint{URL: "http://127.0.0.1:9/hook", Secret: secret})
		o.SetRetry([]time.Duration{10 * time.Millisecond}, 300*time.Millisecond)
		run(t, o)
		o.Emit(webhook.MessageHeld, nil)
		waitFor(t, "the old event dropped", 10*time.Second, func() (bool, string) {
			return o.Pending() == 0, fmt.Sprintf("%v", pendingFiles(t, dir))
		})
	})
	t.Run("receiver-removed", func(t *testing.T) {
		dir := t.TempDir()
		kept := startReceiver(t, "")
		old := open(t, dir, webhook.Endpoint{URL: "http://127.0.0.1:9/gone", Secret: secret}, webhook.Endpoint{URL: kept.url(), Secret: secret})
		old.Emit(webhook.MessageHeld, nil)
		// The next start lists only the kept receiver, and first: the
		// events follow the URL, not the position in the list.
		o := open(t, dir, webhook.Endpoint{URL: kept.url(), Secret: secret})
		run(t, o)
		waitFor(t, "the kept receiver's event sent, the other dropped", 10*time.Second, func() (bool, string) {
			return o.Pending() == 0 && len(kept.requests()) == 1, fmt.Sprintf("%v", pendingFiles(t, dir))
		})
	})
}
