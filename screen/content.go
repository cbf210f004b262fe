package screen

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// Rule is one content check. Check returns nil to accept, or a verdict
// (its Action is the rule's default, which overrides may change).
type Rule interface {
	Name() string
	Check(ctx context.Context, m *Message) *Verdict
}

// ActionOverrides map a rule name to an action ("reject", "defer", "hold",
// "allow") for one domain or login.
type ActionOverrides map[string]string

// Pipeline runs the content rules in order; the first verdict other than
// accept decides. Per-login and per-domain overrides change a rule's
// action (login first, then the login's domain).
type Pipeline struct {
	Rules     []Rule
	Overrides map[string]ActionOverrides // key: login address or domain
	Log       *slog.Logger
	// OnVerdict, when set, is called with each decisive verdict (rule and
	// action), for metrics.
	OnVerdict func(rule string, action Action)
}

// Screen returns nil (accept) or the verdict for m.
func (p *Pipeline) Screen(ctx context.Context, m *Message) *Verdict {
	for _, r := range p.Rules {
		v := r.Check(ctx, m)
		if v == nil {
			continue
		}
		if v.Rule == "" {
			v.Rule = r.Name()
		}
		switch p.action(m, r.Name()) {
		case "allow":
			p.Log.Info("screen: verdict overridden to allow", "login", m.Login, "rule", v.Rule, "would", v.Message)
			continue
		case "reject":
			v = asAction(v, Reject)
		case "defer":
			v = asAction(v, Defer)
		case "hold":
			v = asAction(v, Hold)
		}
		if p.OnVerdict != nil {
			p.OnVerdict(v.Rule, v.Action)
		}
		return v
	}
	return nil
}

// action finds an override: the login's own, then its domain's, then the
// header From domain's (a login may send for several domains).
func (p *Pipeline) action(m *Message, rule string) string {
	keys := []string{strings.ToLower(m.Login), domainOf(m.Login)}
	if froms := m.Addresses("From"); len(froms) == 1 {
		keys = append(keys, domainOf(froms[0]))
	}
	for _, k := range keys {
		if o, ok := p.Overrides[k]; ok {
			if a, ok := o[rule]; ok {
				return a
			}
		}
	}
	return ""
}

// asAction changes a verdict's action and keeps its sentence, adjusting the
// code class (5xx reject, 4xx defer, hold accepts).
func asAction(v *Verdict, a Action) *Verdict {
	c := *v
	if v.Action == Hold && a != Hold {
		// A hold's sentence says "held"; refused or deferred, say what
		// the rule found with a policy code.
		c.Enhanced = [3]int{5, 7, 1}
		c.Message = strings.Replace(strings.Replace(c.Message, "; it is held for review", "", 1), " it is held for review", "", 1) +
			"; the mail administrator has set this rule to refuse such mail"
	}
	c.Action = a
	switch a {
	case Reject:
		if c.Code < 500 {
			c.Code, c.Enhanced = 550, [3]int{5, c.Enhanced[1], c.Enhanced[2]}
		}
	case Defer:
		if c.Code >= 500 || c.Code < 400 {
			c.Code, c.Enhanced = 451, [3]int{4, c.Enhanced[1], c.Enhanced[2]}
		}
	case Hold:
		c.Code = 250
	}
	return &c
}

func reject(rule string, code int, enh [3]int, msg string) *Verdict {
	return &Verdict{Action: Reject, Code: code, Enhanced: enh, Rule: rule, Message: msg}
}

var idSeq struct {
	n uint64
}

// nowID is a unique member id for event counters.
func nowID() string {
	return fmt.Sprintf("%d.%d", time.Now().UnixNano(), atomic.AddUint64(&idSeq.n, 1))
}

// ScreenMessage is the pipeline as submit sees it (submit.Screener): it
// returns a hold reason when the message is to be accepted but held, or an
// error carrying the reply (a *Verdict) when it is refused or deferred.
func (p *Pipeline) ScreenMessage(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) (string, error) {
	m := &Message{Login: login, EnvelopeFrom: envFrom, Rcpts: rcpts, Raw: raw, SMTPUTF8: smtputf8, OurHostname: ourHost}
	v := p.Screen(ctx, m)
	switch {
	case v == nil:
		return "", nil
	case v.Action == Hold:
		p.Log.Warn("screen: message held", "login", login, "rule", v.Rule, "reason", v.Message)
		return v.Rule + ": " + v.Message, nil
	}
	return "", v
}
