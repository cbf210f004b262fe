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

// suspender records the compromise rule's suspensions and tells the
// platform, once per suspension (a session that goes on sending after its
// login was suspended trips the rule again on every message):
//
//   - a login of the user file is disabled there, as before, so that
//     `sluice user list` shows it;
//   - with Redis, every login is also recorded in the shared store, so
//     that every instance refuses it (each may have its own users file, or
//     a read-only one) and logins of SQL and Dovecot are refused too; the
//     store says whether the suspension is new, for all instances;
//   - without Redis, logins the file does not hold (SQL, Dovecot), or
//     cannot hold because it is read-only, go to data_dir/suspended.json.
type suspender struct {
	users *userdb.File // nil: the user file holds no logins
	store suspensionStore
	out   *webhook.Outbox
	log   *slog.Logger
	// unrecorded holds, for logins nothing could record (every store
	// failed), until when the platform was told, so that it is told once
	// an hour at most.
	unrecorded toldUntil
}

func (s *suspender) Suspend(ctx context.Context, login, reason string) error {
	login = strings.ToLower(login)
	shared := sharedStore(s.store)
	inFile, disabledBefore := false, false
	if s.users != nil {
		if u, err := s.users.Get(login); err == nil {
			inFile, disabledBefore = true, u.Disabled
		}
	}
	var fileErr error
	fileNew := false
	if inFile && !disabledBefore {
		fileErr = s.users.Suspend(ctx, login, reason)
		fileNew = fileErr == nil
	}
	var storeErr error
	storeNew, inStore := false, false
	if shared || !inFile || fileErr != nil {
		storeNew, storeErr = s.store.Record(ctx, login, reason)
		inStore = storeErr == nil
	}
	switch {
	case fileErr != nil && inStore:
		s.log.Warn("screen: user file not writable; the suspension is kept in the suspension store", "login", login, "err", fileErr)
	case storeErr != nil && (fileNew || disabledBefore):
		s.log.Error("screen: suspension store unavailable; the login is disabled in this instance's user file only", "login", login, "err", storeErr)
	}
	if !(fileNew || disabledBefore || inStore) {
		// Nothing could record it: the platform must act, so it is
		// told, but not on every message.
		if now := time.Now(); s.unrecorded.first(login, now, now.Add(time.Hour)) {
			s.out.Emit(webhook.LoginSuspended, map[string]any{"login": login, "reason": reason, "disabled_in_sluice": false})
		}
		return errors.Join(fileErr, storeErr)
	}
	// Once per suspension: the shared store decides for every instance;
	// otherwise the first write of the file or the local store.
	tell := fileNew || storeNew
	if shared && inStore {
		tell = storeNew
	}
	if tell {
		s.out.Emit(webhook.LoginSuspended, map[string]any{"login": login, "reason": reason, "disabled_in_sluice": true})
	}
	return nil
}

// authSuspensions is what AUTH asks (submit.Suspensions): the suspension
// store, with the suspensions this instance's user file holds. One store
// round trip (none of its own when authGuard read it with the lockout
// check), and a stat of the user file (the file's own check).
//
//   - suspended in the store: refused, on every instance;
//   - suspended in the user file only: refused, also while the store is
//     down (a known suspension holds), unless the store says an operator
//     lifted it (`sluice user enable` on another instance, or the admin
//     API): then the login gets in and the file is enabled here too.
type authSuspensions struct {
	store suspensionStore
	users *userdb.File // nil: the user file holds no logins
	log   *slog.Logger
}

func (a authSuspensions) Suspended(ctx context.Context, login string) (string, error) {
	sus, liftedAt, err := a.store.State(ctx, login)
	var u *userdb.User
	if a.users != nil {
		u, _ = a.users.Get(login)
	}
	switch {
	case err == nil && sus != nil:
		return sus.Reason, nil
	case err == nil && liftedElsewhere(u, sus, liftedAt):
		a.enableInFile(login, liftedAt)
		return "", nil
	case ruleSuspended(u):
		return u.Reason, nil
	}
	return "", err
}

// enableInFile enables a login whose suspension was lifted elsewhere, so
// that this instance's `sluice user list` agrees. A file that cannot be
// written (read-only) is logged; the store's lift lets the login in all
// the same for as long as it is remembered (screen.SuspensionTTL).
func (a authSuspensions) enableInFile(login string, liftedAt time.Time) {
	if _, err := enableInFile(a.users, login, false); err != nil {
		a.log.Warn("suspension lifted elsewhere; the user file still says suspended and could not be changed", "login", login, "lifted", liftedAt.UTC(), "err", err)
		return
	}
	a.log.Info("suspension lifted elsewhere; login enabled in the user file", "login", login, "lifted", liftedAt.UTC())
}

// quotaEvents emits quota.reached once per scope (a login, or a domain's
// total) and quota window: the first refusal tells the platform, the
// refusals after it within the window do not.
type quotaEvents struct {
	out    *webhook.Outbox
	window time.Duration // [quota] window; 0: one hour
	told   toldUntil     // scope -> until when already told
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
	until := now.Add(window)
	if nextFit.After(until) {
		until = nextFit
	}
	if q.told.first(scope, now, until) {
		q.out.Emit(webhook.QuotaReached, map[string]any{"login": login, "scope": scope, "limit": limit, "next_fit": nextFit.UTC()})
	}
}

// toldUntil remembers, per key, until when an event need not be told
// again. It forgets everything past 100,000 keys, so that a flood of
// logins cannot grow it without bound (at worst an event is told twice).
type toldUntil struct {
	mu    sync.Mutex
	until map[string]time.Time
}

// first reports whether key is to be told now (it was not, or its period
// is over) and if so records that it need not be until then.
func (t *toldUntil) first(key string, now, then time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.until[key]; ok && now.Before(u) {
		return false
	}
	if t.until == nil || len(t.until) > 100000 {
		t.until = map[string]time.Time{}
	}
	t.until[key] = then
	return true
}

// relayResults is the relay's OnResult: delivery metrics, and the
// message.bounced and message.delivered events, which name the login and
// sender of the message so that a platform can tell whose mail it was.
func relayResults(met *metrics, out *webhook.Outbox) func(env *spool.Envelope, rcpt, status, category string, latency time.Duration) {
	return func(env *spool.Envelope, rcpt, status, category string, latency time.Duration) {
		met.delivery(env, rcpt, status, category, latency)
		var typ string
		switch status {
		case "failed":
			typ = webhook.MessageBounced
		case "delivered":
			typ = webhook.MessageDelivered
		}
		if typ == "" || !out.Wants(typ) {
			return // the payload is built only for a webhook that wants it
		}
		data := map[string]any{"queue_id": env.ID, "rcpt": rcpt, "login": env.Login, "from": env.From}
		if typ == webhook.MessageBounced {
			data["category"] = category
		} else {
			data["seconds"] = latency.Seconds()
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
