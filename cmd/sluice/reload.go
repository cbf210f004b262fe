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

func (h *screenHolder) ScreenMessageHeaders(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) (string, []byte, error) {
	p := h.p.Load()
	if p == nil {
		return "", nil, nil
	}
	return p.ScreenMessageHeaders(ctx, login, ourHost, envFrom, rcpts, raw, smtputf8)
}

func (h *screenHolder) ScreenAndCommit(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool,
	override *int, txn, id string) (string, []byte, bool, error) {
	p := h.p.Load()
	if p == nil {
		return "", nil, false, nil
	}
	return p.ScreenAndCommit(ctx, login, ourHost, envFrom, rcpts, raw, smtputf8, override, txn, id)
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
		if cfg.DKIM.Precheck {
			rt.log.Info("DNS pre-check off: [dkim] precheck needs [relay] source_ips, the addresses Sluice sends from; set them to refuse mail that SPF or DMARC would make receivers reject")
		}
		rt.precheck.p.Store(nil)
	}
	rt.st.quota.SetConfig(quotaConfig(cfg))
}

// reload applies a new, already validated configuration: next as
// returned by reloadable, so that keys needing a restart keep their running
// values.
func (rt *runtimeParts) reload(next *Config) {
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
	rt.log.Info("reloaded: users, DKIM keys, TLS certificate, quotas, content rules, DNS pre-check")
}

// hotKeys are the configuration keys (dotted TOML paths, or prefixes ending
// in ".") that a SIGHUP applies to a running server. coldKeys inside them
// are not. Every other key keeps its running value until a restart.
var (
	hotKeys = []string{"tls.", "dkim.", "screen.", "quota.messages_per_hour", "quota.on_store_error", "quota.domains",
		"http.autoconfig", "http.imap_host", "http.admin_token", "submission.shutdown_timeout"}
	coldKeys = []string{"screen.loop_window", "screen.abuse_contact"}
)

func isHot(key string) bool {
	for _, c := range coldKeys {
		if key == c {
			return false
		}
	}
	for _, h := range hotKeys {
		if key == h || (strings.HasSuffix(h, ".") && strings.HasPrefix(key, h)) {
			return true
		}
	}
	return false
}

// reloadable returns the configuration a reload puts in force: next's
// values for the keys a reload applies, running's for all others, and the
// keys whose change was therefore not applied (they need a restart). The
// result is what the server runs with, so reverting such a change later
// warns of nothing, and a second reload with it still pending warns again.
func reloadable(running, next *Config) (*Config, []string) {
	eff := *next
	var cold []string
	mergeCold(reflect.ValueOf(&eff).Elem(), reflect.ValueOf(running).Elem(), "", &cold)
	// A new token rotates at once, but the admin API itself is set up at
	// start: switching it on needs a restart.
	if running.HTTP.AdminToken == "" && next.HTTP.AdminToken != "" {
		eff.HTTP.AdminToken = ""
		cold = append(cold, "http.admin_token")
	}
	return &eff, cold
}

var durationType = reflect.TypeOf(Duration{})

// mergeCold walks the configuration struct by TOML key and copies every
// differing key that is not hot from running into eff.
func mergeCold(eff, running reflect.Value, prefix string, cold *[]string) {
	t := eff.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("toml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		ev, rv := eff.Field(i), running.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			mergeCold(ev, rv, key+".", cold)
			continue
		}
		if reflect.DeepEqual(ev.Interface(), rv.Interface()) || isHot(key) {
			continue
		}
		ev.Set(rv)
		*cold = append(*cold, key)
	}
}
