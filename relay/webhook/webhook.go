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
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Event types.
const (
	MessageHeld      = "message.held"
	LoginSuspended   = "login.suspended"
	QuotaReached     = "quota.reached"
	MessageBounced   = "message.bounced"
	MessageDelivered = "message.delivered"
)

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

// pending is one event for one endpoint, as stored in the outbox.
type pending struct {
	Endpoint int             `json:"endpoint"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
	Attempts int             `json:"attempts"`
	NextTry  time.Time       `json:"next_try"`
	Created  time.Time       `json:"created"`
}

// Outbox stores and sends events.
type Outbox struct {
	dir       string
	endpoints []Endpoint
	retry     []time.Duration
	maxAge    time.Duration
	client    *http.Client
	log       *slog.Logger
	wake      chan struct{}
	mu        sync.Mutex
}

// Open returns the outbox in dir for endpoints.
func Open(dir string, endpoints []Endpoint, log *slog.Logger) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return &Outbox{dir: dir, endpoints: endpoints, log: log, wake: make(chan struct{}, 1),
		retry:  []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour},
		maxAge: 3 * 24 * time.Hour, client: &http.Client{Timeout: 10 * time.Second}}, nil
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

func newID(prefix string) string {
	b := make([]byte, 10)
	rand.Read(b)
	return fmt.Sprintf("%s%d%s", prefix, time.Now().UnixMilli(), hex.EncodeToString(b))
}

// Emit records an event for every endpoint that wants it. It returns once
// the event is on disk.
func (o *Outbox) Emit(eventType string, data any) {
	if o == nil {
		return
	}
	ev := Event{ID: newID("evt_"), Type: eventType, Created: time.Now().UTC(), Data: data}
	body, err := json.Marshal(ev)
	if err != nil {
		o.log.Error("webhook: event not encoded", "type", eventType, "err", err)
		return
	}
	for i, ep := range o.endpoints {
		if !ep.wants(eventType) {
			continue
		}
		p := pending{Endpoint: i, URL: ep.URL, Body: body, NextTry: ev.Created, Created: ev.Created}
		if err := o.save(newID("d")+".json", &p); err != nil {
			o.log.Error("webhook: event not stored", "type", eventType, "err", err)
		}
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *Outbox) save(name string, p *pending) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tmp := filepath.Join(o.dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, filepath.Join(o.dir, name))
}

// Run sends due events until ctx is done.
func (o *Outbox) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		o.flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-o.wake:
		}
	}
}

func (o *Outbox) flush(ctx context.Context) {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		path := filepath.Join(o.dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var p pending
		if json.Unmarshal(data, &p) != nil || p.Endpoint >= len(o.endpoints) || o.endpoints[p.Endpoint].URL != p.URL {
			os.Remove(path) // endpoint gone from the config
			continue
		}
		if time.Now().Before(p.NextTry) {
			continue
		}
		err = o.post(ctx, o.endpoints[p.Endpoint], p.Body)
		if err == nil {
			os.Remove(path)
			continue
		}
		p.Attempts++
		if time.Since(p.Created) > o.maxAge {
			o.log.Error("webhook: event dropped after retrying too long", "url", p.URL, "attempts", p.Attempts, "err", err)
			os.Remove(path)
			continue
		}
		p.NextTry = time.Now().Add(o.retry[min(p.Attempts-1, len(o.retry)-1)])
		o.log.Warn("webhook: delivery failed; will retry", "url", p.URL, "attempts", p.Attempts, "next", p.NextTry, "err", err)
		o.save(name, &p)
	}
}

// Sign computes the Sluice-Signature header value for body at time ts.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(m.Sum(nil)))
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
	if ep.Secret != "" {
		req.Header.Set("Sluice-Signature", Sign(ep.Secret, time.Now().Unix(), body))
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
