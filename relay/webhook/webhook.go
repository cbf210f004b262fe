// Package webhook tells a hosting platform what Sluice did with its
// customers' mail: events (message held, login suspended, quota reached,
// message bounced, message delivered) POSTed as JSON to configured URLs,
// signed with HMAC-SHA256 over the timestamp and body, and kept in a small
// durable outbox on disk until the receiver answers 2xx, with backoff
// between tries. Events survive a restart of Sluice.
//
// The signature header, like the large sending services':
//
//	Sluice-Signature: t=1700000000,v1=HEX(HMAC-SHA256(secret, "1700000000." + body))
//
// t is the time of the attempt (a retry signs again with a new time), so a
// receiver can refuse signatures older than a few minutes.
//
// Delivery is at least once: an event is removed from the outbox only
// after its receiver answered 2xx, so a crash between the answer and the
// removal sends it again. Every copy of an event carries the same id (in
// the body and in the Sluice-Event-Id header); receivers drop ids they
// have seen. Events for one receiver are sent one at a time, oldest first;
// while a receiver fails, its later events wait behind the failed one.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sluice/relay/spool"
)

// Event types.
const (
	MessageHeld      = "message.held"
	LoginSuspended   = "login.suspended"
	QuotaReached     = "quota.reached"
	MessageBounced   = "message.bounced"
	MessageDelivered = "message.delivered"
)

// Types lists every event type.
var Types = []string{MessageHeld, LoginSuspended, QuotaReached, MessageBounced, MessageDelivered}

// Endpoint is one receiver.
type Endpoint struct {
	URL    string
	Secret string
	Events []string // empty: every type but message.delivered
}

func (e Endpoint) wants(event string) bool {
	if len(e.Events) == 0 {
		return event != MessageDelivered
	}
	for _, t := range e.Events {
		if t == event {
			return true
		}
	}
	return false
}

// Event is what a receiver gets.
type Event struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Created time.Time `json:"created"`
	Data    any       `json:"data"`
}

// pending is one event for one endpoint, as stored in the outbox: one file
// per event and endpoint, named so that names sort by creation time.
type pending struct {
	Endpoint int             `json:"endpoint"` // index at creation (informative)
	URL      string          `json:"url"`      // the endpoint it is for
	Body     json.RawMessage `json:"body"`
	Attempts int             `json:"attempts"`
	NextTry  time.Time       `json:"next_try"`
	Created  time.Time       `json:"created"`
	LastErr  string          `json:"last_error,omitempty"`
}

// Outbox stores and sends events.
type Outbox struct {
	dir     string
	workers []*worker
	retry   []time.Duration
	maxAge  time.Duration
	client  *http.Client
	log     *slog.Logger
}

// worker sends the events of one endpoint, one at a time, oldest first.
type worker struct {
	ep   Endpoint
	tag  string // in the outbox file names of its events
	wake chan struct{}
}

// endpointTag is the short name of an endpoint in file names.
func endpointTag(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:4])
}

