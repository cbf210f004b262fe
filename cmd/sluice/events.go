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
	users  *userdb.File // nil: the user file holds no logins
	store  suspensionStore
	shared bool // store is Redis
	out    *webhook.Outbox
	log    *slog.Logger
}

// suspendTold remembers, for logins nothing could record (every store
// failed), when the platform was last told, so that it is told once an
// hour at most.
var suspendTold = struct {
	mu sync.Mutex
	at map[string]time.Time
}{at: map[string]time.Time{}}

func (s suspender) Suspend(ctx context.Context, login, reason string) error {
	login = strings.ToLower(login)
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
	if s.store != nil && (s.shared || !inFile || fileErr != nil) {
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
		err := errors.Join(fileErr, storeErr)
		if err == nil {
			err = errors.New("no suspension store")
		}
		// Nothing could record it: the platform must act, so it is
		// told, but not on every message.
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
		s.out.Emit(webhook.LoginSuspended, map[string]any{"login": login, "reason": reason, "disabled_in_sluice": false})
		return err
	}
	// Once per suspension: the shared store decides for every instance;
	// otherwise the first write of the file or the local store.
	tell := fileNew || storeNew
	if s.shared && storeErr == nil {
		tell = storeNew
	}
	if tell {
		s.out.Emit(webhook.LoginSuspended, map[string]any{"login": login, "reason": reason, "disabled_in_sluice": true})
	}
	return nil
}

// authSuspensions is what AUTH asks (submit.Suspensions): the suspension
// store, with the suspensions this instance's user file holds. One store
// round trip, and a stat of the user file (the file's own check).
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
	fileReason := ""
	if a.users != nil {
		if u, gerr := a.users.Get(login); gerr == nil && u.Disabled && strings.HasPrefix(u.Reason, screen.SuspensionPrefix) {
			fileReason = u.Reason
		}
	}
	switch {
	case err != nil && fileReason != "":
		return fileReason, nil
	case err != nil:
		return "", err
	case sus != nil:
		return sus.Reason, nil
	case fileReason != "" && !liftedAt.IsZero():
		a.enableInFile(login, liftedAt)
		return "", nil
	}
	return fileReason, nil
}

// enableInFile enables a login whose suspension was lifted elsewhere, so
// that this instance's `sluice user list` agrees. A file that cannot be
// written (read-only) is logged; the store's lift lets the login in all
// the same for as long as it is remembered (screen.SuspensionTTL).
func (a authSuspensions) enableInFile(login string, liftedAt time.Time) {
	err := a.users.Update(func(users map[string]*userdb.User) error {
		if u := users[login]; u != nil && u.Disabled && strings.HasPrefix(u.Reason, screen.SuspensionPrefix) {
			u.Disabled, u.Reason = false, ""
		}
		return nil
	})
	if err != nil {
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
