package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sluice/relay/spool"
	"sluice/relay/webhook"
	"sluice/screen"
	"sluice/submit/userdb"
)

// observer is what submit reports to: metrics, and events for webhooks.
type observer struct {
	*metrics
	out *webhook.Outbox // nil: no webhooks
}

func (o observer) Held(id, login, reason string) {
	o.out.Emit(webhook.MessageHeld, map[string]string{"queue_id": id, "login": login, "reason": reason})
}

// suspender records the suspension (user file) and tells the platform,
// once per suspension: a session that goes on sending after its login was
// suspended trips the rule again on every message.
type suspender struct {
	inner screen.Suspender
	out   *webhook.Outbox
}

// suspendTold remembers, for logins the user file does not hold (SQL,
// Dovecot), when the platform was last told, so that it is told once an
// hour at most. Logins of the file are told when they become disabled.
var suspendTold = struct {
	mu sync.Mutex
	at map[string]time.Time
}{at: map[string]time.Time{}}

func (s suspender) Suspend(ctx context.Context, login, reason string) error {
	login = strings.ToLower(login)
	disabledBefore := false
	if g, ok := s.inner.(interface {
		Get(string) (*userdb.User, error)
	}); ok {
		if u, err := g.Get(login); err == nil && u.Disabled {
			disabledBefore = true
		}
	}
	err := s.inner.Suspend(ctx, login, reason)
	if disabledBefore {
		return err // told when it was suspended, or disabled by an operator
	}
	recorded := err == nil
	if !recorded && errors.Is(err, userdb.ErrNotFound) {
		// A login of another backend: Sluice cannot disable it; the
		// platform must, so it is told, but not on every message.
		suspendTold.mu.Lock()
		last, seen := suspendTold.at[login]
		if seen && time.Since(last) < time.Hour {
			suspendTold.mu.Unlock()
			return err
		}
		if len(suspendTold.at) > 100000 {
			suspendTold.at = map[string]time.Time{}
		}
		suspendTold.at[login] = time.Now()
		suspendTold.mu.Unlock()
	}
	s.out.Emit(webhook.LoginSuspended, map[string]any{"login": login, "reason": reason, "disabled_in_sluice": recorded})
	return err
}

// quotaEvents emits quota.reached once per scope (a login, or a domain's
// total) and quota window: the first refusal tells the platform, the
// refusals after it within the window do not.
type quotaEvents struct {
	out    *webhook.Outbox
	window time.Duration // [quota] window; 0: one hour
	mu     sync.Mutex
	seen   map[string]time.Time // scope -> until when already told
}

func (q *quotaEvents) reached(login, scope string, limit int, nextFit time.Time) {
	if q.out == nil {
		return
	}
	now := time.Now()
	window := q.window
	if window <= 0 {
		window = time.Hour
	}
	q.mu.Lock()
	if until, ok := q.seen[scope]; ok && now.Before(until) {
		q.mu.Unlock()
		return
	}
	if q.seen == nil || len(q.seen) > 100000 {
		q.seen = map[string]time.Time{}
	}
	until := now.Add(window)
	if nextFit.After(until) {
		until = nextFit
	}
	q.seen[scope] = until
	q.mu.Unlock()
	q.out.Emit(webhook.QuotaReached, map[string]any{"login": login, "scope": scope, "limit": limit, "next_fit": nextFit.UTC()})
}

// relayResults is the relay's OnResult: delivery metrics, and the
// message.bounced and message.delivered events, which name the login and
// sender of the message (read from its spool envelope, still there while
// the relay reports) so that a platform can tell whose mail it was.
func relayResults(met *metrics, out *webhook.Outbox, sp *spool.Spool) func(id, rcpt, status, category string, latency time.Duration) {
	return func(id, rcpt, status, category string, latency time.Duration) {
		met.delivery(id, rcpt, status, category, latency)
		var typ string
		data := map[string]any{"queue_id": id, "rcpt": rcpt}
		switch status {
		case "failed":
			typ, data["category"] = webhook.MessageBounced, category
		case "delivered":
			typ, data["seconds"] = webhook.MessageDelivered, latency.Seconds()
		default:
			return
		}
		if !out.Wants(typ) {
			return
		}
		if env, rc, err := sp.Open(id); err == nil {
			rc.Close()
			data["login"], data["from"] = env.Login, env.From
		}
		out.Emit(typ, data)
	}
}

func openOutbox(cfg *Config, log *slog.Logger) (*webhook.Outbox, error) {
	if len(cfg.Webhooks) == 0 {
		return nil, nil
	}
	var eps []webhook.Endpoint
	for _, w := range cfg.Webhooks {
		eps = append(eps, webhook.Endpoint{URL: w.URL, Secret: w.Secret, Events: w.Events})
	}
	return webhook.Open(filepath.Join(cfg.DataDir, "outbox"), eps, log)
}