// Open returns the outbox in dir for endpoints. Every endpoint needs a
// secret: unsigned events could be forged by anyone who can reach the
// receiver. Events left for receivers no longer configured are dropped.
func Open(dir string, endpoints []Endpoint, log *slog.Logger) (*Outbox, error) {
	o := &Outbox{dir: dir, log: log,
		retry:  []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour},
		maxAge: 3 * 24 * time.Hour,
		client: &http.Client{
			Timeout: 10 * time.Second,
			// A redirect is a failure: following it would turn the
			// POST into a GET, or send the signed event somewhere not
			// configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	seen := map[string]bool{}
	for _, ep := range endpoints {
		if ep.Secret == "" {
			return nil, fmt.Errorf("[[webhooks]] url %q has no secret; set secret to a long random string (e.g. openssl rand -hex 32), the receiver checks the signature with it", ep.URL)
		}
		if seen[ep.URL] {
			return nil, fmt.Errorf("[[webhooks]] url %q is configured twice; list its events in one table", ep.URL)
		}
		seen[ep.URL] = true
		o.workers = append(o.workers, &worker{ep: ep, tag: endpointTag(ep.URL), wake: make(chan struct{}, 1)})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	if err := o.tidy(); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return o, nil
}

// tidy removes temporary files of writes cut short by a crash (never
// renamed, so never part of the outbox) and events whose receiver is no
// longer configured.
func (o *Outbox) tidy() error {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(o.dir, name)
		if strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp") {
			os.Remove(path)
			continue
		}
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		var p pending
		data, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(data, &p)
		}
		switch {
		case err != nil:
			o.log.Error("webhook: dropping an unreadable outbox file", "file", name, "err", err)
			os.Remove(path)
		case o.worker(p.URL) == nil:
			o.log.Warn("webhook: dropping an event for a receiver no longer configured", "url", p.URL, "file", name)
			os.Remove(path)
		case !strings.HasSuffix(name, "-"+endpointTag(p.URL)+".json"):
			// Written by an older version: renamed into the order of
			// its creation.
			renamed := fmt.Sprintf("d%020d-%s.json", p.Created.UnixNano(), endpointTag(p.URL))
			if err := os.Rename(path, filepath.Join(o.dir, renamed)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (o *Outbox) worker(url string) *worker {
	for _, w := range o.workers {
		if w.ep.URL == url {
			return w
		}
	}
	return nil
}

// SetRetry changes the waits between tries (the last repeats) and how
// long an event is kept before it is dropped.
func (o *Outbox) SetRetry(retry []time.Duration, maxAge time.Duration) {
	if len(retry) > 0 {
		o.retry = retry
	}
	if maxAge > 0 {
		o.maxAge = maxAge
	}
}

// SetTimeout changes how long one POST may take (default 10s).
func (o *Outbox) SetTimeout(d time.Duration) {
	if d > 0 {
		o.client.Timeout = d
	}
}

// Wants reports whether any endpoint takes events of this type, so that a
// caller can skip gathering data nobody receives.
func (o *Outbox) Wants(eventType string) bool {
	if o == nil {
		return false
	}
	for _, w := range o.workers {
		if w.ep.wants(eventType) {
			return true
		}
	}
	return false
}

// lastStamp makes the time part of file names strictly increasing, so
// that names sort in the order events were emitted.
var lastStamp atomic.Int64

func stamp() int64 {
	for {
		now, last := time.Now().UnixNano(), lastStamp.Load()
		if now <= last {
			now = last + 1
		}
		if lastStamp.CompareAndSwap(last, now) {
			return now
		}
	}
}

func newEventID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return fmt.Sprintf("evt_%d%s", time.Now().UnixMilli(), hex.EncodeToString(b))
}

// Emit records an event for every endpoint that wants it. It returns once
// the event is on disk (file and directory synced).
func (o *Outbox) Emit(eventType string, data any) {
	if o == nil || !o.Wants(eventType) {
		return
	}
	ev := Event{ID: newEventID(), Type: eventType, Created: time.Now().UTC(), Data: data}
	body, err := json.Marshal(ev)
	if err != nil {
		o.log.Error("webhook: event not encoded", "type", eventType, "err", err)
		return
	}
	var woken []*worker
	for i, w := range o.workers {
		if !w.ep.wants(eventType) {
			continue
		}
		p := pending{Endpoint: i, URL: w.ep.URL, Body: body, NextTry: ev.Created, Created: ev.Created}
		name := fmt.Sprintf("d%020d-%s.json", stamp(), w.tag)
		if err := o.save(name, &p); err != nil {
			o.log.Error("webhook: event not stored; it is lost", "type", eventType, "id", ev.ID, "url", w.ep.URL, "err", err)
			continue
		}
		woken = append(woken, w)
	}
	if len(woken) == 0 {
		return
	}
	for _, w := range woken {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// save writes p to name durably (spool.ReplaceFile).
func (o *Outbox) save(name string, p *pending) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return spool.ReplaceFile(filepath.Join(o.dir, name), data, 0o600)
}

// Run sends events until ctx is done: each endpoint on its own, so a slow
// or dead receiver does not hold up the others.
func (o *Outbox) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				o.flush(ctx, w)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				case <-w.wake:
				}
			}
		}()
	}
	wg.Wait()
}

