package screen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// QuotaConfig is the [quota] section.
type QuotaConfig struct {
	// Default is the recipients a login may send per window; 0 unlimited.
	Default int
	// Domains holds per-domain settings, keyed by lower-case domain.
	Domains map[string]DomainQuota
	// AllowOnStoreError accepts mail unmetered when the store fails
	// (on_store_error = "allow"); otherwise such mail gets 451 4.3.0.
	AllowOnStoreError bool
}

// DomainQuota overrides the default for the logins of one domain.
type DomainQuota struct {
	PerLogin *int // per-login limit for the domain's logins (nil: Default)
	Total    int  // all the domain's logins together; 0 unlimited
}

// Quota is the hourly-quota rule: it reserves capacity at RCPT, charges it
// at acceptance and refuses with 451 4.7.1 and the time the next message
// fits. Its methods match what submit declares (submit.QuotaGate).
type Quota struct {
	store QuotaStore
	mu    sync.RWMutex
	cfg   QuotaConfig
	log   *slog.Logger

	// StoreErrors counts store failures (for metrics and tests).
	StoreErrors atomic.Int64
	// Refusals counts over-quota refusals.
	Refusals atomic.Int64
	// OnReached, when set, is called on each over-quota refusal.
	OnReached func(login, scope string, limit int, nextFit time.Time)
}

// NewQuota returns the rule over store.
func NewQuota(store QuotaStore, cfg QuotaConfig, log *slog.Logger) *Quota {
	return &Quota{store: store, cfg: cfg, log: log}
}

// SetConfig replaces the limits (SIGHUP).
func (q *Quota) SetConfig(cfg QuotaConfig) {
	q.mu.Lock()
	q.cfg = cfg
	q.mu.Unlock()
}

func (q *Quota) config() QuotaConfig {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.cfg
}

// Store returns the quota's store.
func (q *Quota) Store() QuotaStore { return q.store }

func domainOf(login string) string {
	if i := strings.LastIndexByte(login, '@'); i >= 0 {
		return strings.ToLower(login[i+1:])
	}
	return login
}

// Limit is the per-login limit for login: its own override, else its
// domain's per-login setting, else the default. 0 means unlimited.
func (q *Quota) Limit(login string, override *int) int {
	if override != nil {
		return *override
	}
	cfg := q.config()
	if d, ok := cfg.Domains[domainOf(login)]; ok && d.PerLogin != nil {
		return *d.PerLogin
	}
	return cfg.Default
}

func (q *Quota) charge(login string, override *int, txn, id string, n int) Charge {
	dom := domainOf(login)
	c := Charge{Tag: dom, Txn: txn, ID: id, N: n, Scopes: []Scope{{Key: "login:" + login, Limit: q.Limit(login, override)}}}
	if d, ok := q.config().Domains[dom]; ok && d.Total > 0 {
		c.Scopes = append(c.Scopes, Scope{Key: "domain:" + dom, Limit: d.Total})
	}
	return c
}

// Reserve holds n recipients for the transaction txn (called at RCPT).
func (q *Quota) Reserve(ctx context.Context, login string, override *int, txn string, n int) error {
	c := q.charge(login, override, txn, "", n)
	ref, err := q.store.Reserve(ctx, c)
	return q.verdict(login, "reserve", ref, err)
}

// Commit charges n recipients for the accepted message id.
func (q *Quota) Commit(ctx context.Context, login string, override *int, txn, id string, n int) error {
	c := q.charge(login, override, txn, id, n)
	ref, err := q.store.Commit(ctx, c)
	if err != nil && !q.config().AllowOnStoreError {
		// The charge may have been made and its answer lost; the message
		// is refused, so it is taken back (a refund of what was never
		// charged changes nothing).
		q.Refund(ctx, login, override, id, n)
	}
	return q.verdict(login, "commit", ref, err)
}

// commitCall is Commit as a call of a batch, for a Redis store: the
// client it goes to, and what to do with the call's answer; false for any
// other store.
func (q *Quota) commitCall(login string, override *int, txn, id string, n int) (*batchCommit, bool) {
	st, ok := q.store.(*RedisStore)
	if !ok {
		return nil, false
	}
	c := q.charge(login, override, txn, id, n)
	return &batchCommit{rdb: st.rdb, call: st.call("commit", c),
		answered: func(res []int64) { st.committed(c, res) }}, true
}

// Release gives back what txn reserved (refused or aborted message).
func (q *Quota) Release(ctx context.Context, login string, override *int, txn string) {
	if err := q.store.Release(ctx, q.charge(login, override, txn, "", 0)); err != nil {
		q.StoreErrors.Add(1)
		q.log.Warn("quota release failed; the reservation expires by itself", "login", login, "err", err)
	}
}

// Refund takes back the charge of message id when it could not be queued
// after all.
func (q *Quota) Refund(ctx context.Context, login string, override *int, id string, n int) {
	if r, ok := q.store.(refunder); ok {
		if err := r.Refund(ctx, q.charge(login, override, "", id, n)); err != nil {
			q.StoreErrors.Add(1)
			q.log.Warn("quota refund failed", "login", login, "id", id, "err", err)
		}
	}
}

type refunder interface {
	Refund(ctx context.Context, c Charge) error
}

func (q *Quota) verdict(login, op string, ref *Refusal, err error) error {
	if err != nil {
		q.StoreErrors.Add(1)
		if q.config().AllowOnStoreError && errors.Is(err, ErrStore) {
			q.log.Warn("quota store failed; accepting unmetered (on_store_error = allow)", "login", login, "op", op, "err", err)
			return nil
		}
		q.log.Error("quota store failed; deferring (on_store_error = tempfail)", "login", login, "op", op, "err", err)
		return &Verdict{Action: Defer, Code: 451, Enhanced: [3]int{4, 3, 0}, Rule: "quota-store",
			Message: "temporary failure, try again in a few minutes"}
	}
	if ref == nil {
		return nil
	}
	q.Refusals.Add(1)
	at := ref.NextFit.UTC()
	if at.Truncate(time.Minute) != at {
		at = at.Truncate(time.Minute).Add(time.Minute)
	}
	what := "login " + login
	if strings.HasPrefix(ref.Scope.Key, "domain:") {
		what = "domain " + strings.TrimPrefix(ref.Scope.Key, "domain:")
	}
	q.log.Warn("quota reached", "login", login, "scope", ref.Scope.Key, "limit", ref.Scope.Limit, "used", ref.Used, "next_fit", at)
	if q.OnReached != nil {
		q.OnReached(login, ref.Scope.Key, ref.Scope.Limit, at)
	}
	return &Verdict{Action: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Rule: "quota",
		Message: fmt.Sprintf("%s has sent its %d messages (recipients) this hour; try again after %s UTC",
			what, ref.Scope.Limit, at.Format("15:04"))}
}
