package relay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
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
	// suppressed: not sent, the recipient is on the suppression list (the
	// reply is ours and is not remembered again).
	suppressed bool
	// expired: still deferred when max_age ran out; reply is the last one.
	expired bool
}

func (o outcome) permanent() bool { return o.code >= 500 }
func (o outcome) ok() bool        { return o.code >= 200 && o.code < 300 }

// attempt tries every pending recipient of message id once. It returns
// when to try again (zero: nothing left to do) and the attempts so far.
func (r *Relay) attempt(ctx context.Context, id string) (time.Time, int, error) {
	env, msg, err := r.spool.Read(id)
	if errors.Is(err, spool.ErrCorrupt) {
		// Cut short by a crash before its sync: never acknowledged, the
		// client sent it again. Drop it.
		r.log.Warn("relay: dropping incomplete spool file (never acknowledged)", "id", id)
		r.spool.Remove(id)
		return time.Time{}, 0, nil
	}
	if errors.Is(err, spool.ErrNotFound) {
		return time.Time{}, 0, nil // deleted (sluice queue delete)
	}
	if err != nil {
		return time.Time{}, 0, err
	}
	st, err := r.spool.LoadState(id, env)
	if err != nil {
		return time.Time{}, 0, err
	}
	if st.Held || ctx.Err() != nil {
		return time.Time{}, 0, nil // held, or shut down before it began: nothing changes
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
		if ctx.Err() != nil {
			break // shutting down: the rest waits for the next start
		}
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
				if r.suppress != nil && !o.suppressed && env.From != "" && isUnknownMailbox(o.reply) {
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
				r.OnResult(env, o.rcpt, status, category, r.now().Sub(env.Received))
			}
		}
	}

	// Shutdown cut the attempt short (domains not tried, or connections
	// cancelled): keep what is known and try again as soon as Sluice runs
	// again; failures already final still get their DSN.
	interrupted := ctx.Err() != nil
	pending := st.Pending()
	expired := !interrupted && len(pending) > 0 && now.Sub(env.Received) >= r.cfg.MaxAge
	if expired {
		for _, rc := range pending {
			rs := st.Rcpt(rc)
			rs.Status = spool.RcptFailed
			o := outcome{rcpt: rc, code: replyCode(rs.LastReply), reply: rs.LastReply, host: rs.LastHost, expired: true}
			failed = append(failed, o)
			summary := r.gaveUp(o.reply)
			category, _, _ := r.explain(summary)
			r.log.Info("delivery", "id", id, "rcpt", rc, "result", "failed", "host", o.host, "attempt", st.Attempts,
				"category", category, "reply", summary)
			if r.OnResult != nil {
				r.OnResult(env, rc, spool.RcptFailed, category, r.now().Sub(env.Received))
			}
		}
		pending = nil
	}
	if len(failed) > 0 && env.From != "" {
		if err := r.bounce(env, msg, failed, false); err != nil {
			r.log.Error("relay: failure DSN not queued", "id", id, "err", err)
		}
	}
	if len(pending) == 0 {
		return time.Time{}, 0, r.spool.Remove(id)
	}
	if interrupted {
		st.NextTry = now
		return time.Time{}, 0, r.saveState(id, env, st)
	}
	if r.cfg.WarnAfter > 0 && !st.Warned && env.From != "" && now.Sub(env.Received) >= r.cfg.WarnAfter {
		var delayed []outcome
		for _, rc := range pending {
			rs := st.Rcpt(rc)
			delayed = append(delayed, outcome{rcpt: rc, code: replyCode(rs.LastReply), reply: rs.LastReply, host: rs.LastHost})
		}
		if err := r.bounce(env, msg, delayed, true); err == nil {
			st.Warned = true
		}
	}
	st.NextTry = now.Add(r.backoff(st.Attempts))
	if deadline := env.Received.Add(r.cfg.MaxAge); st.NextTry.After(deadline) {
		st.NextTry = deadline
	}
	if err := r.saveState(id, env, st); err != nil {
		return st.NextTry, st.Attempts, err
	}
	return st.NextTry, st.Attempts, nil
}

// saveState writes st, keeping a hold that `sluice queue hold` put on the
// message while this attempt ran (it writes the state file directly).
func (r *Relay) saveState(id string, env *spool.Envelope, st *spool.State) error {
	if cur, err := r.spool.LoadState(id, env); err == nil && cur.Held && !st.Held {
		st.Held, st.HeldWhy = true, cur.HeldWhy
	}
	err := r.spool.SaveState(id, st)
	if errors.Is(err, spool.ErrNotFound) {
		return nil // deleted while in flight
	}
	return err
}

// gaveUp is the summary of an expired recipient, in the form the
// explainer (relay/explain) recognises.
func (r *Relay) gaveUp(lastReply string) string {
	return "gave up after " + span(r.cfg.MaxAge) + " of retries; last reply: " + lastReply
}

// replyCode is the SMTP code a reply line starts with (0: none, as for
// "connection problem: ...").
func replyCode(reply string) int {
	if len(reply) < 3 || (len(reply) > 3 && reply[3] != ' ' && reply[3] != '-') {
		return 0
	}
	n, err := strconv.Atoi(reply[:3])
	if err != nil || n < 200 || n > 599 {
		return 0
	}
	return n
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
// exist by its enhanced code (RFC 3463 5.1.1; 5.1.10, RFC 7505), which is
// worth remembering. The code is the one after the reply code, not any
// "5.1.1" in the text (an address such as 85.1.1.4 is not one).
func isUnknownMailbox(reply string) bool {
	c := enhancedCode(reply)
	return strings.HasPrefix(reply, "5") && (c == "5.1.1" || c == "5.1.10")
}

func (r *Relay) suppressedOutcomes(env *spool.Envelope, rcpts []string) []outcome {
	if r.suppress == nil || env.From == "" {
		return nil
	}
	var out []outcome
	for _, rc := range rcpts {
		if e, ok := r.suppress.Lookup(senderDomain(env.From), rc); ok {
			out = append(out, outcome{rcpt: rc, code: 550, host: "suppression list", suppressed: true,
				reply: fmt.Sprintf("550 5.1.1 not sent: %s bounced as unknown on %s (%s); Sluice suppresses it until %s",
					rc, e.Since.UTC().Format("2006-01-02"), e.Reply, e.Until.UTC().Format("2006-01-02"))})
		}
	}
	return out
}