// Pending counts the events waiting in the outbox.
func (o *Outbox) Pending() int {
	return len(o.names(""))
}

// names lists the outbox files (of one endpoint's tag, or all), oldest
// first.
func (o *Outbox) names(tag string) []string {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		o.log.Error("webhook: cannot read the outbox", "dir", o.dir, "err", err)
		return nil
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		suffix := ".json"
		if tag != "" {
			suffix = "-" + tag + ".json"
		}
		if strings.HasPrefix(n, "d") && strings.HasSuffix(n, suffix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// flush sends w's due events, oldest first, and stops at the first one
// that fails or waits for its retry: later events wait behind it.
func (o *Outbox) flush(ctx context.Context, w *worker) {
	for _, name := range o.names(w.tag) {
		if ctx.Err() != nil {
			return
		}
		path := filepath.Join(o.dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var p pending
		if err := json.Unmarshal(data, &p); err != nil {
			o.log.Error("webhook: dropping an unreadable outbox file", "file", name, "err", err)
			os.Remove(path)
			continue
		}
		if time.Since(p.Created) > o.maxAge {
			o.log.Error("webhook: event dropped after retrying too long", "url", p.URL, "attempts", p.Attempts, "last_error", p.LastErr)
			os.Remove(path)
			continue
		}
		if time.Now().Before(p.NextTry) {
			return
		}
		err = o.post(ctx, w.ep, p.Body)
		if err == nil {
			if err := os.Remove(path); err != nil {
				o.log.Error("webhook: delivered event not removed; it will be sent again", "file", name, "err", err)
			}
			continue
		}
		if ctx.Err() != nil {
			return // shutting down: not the receiver's fault
		}
		p.Attempts++
		p.LastErr = err.Error()
		p.NextTry = time.Now().Add(o.retry[min(p.Attempts-1, len(o.retry)-1)])
		o.log.Warn("webhook: delivery failed; will retry", "url", p.URL, "attempts", p.Attempts, "next", p.NextTry, "err", err)
		if err := o.save(name, &p); err != nil {
			o.log.Error("webhook: retry state not saved", "file", name, "err", err)
		}
		return
	}
}

// Sign computes the Sluice-Signature header value for body at time ts.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(m.Sum(nil)))
}

// ErrBadSignature is returned by Verify.
var ErrBadSignature = errors.New("webhook: signature does not match")

// Verify checks a Sluice-Signature header against body and secret, and that
// its time is within tolerance of now. It is what a receiver written in Go
// does; the tests use it as a reference.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts int64
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			if _, err := fmt.Sscanf(v, "%d", &ts); err != nil {
				return fmt.Errorf("%w: bad t=%q", ErrBadSignature, v)
			}
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts == 0 || len(sigs) == 0 {
		return fmt.Errorf("%w: header %q lacks t= or v1=", ErrBadSignature, header)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %d is %v away from now", ErrBadSignature, ts, d)
	}
	_, want, _ := strings.Cut(Sign(secret, ts, body), "v1=")
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}

func (o *Outbox) post(ctx context.Context, ep Endpoint, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	var ev struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	json.Unmarshal(body, &ev)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Sluice-Webhook/1")
	req.Header.Set("Sluice-Event", ev.Type)
	req.Header.Set("Sluice-Event-Id", ev.ID)
	req.Header.Set("Sluice-Signature", Sign(ep.Secret, time.Now().Unix(), body))
	resp, err := o.client.Do(req)
	if err != nil {
		return err
	}
	// Read a little of the answer so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
