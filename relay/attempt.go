package relay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"sluice/relay/spool"
)

// outcome is the result of one recipient in one attempt.
type outcome struct {
	rcpt  string
	code  int    // SMTP code, or 0 for a connection/DNS problem (temporary)
	reply string // the remote reply or our description
	host  string
}

func (o outcome) permanent() bool { return o.code >= 500 }
func (o outcome) ok() bool        { return o.code >= 200 && o.code < 300 }

// attempt tries every pending recipient of message id once. It returns
// when to try again (zero: nothing left to do).
func (r *Relay) attempt(ctx context.Context, id string) (time.Time, error) {
	env, msg, err := r.spool.Read(id)
	if errors.Is(err, spool.ErrCorrupt) {
		// Cut short by a crash before its sync: never acknowledged, the
		// client sent it again. Drop it.
		r.log.Warn("relay: dropping incomplete spool file (never acknowledged)", "id", id)
		r.spool.Remove(id)
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	st, err := r.spool.LoadState(id, env)
	if err != nil {
		return time.Time{}, err
	}
	if st.Held {
		return time.Time{}, nil
	}
	now := r.now()
	st.Attempts++

	byDomain := map[string][]string{}
	for _, rc := range st.Pending() {
		d := strings.ToLower(rc[strings.LastIndexByte(rc, '@')+1:])
		byDomain[d] = append(byDomain[d], rc)
	}
	domains := make([]string, 0, len(byDomain))
	for d := range byDomain {
		domains = append(domains, d)
	}
	sort.Strings(domains)

	var failed []outcome
	for _, d := range domains {
		rcpts := byDomain[d]
		var outs []outcome
		if sup := r.suppressedOutcomes(env, rcpts); len(sup) > 0 {
			outs = append(outs, sup...)
			rcpts = remaining(rcpts, sup)
		}
		if len(rcpts) > 0 {
			outs = append(outs, r.deliverDomain(ctx, d, env, rcpts, msg)...)
		}
		for _, o := range outs {
			rs := st.Rcpt(o.rcpt)
			if rs == nil {
				continue
			}
			rs.Attempts++
			rs.LastReply, rs.LastHost, rs.Updated = o.reply, o.host, r.now()
			category, _, _ := r.explain(o.reply)
			switch {
			case o.ok():
				rs.Status = spool.RcptDelivered
			case o.permanent():
				rs.Status = spool.RcptFailed
				failed = append(failed, o)
				if r.suppress != nil && isUnknownMailbox(o.reply) {
					r.suppress.Add(senderDomain(env.From), o.rcpt, o.reply)
				}
			}
			status := rs.Status
			if status == spool.RcptPending {
				status = "deferred"
			}
			r.log.Info("delivery", "id", id, "rcpt", o.rcpt, "result", status, "host", o.host, "attempt", st.Attempts,
				"category", category, "reply", o.reply)
			if r.OnResult != nil {
				r.OnResult(id, o.rcpt, status, category, r.now().Sub(env.Received))
			}
		}
	}

	pending := st.Pending()
	expired := len(pending) > 0 && now.Sub(env.Received) >= r.cfg.MaxAge
	if expired {
		for _, rc := range pending {
			rs := st.Rcpt(rc)
			rs.Status = spool.RcptFailed
			reply := fmt.Sprintf("gave up after %s of retries; last reply: %s", r.cfg.MaxAge, rs.LastReply)
			failed = append(failed, outcome{rcpt: rc, code: 0, reply: reply, host: rs.LastHost})
		}
		pending = nil
	}
	if len(failed) > 0 && env.From != "" {
		if err := r.bounce(env, msg, failed, false); err != nil {
			r.log.Error("relay: failure DSN not queued", "id", id, "err", err)
		}
	}
	if len(pending) == 0 {
		return time.Time{}, r.spool.Remove(id)
	}
	if r.cfg.WarnAfter > 0 && !st.Warned && env.From != "" && now.Sub(env.Received) >= r.cfg.WarnAfter {
		var delayed []outcome
		for _, rc := range pending {
			rs := st.Rcpt(rc)
			delayed = append(delayed, outcome{rcpt: rc, reply: rs.LastReply, host: rs.LastHost})
		}
		if err := r.bounce(env, msg, delayed, true); err == nil {
			st.Warned = true
		}
	}
	st.NextTry = now.Add(r.backoff(st.Attempts))
	if deadline := env.Received.Add(r.cfg.MaxAge); st.NextTry.After(deadline) {
		st.NextTry = deadline
	}
	if err := r.spool.SaveState(id, st); err != nil {
		return st.NextTry, err
	}
	return st.NextTry, nil
}

func remaining(rcpts []string, done []outcome) []string {
	skip := map[string]bool{}
	for _, o := range done {
		skip[o.rcpt] = true
	}
	var out []string
	for _, r := range rcpts {
		if !skip[r] {
			out = append(out, r)
		}
	}
	return out
}

func senderDomain(from string) string {
	return strings.ToLower(from[strings.LastIndexByte(from, '@')+1:])
}

// isUnknownMailbox recognises a hard bounce for a mailbox that does not
// exist (RFC 3463 5.1.1), which is worth remembering.
func isUnknownMailbox(reply string) bool {
	return strings.Contains(reply, "5.1.1") || strings.Contains(reply, "5.1.10")
}

func (r *Relay) suppressedOutcomes(env *spool.Envelope, rcpts []string) []outcome {
	if r.suppress == nil || env.From == "" {
		return nil
	}
	var out []outcome
	for _, rc := range rcpts {
		if e, ok := r.suppress.Lookup(senderDomain(env.From), rc); ok {
			out = append(out, outcome{rcpt: rc, code: 550, host: "suppression list",
				reply: fmt.Sprintf("550 5.1.1 not sent: %s bounced as unknown on %s (%s); Sluice suppresses it until %s",
					rc, e.Since.UTC().Format("2006-01-02"), e.Reply, e.Until.UTC().Format("2006-01-02"))})
		}
	}
	return out
}
