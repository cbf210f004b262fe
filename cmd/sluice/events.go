package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"sluice/relay/webhook"
	"sluice/screen"
)

// observer is what submit reports to: metrics, and events for webhooks.
type observer struct {
	*metrics
	out *webhook.Outbox // nil: no webhooks
}

func (o observer) Held(id, login, reason string) {
	o.out.Emit(webhook.MessageHeld, map[string]string{"queue_id": id, "login": login, "reason": reason})
}

// suspender records the suspension (user file) and tells the platform.
type suspender struct {
	inner screen.Suspender
	out   *webhook.Outbox
}

func (s suspender) Suspend(ctx context.Context, login, reason string) error {
	err := s.inner.Suspend(ctx, login, reason)
	s.out.Emit(webhook.LoginSuspended, map[string]string{"login": login, "reason": reason})
	return err
}

// quotaEvents emits quota.reached once per login and window.
type quotaEvents struct {
	out  *webhook.Outbox
	mu   sync.Mutex
	seen map[string]time.Time // scope -> until when already told
}

func (q *quotaEvents) reached(login, scope string, limit int, nextFit time.Time) {
	q.mu.Lock()
	if until, ok := q.seen[scope]; ok && time.Now().Before(until) {
		q.mu.Unlock()
		return
	}
	if len(q.seen) > 100000 {
		q.seen = map[string]time.Time{}
	}
	q.seen[scope] = nextFit
	q.mu.Unlock()
	q.out.Emit(webhook.QuotaReached, map[string]any{"login": login, "scope": scope, "limit": limit, "next_fit": nextFit.UTC()})
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
