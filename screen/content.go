package screen

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
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
// accept or mark decides. A mark (Rspamd's "add header") lets the message
// through with header fields that carry the verdict. Per-login and
// per-domain overrides change a rule's action (login first, then the
// login's domain).
type Pipeline struct {
	Rules     []Rule
	Overrides map[string]ActionOverrides // key: login address or domain
	Log       *slog.Logger
	// OnVerdict, when set, is called with each decisive verdict (rule and
	// action), for metrics.
	OnVerdict func(rule string, action Action)
	// Quota, when set, is the quota ScreenAndCommit charges.
	Quota *Quota
}

// Outcome is what screening decided for one message.
type Outcome struct {
	Verdict *Verdict // reject, defer or hold; nil: accepted
	// Headers are the fields the marking rules asked for (each ending in
	// CRLF), to put in front of the message before it is signed.
	Headers []byte
}

// Screen returns nil (accept) or the verdict for m. Header fields of mark
// verdicts are dropped; Run returns them.
func (p *Pipeline) Screen(ctx context.Context, m *Message) *Verdict {
	return p.Run(ctx, m).Verdict
}

// Run screens m: the decisive verdict, if any, and the header fields of
// the mark verdicts met before it. Two rules in a row whose counting is
// in one Redis (batcher) count in one round trip.
func (p *Pipeline) Run(ctx context.Context, m *Message) Outcome {
	var out Outcome
	var next func() *Verdict // the next rule's verdict, from a batch
	for i, r := range p.Rules {
		var v *Verdict
		switch {
		case next != nil:
			v, next = next(), nil
		default:
			var ok bool
			if v, next, ok = p.runBatched(ctx, m, i); !ok {
				v = r.Check(ctx, m)
			}
		}
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
		if v.effect != nil {
			v.effect(ctx)
		}
		if p.OnVerdict != nil {
			p.OnVerdict(v.Rule, v.Action)
		}
		if v.Action == Mark {
			p.Log.Info("screen: message marked", "login", m.Login, "rule", v.Rule, "reason", v.Message)
			out.Headers = append(out.Headers, v.Headers...)
			continue
		}
		out.Verdict = v
		return out
	}
	return out
}

// batcher is a rule whose counting is calls of the quota script, which the
// pipeline sends with the next rule's in one round trip when both go to
// the same Redis.
type batcher interface {
	// batch returns m's calls and the client they go to; ok false: none
	// for m (Check judges it). decisive says that a verdict of the rule
	// ends the screening (no "allow" override): its calls may then stop
	// the batch (scriptCall.stop) where the verdict would.
	batch(m *Message, decisive bool) (rdb redis.UniversalClient, calls []scriptCall, ok bool)
	// judgeBatch is Check given the answers to those calls (err: Redis
	// failed).
	judgeBatch(ctx context.Context, m *Message, res [][]int64, err error) *Verdict
}

// runBatched judges rule i and the rule after it from one batch when both
// are batchers of one Redis: rule i's verdict, and the next one's to ask
// for once the pipeline gets there. ok false: Check judges rule i.
func (p *Pipeline) runBatched(ctx context.Context, m *Message, i int) (v *Verdict, next func() *Verdict, ok bool) {
	if i+1 >= len(p.Rules) {
		return nil, nil, false
	}
	a, ok1 := p.Rules[i].(batcher)
	b, ok2 := p.Rules[i+1].(batcher)
	if !ok1 || !ok2 {
		return nil, nil, false
	}
	rdbA, callsA, okA := a.batch(m, p.action(m, p.Rules[i].Name()) != "allow")
	if !okA {
		return nil, nil, false
	}
	rdbB, callsB, joined := b.batch(m, p.action(m, p.Rules[i+1].Name()) != "allow")
	if !joined || rdbA != rdbB {
		// a's calls alone (they are built: not again by its Check); the
		// next rule checks by itself.
		joined, callsB = false, nil
	}
	calls := append(callsA, callsB...)
	withCommit := joined && m.commit != nil && i+2 == len(p.Rules) && m.commit.rdb == rdbA
	if withCommit {
		// The last rules: the quota commit rides along, and is run only
		// if no stop ended the batch before it.
		calls = append(calls, m.commit.call)
	}
	res, err := runBatch(ctx, rdbA, calls)
	if err == nil && len(res) < len(callsA) {
		err = fmt.Errorf("%w: batch: %d answers", ErrStore, len(res))
	}
	if err != nil {
		if !joined {
			return a.judgeBatch(ctx, m, nil, err), nil, true
		}
		return a.judgeBatch(ctx, m, nil, err), func() *Verdict { return b.judgeBatch(ctx, m, nil, err) }, true
	}
	if withCommit && len(res) == len(calls) {
		// {0, now}: charged; a refusal is left to the caller's own
		// Commit, which says why.
		last := res[len(res)-1]
		m.commit.done = len(last) > 0 && last[0] == 0
		m.commit.answered(last)
		res = res[:len(res)-1]
	}
	v = a.judgeBatch(ctx, m, res[:len(callsA)], nil)
	if !joined {
		return v, nil, true
	}
	rest := res[len(callsA):]
	if len(rest) < len(callsB) {
		// The batch stopped at rule i's calls: its verdict ends the
		// screening, so the next rule is never asked. Should it be, it
		// judges by itself.
		return v, func() *Verdict { return p.Rules[i+1].Check(ctx, m) }, true
	}
	return v, func() *Verdict { return b.judgeBatch(ctx, m, rest, nil) }, true
}

