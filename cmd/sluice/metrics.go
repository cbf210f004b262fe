package main

import (
	"encoding/base32"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/relay/explain"
	"sluice/relay/spool"
	"sluice/screen"
)

// metrics are Sluice's Prometheus collectors. Help texts list the label
// values, so a dashboard author need not read the code.
type metrics struct {
	reg         *prometheus.Registry
	connections *prometheus.CounterVec
	auth        *prometheus.CounterVec
	messages    *prometheus.CounterVec
	verdicts    *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	latency     prometheus.Histogram
	dkim        *prometheus.CounterVec
}

// precheckCounter is a quota store that counts how RCPT's pre-checks were
// answered (the Redis store).
type precheckCounter interface {
	PrecheckCounts() (noLimit, knownRoom, redis int64)
}

// submitCounts are the submit.Server's own counters: lockout-store
// failures, transactions held back by the in-flow delay.
type submitCounts interface {
	GuardStoreErrors() int64
	InFlowWaits() int64
}

func newMetrics(sp *spool.Spool, q *screen.Quota, g submitCounts) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.connections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_connections_total",
		Help: "Client connections. listener: submission (STARTTLS), submissions (implicit TLS). result: accepted, refused (limits, PROXY)."},
		[]string{"listener", "result"})
	m.auth = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_auth_total",
		Help: "AUTH attempts. mechanism: PLAIN, LOGIN. result: ok, failed, locked-out, failed-locked-out, disabled, authzid-mismatch, malformed, backend-error, store-error."},
		[]string{"mechanism", "result"})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_messages_total",
		Help: "Messages at the end of DATA. verdict: queued, held, refused, aborted (BDAT reset by the client). stage (for refused): data, hygiene, header, header-sender, screen, precheck, dkim, quota, spool; accepted otherwise."},
		[]string{"verdict", "stage"})
	m.verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_screen_verdicts_total",
		Help: "Content-rule verdicts other than accept. rule: headers, loop, webform, attachments, links, compromise, rspamd. action: reject, defer, hold, mark (accepted with X-Spam headers)."},
		[]string{"rule", "action"})
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_deliveries_total",
		Help: "Delivery outcomes per recipient. result: delivered, deferred, failed. category: the `sluice explain` category of the last reply (" + categoryList() + ")."},
		[]string{"result", "category"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_delivery_latency_seconds",
		Help: "Time from acceptance to successful delivery of a recipient.", Buckets: []float64{.01, .05, .1, .5, 1, 5, 30, 60, 300, 1800, 3600, 14400, 86400}})
	m.dkim = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_dkim_signatures_total",
		Help: "Messages signed. domain: the d= domain (or \"none\" when unsigned). algorithm: rsa, ed25519, rsa+ed25519, none."},
		[]string{"domain", "algorithm"})
	m.reg.MustRegister(m.connections, m.auth, m.messages, m.verdicts, m.deliveries, m.latency, m.dkim)
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_quota_refusals_total",
		Help: "RCPT or DATA refused with 451 4.7.1 because a login or domain reached its hourly quota."},
		func() float64 { return float64(q.Refusals.Load()) }))
	if pc, ok := q.Store().(precheckCounter); ok {
		for answer, count := range map[string]func() int64{
			"no-limit":   func() int64 { n, _, _ := pc.PrecheckCounts(); return n },
			"known-room": func() int64 { _, n, _ := pc.PrecheckCounts(); return n },
			"redis":      func() int64 { _, _, n := pc.PrecheckCounts(); return n },
		} {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_quota_prechecks_total",
				Help:        "RCPT quota pre-checks with Redis, by answer: no-limit (the login has none: nothing to hold), known-room (granted from the room Redis last reported, no round trip), redis (reserved in Redis).",
				ConstLabels: prometheus.Labels{"answer": answer}},
				func() float64 { return float64(count()) }))
		}
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_store_errors_total",
		Help: "Failures of the shared store (Redis unreachable or slower than [quota] timeout) in quota calls."},
		func() float64 { return float64(q.StoreErrors.Load()) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_guard_store_errors_total",
		Help: "Failures of the shared store in login-failure, lockout and suspension calls at AUTH (AUTH then answers 451 4.3.0, or with on_store_error = \"allow\" goes on as not locked and not suspended)."},
		func() float64 { return float64(g.GuardStoreErrors()) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_inflow_waits_total",
		Help: "Transactions whose MAIL waited (up to [submission] in_flow_delay) because new mail came in faster than it was delivered."},
		func() float64 { return float64(g.InFlowWaits()) }))
	queueDir := filepath.Join(sp.Dir(), "queue")
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_spool_messages",
		Help: "Messages in the spool (queued, deferred or held; with the journal, also those in their first delivery attempt)."},
		func() float64 { n, _ := spoolStats(queueDir); return float64(n + sp.JournalLen()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_spool_oldest_age_seconds",
		Help: "Age of the oldest queue file (deferred or held; the journal's messages in their first attempt are not counted); 0 when there is none."},
		func() float64 {
			_, oldest := spoolStats(queueDir)
			if oldest.IsZero() {
				return 0
			}
			return time.Since(oldest).Seconds()
		}))
	m.reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

var idEnc = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// spoolStats counts queued messages and dates the oldest from its ID
// (IDs begin with their creation time in milliseconds).
func spoolStats(dir string) (int, time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, time.Time{}
	}
	var ids []string
	for _, e := range entries {
		if n := e.Name(); len(n) == 16 && !strings.Contains(n, ".") {
			ids = append(ids, n)
		}
	}
	if len(ids) == 0 {
		return 0, time.Time{}
	}
	sort.Strings(ids)
	b, err := idEnc.DecodeString(ids[0])
	if err != nil || len(b) < 8 {
		return len(ids), time.Time{}
	}
	ms := binary.BigEndian.Uint64(b[:8]) >> 16
	return len(ids), time.UnixMilli(int64(ms))
}

// The submit.Observer side.
func (m *metrics) Connection(listener string, accepted bool) {
	r := "accepted"
	if !accepted {
		r = "refused"
	}
	m.connections.WithLabelValues(listener, r).Inc()
}
func (m *metrics) Auth(mechanism, result string) { m.auth.WithLabelValues(mechanism, result).Inc() }
func (m *metrics) Message(verdict, stage string) { m.messages.WithLabelValues(verdict, stage).Inc() }

// delivery is the relay's OnResult.
func (m *metrics) delivery(_ *spool.Envelope, _, status, category string, latency time.Duration) {
	m.deliveries.WithLabelValues(status, category).Inc()
	if status == "delivered" {
		m.latency.Observe(latency.Seconds())
	}
}

func categoryList() string {
	names := make([]string, len(explain.Categories))
	for i, c := range explain.Categories {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}
