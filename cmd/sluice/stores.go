package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/screen"
	"sluice/submit"
)

// stores are the counters the gateway keeps: in Redis when redis_url is
// set (shared by every instance), in memory otherwise.
type stores struct {
	rdb     redis.UniversalClient // nil without Redis
	quota   *screen.Quota
	guard   submit.FailureGuard
	hourly  screen.QuotaStore // one-hour window counters (web-form limit)
	repeats screen.QuotaStore // loop_window counters (repeated content)
	daily   screen.QuotaStore // 24-hour counters (usual volume)
	history screen.RecipientHistory
	// susp records the compromise rule's suspensions: in Redis (every
	// instance refuses the login), else in data_dir/suspended.json.
	susp suspensionStore
}

func (s *stores) Close() {
	if s.rdb != nil {
		s.rdb.Close()
	}
}

func openStores(cfg *Config, log *slog.Logger) (*stores, error) {
	st := &stores{}
	storeCfg := screen.StoreConfig{Window: cfg.Quota.Window.Duration, Hold: cfg.Quota.Hold.Duration}
	var qs screen.QuotaStore
	if cfg.Quota.RedisURL != "" {
		redis.SetLogger(redisLogger{log})
		rdb, err := screen.NewRedisClient(cfg.Quota.RedisURL, cfg.Quota.Timeout.Duration)
		if err != nil {
			return nil, err
		}
		st.rdb = rdb
		qs = screen.NewRedisStore(rdb, storeCfg)
		st.hourly = screen.NewRedisStore(rdb, screen.StoreConfig{Window: time.Hour, Hold: time.Minute})
		st.repeats = screen.NewRedisStore(rdb, screen.StoreConfig{Window: cfg.Screen.LoopWindow.Duration, Hold: time.Minute})
		daily := screen.NewRedisStore(rdb, screen.StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
		st.daily, st.history = daily, daily
		st.guard = screen.NewRedisGuard(rdb, cfg.Auth.MaxFailuresPerLogin, cfg.Auth.MaxFailuresPerIP,
			cfg.Auth.FailureWindow.Duration, cfg.Auth.Lockout.Duration)
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			// Not fatal: Sluice answers 451 4.3.0 (or accepts, by
			// on_store_error) until Redis is back.
			log.Warn("redis not reachable at start; retrying on each use", "err", err)
		}
	} else {
		qs = screen.NewMemoryStore(storeCfg)
		st.hourly = screen.NewMemoryStore(screen.StoreConfig{Window: time.Hour, Hold: time.Minute})
		st.repeats = screen.NewMemoryStore(screen.StoreConfig{Window: cfg.Screen.LoopWindow.Duration, Hold: time.Minute})
		daily := screen.NewMemoryStore(screen.StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
		st.daily, st.history = daily, daily
		st.guard = submit.NewMemoryGuard(submit.GuardLimits{
			PerLogin: cfg.Auth.MaxFailuresPerLogin, PerIP: cfg.Auth.MaxFailuresPerIP,
			Window: cfg.Auth.FailureWindow.Duration, Lockout: cfg.Auth.Lockout.Duration,
		})
	}
	st.susp = newSuspensions(cfg, st.rdb)
	st.quota = screen.NewQuota(qs, quotaConfig(cfg), log)
	return st, nil
}

func quotaConfig(cfg *Config) screen.QuotaConfig {
	qc := screen.QuotaConfig{Default: cfg.Quota.MessagesPerHour, AllowOnStoreError: cfg.Quota.OnStoreError == "allow",
		Domains: map[string]screen.DomainQuota{}}
	for d, q := range cfg.Quota.Domains {
		qc.Domains[strings.ToLower(d)] = screen.DomainQuota{PerLogin: q.PerLogin, Total: q.Total}
	}
	return qc
}

// quotaReport is what `sluice quota show` prints for one login.
type quotaReport struct {
	Login        string `json:"login"`
	Limit        int    `json:"limit"`
	Used         int    `json:"used"`
	Reserved     int    `json:"reserved"`
	Resets       string `json:"resets,omitempty"`
	DomainLimit  int    `json:"domain_limit,omitempty"`
	DomainUsed   int    `json:"domain_used,omitempty"`
	DomainResets string `json:"domain_resets,omitempty"`
}

func quotaShow(ctx context.Context, q *screen.Quota, cfg *Config, login string, override *int) (*quotaReport, error) {
	login = strings.ToLower(login)
	dom := login[strings.LastIndexByte(login, '@')+1:]
	u, err := q.Store().Usage(ctx, dom, "login:"+login)
	if err != nil {
		return nil, err
	}
	r := &quotaReport{Login: login, Limit: q.Limit(login, override), Used: u.Used, Reserved: u.Reserved}
	if !u.Resets.IsZero() {
		r.Resets = u.Resets.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	if d, ok := cfg.Quota.Domains[dom]; ok && d.Total > 0 {
		du, err := q.Store().Usage(ctx, dom, "domain:"+dom)
		if err != nil {
			return nil, err
		}
		r.DomainLimit, r.DomainUsed = d.Total, du.Used
		if !du.Resets.IsZero() {
			r.DomainResets = du.Resets.UTC().Format("2006-01-02 15:04:05 UTC")
		}
	}
	return r, nil
}

func quotaReset(ctx context.Context, q *screen.Quota, login string) error {
	login = strings.ToLower(login)
	if !strings.Contains(login, "@") {
		return fmt.Errorf("%q is not a login address", login)
	}
	dom := login[strings.LastIndexByte(login, '@')+1:]
	return q.Store().Reset(ctx, dom, "login:"+login)
}

// redisLogger sends go-redis's own messages (reconnects, pool) to our log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("redis client", "detail", fmt.Sprintf(format, v...))
}

// newPipeline builds the content rules from [screen].
func newPipeline(cfg *Config, st *stores, res screen.HostResolver, sus screen.Suspender, log *slog.Logger) *screen.Pipeline {
	sc := cfg.Screen
	p := &screen.Pipeline{Log: log, Overrides: map[string]screen.ActionOverrides{}, Quota: st.quota}
	p.Rules = []screen.Rule{
		screen.Headers{},
		screen.OwnHops{},
		&screen.WebForm{Mode: sc.WebForm, Limit: sc.WebFormLimit, Store: st.hourly, Log: log},
		screen.NewAttachments(sc.BlockedExtensions),
		&screen.Links{DomainZones: sc.DomainBlocklists, IPZones: sc.IPBlocklists, Resolver: res, Budget: sc.BlocklistBudget.Duration, MaxLookups: 50, Log: log},
	}
	if sc.Rspamd.URL != "" {
		p.Rules = append(p.Rules, &screen.Rspamd{URL: sc.Rspamd.URL, Password: sc.Rspamd.Password, Budget: sc.Rspamd.Budget.Duration,
			Fallback: sc.Rspamd.Fallback, AddHeader: sc.Rspamd.AddHeader, Log: log})
	}
	// Last, the counting rules: the loop rule counts copies of mail the
	// content rules let through (a copy refused, and sent again, is not a
	// loop), and the compromise counters only mail that every other rule
	// let through, so a message refused or deferred (and sent again) is not
	// counted as volume or first-time recipients. With Redis both count in
	// one round trip, the compromise counts skipped when the loop rule
	// defers or holds.
	p.Rules = append(p.Rules, &screen.Repeats{Repeats: sc.LoopRepeats, Store: st.repeats, Log: log})
	p.Rules = append(p.Rules, &screen.Compromise{NewRecipientsPerHour: sc.NewRecipientsHour, VolumeMultiple: sc.VolumeMultiple, MinVolume: sc.MinVolume,
		History: st.history, Hourly: st.hourly, Daily: st.daily, Suspend: sus, Contact: abuseContact(cfg), Log: log})
	for who, o := range sc.Overrides {
		p.Overrides[strings.ToLower(who)] = screen.ActionOverrides(o)
	}
	return p
}

func abuseContact(cfg *Config) string {
	if cfg.Screen.AbuseContact != "" {
		return cfg.Screen.AbuseContact
	}
	return "postmaster@" + cfg.Hostname
}
