package main

import (
	"context"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync/atomic"

	"sluice/dkim"
	"sluice/dkim/dnscheck"
	"sluice/relay/resolver"
	"sluice/screen"
	"sluice/submit/userdb"
)

// runtimeParts are what SIGHUP can replace while sessions run: the content
// pipeline, the DNS pre-check, the DKIM signer's fallback, quota limits,
// users, DKIM keys and the TLS certificate. Listener addresses, limits
// and stores need a restart (the log says so).
type runtimeParts struct {
	st      *stores
	users   *userdb.File
	suspend screen.Suspender
	ring    *dkim.Keyring
	certs   *certStore
	metrics *metrics
	log     *slog.Logger

	screen   screenHolder
	precheck precheckHolder
	fallback atomic.Pointer[string]
}

type screenHolder struct {
	p atomic.Pointer[screen.Pipeline]
}

func (h *screenHolder) ScreenMessage(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) (string, error) {
	p := h.p.Load()
	if p == nil {
		return "", nil
	}
	return p.ScreenMessage(ctx, login, ourHost, envFrom, rcpts, raw, smtputf8)
}

type precheckHolder struct {
	p atomic.Pointer[dnscheck.Precheck]
}

func (h *precheckHolder) CheckSender(ctx context.Context, fromDomain, envFrom string) error {
	p := h.p.Load()
	if p == nil {
		return nil
	}
	return p.CheckSender(ctx, fromDomain, envFrom)
}

// Sign implements submit.Signer and counts signatures.
func (rt *runtimeParts) Sign(fromDomain string, parts ...[]byte) ([]byte, string, error) {
	fields, res, err := rt.ring.Sign(fromDomain, *rt.fallback.Load(), parts...)
	if err == nil {
		d, a := res.Domain, strings.Join(res.Algos, "+")
		if d == "" {
			d, a = "none", "none"
		}
		rt.metrics.dkim.WithLabelValues(d, a).Inc()
	}
	return fields, res.String(), err
}

// apply builds the replaceable parts from cfg.
func (rt *runtimeParts) apply(cfg *Config) {
	fb := strings.ToLower(cfg.DKIM.FallbackDomain)
	rt.fallback.Store(&fb)
	if cfg.Screen.Enabled {
		p := newPipeline(cfg, rt.st, resolver.New(cfg.DNS.Resolver), rt.suspend, rt.log)
		p.OnVerdict = func(rule string, a screen.Action) { rt.metrics.verdicts.WithLabelValues(rule, a.String()).Inc() }
		rt.screen.p.Store(p)
	} else {
		rt.screen.p.Store(nil)
	}
	if cfg.DKIM.Precheck && len(cfg.Relay.SourceIPs) > 0 {
		pc := &dnscheck.Precheck{Resolver: resolver.New(cfg.DNS.Resolver), Keys: rt.ring, Fallback: cfg.DKIM.FallbackDomain,
			HELO: cfg.heloName(), Log: rt.log}
		for _, ip := range cfg.Relay.SourceIPs {
			pc.Egress = append(pc.Egress, net.ParseIP(ip))
		}
		rt.precheck.p.Store(pc)
	} else {
		rt.precheck.p.Store(nil)
	}
	rt.st.quota.SetConfig(quotaConfig(cfg))
}

// reload applies a new, already validated configuration.
func (rt *runtimeParts) reload(old, next *Config) {
	rt.apply(next)
	if err := rt.ring.Reload(); err != nil {
		rt.log.Error("reload: DKIM keys not reloaded; still signing with the previous set", "err", err)
	}
	rt.users.Get("") // rereads the user file now
	if certs, err := loadCertificate(next, rt.log); err != nil {
		rt.log.Error("reload: certificate not reloaded; still serving the previous one", "err", err)
	} else {
		rt.certs.cur.Store(certs.cur.Load())
	}
	for _, k := range []struct {
		name string
		a, b any
	}{
		{"[submission] listen/listen_tls", [][]string{old.Submission.Listen, old.Submission.ListenTLS}, [][]string{next.Submission.Listen, next.Submission.ListenTLS}},
		{"[submission] limits", []any{old.Submission.MaxMessageSize, old.Submission.MaxRecipients, old.Submission.MaxConnections, old.Submission.MaxConnectionsPerIP}, []any{next.Submission.MaxMessageSize, next.Submission.MaxRecipients, next.Submission.MaxConnections, next.Submission.MaxConnectionsPerIP}},
		{"[quota] redis_url", old.Quota.RedisURL, next.Quota.RedisURL},
		{"[relay]", old.Relay, next.Relay},
		{"data_dir", old.DataDir, next.DataDir},
	} {
		if !reflect.DeepEqual(k.a, k.b) {
			rt.log.Warn("reload: this change needs a restart to take effect", "key", k.name)
		}
	}
	rt.log.Info("reloaded: users, DKIM keys, TLS certificate, quotas, content rules, DNS pre-check")
}