// action finds an override: the login's own, then its domain's, then the
// header From domain's (a login may send for several domains).
func (p *Pipeline) action(m *Message, rule string) string {
	if len(p.Overrides) == 0 {
		return "" // the usual case: no From to parse
	}
	for _, k := range m.overrideKeys() {
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
	if v.Action == Mark {
		// Not let through marked: held or refused for what the rule
		// found (a content rating), which the sender can change.
		c.Headers = nil
		if a == Hold {
			c.Message += "; it is held for review"
		} else {
			c.Message += "; remove what triggers it or ask the administrator to check the message"
		}
	}
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

// ScreenAndCommit is ScreenMessageHeaders that also charges the message
// (Quota.Commit of login's transaction txn, as message id, for every
// recipient) in the round trip of the counting rules, when the quota and
// they are in one Redis. committed reports whether it did: if not, the
// caller commits as before; if it did and the message is refused or not
// queued after all, the caller refunds it.
func (p *Pipeline) ScreenAndCommit(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool,
	override *int, txn, id string) (hold string, headers []byte, committed bool, err error) {
	m := newMessage(login, ourHost, envFrom, rcpts, raw, smtputf8)
	if p.Quota != nil {
		if bc, ok := p.Quota.commitCall(login, override, txn, id, len(rcpts)); ok {
			m.commit = bc
		}
	}
	hold, headers, err = p.screen(ctx, m)
	return hold, headers, m.commit != nil && m.commit.done, err
}

// ScreenMessageHeaders is the pipeline as submit sees it
// (submit.Screener): it returns a hold reason when the message is to be
// accepted but held, or an error carrying the reply (a *Verdict) when it
// is refused or deferred, and the header fields to put in front of an
// accepted message (each ending in CRLF; e.g. "X-Spam: Yes" when Rspamd
// says "add header"), for the caller to add before signing.
func (p *Pipeline) ScreenMessageHeaders(ctx context.Context, login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) (string, []byte, error) {
	return p.screen(ctx, newMessage(login, ourHost, envFrom, rcpts, raw, smtputf8))
}

// newMessage is the message submit hands over, for the pipeline.
func newMessage(login, ourHost, envFrom string, rcpts []string, raw []byte, smtputf8 bool) *Message {
	return &Message{Login: login, EnvelopeFrom: envFrom, Rcpts: rcpts, Raw: raw, SMTPUTF8: smtputf8, OurHostname: ourHost}
}

func (p *Pipeline) screen(ctx context.Context, m *Message) (string, []byte, error) {
	login := m.Login
	out := p.Run(ctx, m)
	v := out.Verdict
	switch {
	case v == nil:
		return "", out.Headers, nil
	case v.Action == Hold:
		p.Log.Warn("screen: message held", "login", login, "rule", v.Rule, "reason", v.Message)
		return v.Rule + ": " + v.Message, out.Headers, nil
	}
	return "", nil, v
}
