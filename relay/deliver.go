package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"sluice/relay/resolver"
	"sluice/relay/spool"
)

// target is one server to try, in order.
type target struct {
	host     string // name (for TLS and logs)
	port     int
	implicit bool // implicit TLS (smarthost on 465)
	policy   *Policy
}

// enforced reports an MTA-STS policy in enforce mode: verified TLS to a
// listed MX, never clear text (RFC 8461 5).
func (t target) enforced() bool { return t.policy != nil && t.policy.Mode == "enforce" }

// deliverDomain runs one SMTP transaction for the recipients of one domain
// (more only when the server limits recipients per transaction).
func (r *Relay) deliverDomain(ctx context.Context, domain string, env *spool.Envelope, rcpts []string, msg []byte) []outcome {
	dest := domain
	if r.cfg.Mode == "smarthost" {
		dest = "smarthost"
	}
	release, err := r.domainSlot(ctx, dest)
	if err != nil {
		return sameOutcome(rcpts, 0, "shutting down before the attempt", "")
	}
	defer release()

	targets, perm, err := r.targets(ctx, domain)
	if err != nil {
		code := 0 // temporary
		if perm {
			// The error is a reply line: 550 5.1.2, 556 5.1.10.
			if code = replyCode(err.Error()); code < 500 {
				code = 550
			}
		}
		return sameOutcome(rcpts, code, err.Error(), "")
	}
	var last []outcome
	for _, t := range targets {
		outs, tried := r.tryTarget(ctx, t, env, rcpts, msg)
		if !tried {
			last = outs
			continue
		}
		r.sendRest(ctx, t, env, outs, msg)
		return outs
	}
	if last == nil {
		last = sameOutcome(rcpts, 0, "no mail server of "+domain+" could be reached", "")
	}
	return last
}

// sameOutcome gives every recipient the same result.
func sameOutcome(rcpts []string, code int, reply, host string) []outcome {
	out := make([]outcome, len(rcpts))
	for i, rc := range rcpts {
		out[i] = outcome{rcpt: rc, code: code, reply: reply, host: host}
	}
	return out
}

// sendRest sends the recipients a server refused as too many for one
// transaction in further transactions at once, as long as each one
// delivers to some of them (RFC 5321 4.5.3.1.10), and updates outs.
func (r *Relay) sendRest(ctx context.Context, t target, env *spool.Envelope, outs []outcome, msg []byte) {
	round := outs
	for {
		progress := false
		var rest []string
		for _, o := range round {
			progress = progress || o.ok()
			if tooManyRecipients(o) {
				rest = append(rest, o.rcpt)
			}
		}
		if !progress || len(rest) == 0 {
			return
		}
		var tried bool
		round, tried = r.tryTarget(ctx, t, env, rest, msg)
		if !tried {
			return
		}
		for _, o := range round {
			for i := range outs {
				if outs[i].rcpt == o.rcpt {
					outs[i] = o
				}
			}
		}
	}
}

// tooManyRecipients recognises the reply to a RCPT beyond the server's
// limit per transaction (452, RFC 5321 4.5.3.1.10; 4.5.3, RFC 3463).
func tooManyRecipients(o outcome) bool {
	return o.code == 452 && (enhancedCode(o.reply) == "4.5.3" || strings.Contains(strings.ToLower(o.reply), "too many recipients"))
}

// enhancedCode returns the RFC 3463 code that follows the reply code in a
// reply line ("550 5.1.1 ..."), or "".
func enhancedCode(reply string) string {
	f := strings.Fields(reply)
	if len(f) < 2 || len(f[0]) != 3 {
		return ""
	}
	parts := strings.Split(f[1], ".")
	if len(parts) != 3 || len(parts[0]) != 1 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return ""
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return ""
		}
	}
	return f[1]
}

// targets lists the servers for domain: the smarthost, or its MX hosts by
// preference (equal preferences shuffled), or its address records when it
// has no MX (RFC 5321 5.1). A null MX (RFC 7505) is a permanent failure.
// Under an enforced MTA-STS policy only the hosts it lists remain.
func (r *Relay) targets(ctx context.Context, domain string) ([]target, bool, error) {
	if r.cfg.Mode == "smarthost" {
		host, portStr, err := net.SplitHostPort(r.cfg.Smarthost)
		if err != nil {
			return nil, false, fmt.Errorf("smarthost %q is not host:port", r.cfg.Smarthost)
		}
		port, _ := strconv.Atoi(portStr)
		return []target{{host: host, port: port, implicit: r.cfg.SmarthostTLS == "implicit"}}, false, nil
	}
	var policy *Policy
	if r.sts != nil {
		p, err := r.sts.Get(ctx, domain)
		if err != nil {
			r.log.Warn("mta-sts: policy not available", "domain", domain, "err", err)
		}
		if p != nil && p.Mode != "none" {
			policy = p
		}
	}
	// allowed applies the policy to one host: enforce drops an unlisted
	// one, testing only reports it (RFC 8461 4.1, 5).
	allowed := func(host string) bool {
		if policy == nil || policy.Matches(host) {
			return true
		}
		if policy.Mode == "testing" {
			r.log.Warn("mta-sts testing: MX not in the policy; an enforced policy would skip it", "domain", domain, "mx", host)
			return true
		}
		r.log.Warn("mta-sts: MX not in the enforced policy; skipped", "domain", domain, "mx", host)
		return false
	}
	var hosts []string
	mxs, err := r.dns.LookupMX(ctx, domain)
	switch {
	case err == nil:
		rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
		sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
		for _, mx := range mxs {
			// "." is the null MX; RFC 7505 3 forbids other MX records
			// beside it, so if there are any, they are what is left.
			if h := strings.TrimSuffix(mx.Host, "."); h != "" {
				hosts = append(hosts, h)
			}
		}
		if len(hosts) == 0 {
			return nil, true, fmt.Errorf("556 5.1.10 the domain %s does not accept mail (null MX, RFC 7505)", domain)
		}
	case resolver.IsNotFound(err):
		if _, aerr := r.dns.LookupIPAddr(ctx, domain); aerr != nil {
			if resolver.IsNotFound(aerr) {
				return nil, true, fmt.Errorf("550 5.1.2 the domain %s has no mail server (no MX or address record)", domain)
			}
			return nil, false, fmt.Errorf("DNS lookup for %s failed: %s", domain, resolver.Cause(aerr))
		}
		hosts = []string{domain} // the implicit MX
	default:
		return nil, false, fmt.Errorf("MX lookup for %s failed: %s", domain, resolver.Cause(err))
	}
	var out []target
	for _, h := range hosts {
		if allowed(h) {
			out = append(out, target{host: h, port: r.cfg.MXPort, policy: policy})
		}
	}
	if len(out) == 0 {
		return nil, false, fmt.Errorf("no MX host of %s is allowed by its MTA-STS policy (enforce)", domain)
	}
	return out, false, nil
}

// tryTarget delivers through one server. tried is false when no SMTP
// transaction could start there (connection, TLS or greeting problems), so
// the next server should be tried.
func (r *Relay) tryTarget(ctx context.Context, t target, env *spool.Envelope, rcpts []string, msg []byte) ([]outcome, bool) {
	fresh := false
	for {
		c, key, reused, err := r.connect(ctx, t, fresh)
		if err != nil {
			return sameOutcome(rcpts, 0, err.Error(), t.host), false
		}
		outs, reusable, stale := r.transaction(c, t, env, rcpts, msg)
		if stale && reused {
			// The server closed the idle session (a 421 timeout or plain
			// EOF) before our MAIL: nothing was sent, so open a new one
			// instead of deferring the message.
			c.Close()
			r.log.Debug("relay: pooled connection was closed by the server; redialling", "mx", t.host)
			fresh = true
			continue
		}
		if reusable {
			r.pool.put(key, c)
		} else {
			c.Close()
		}
		return outs, true
	}
}

// transaction runs MAIL, RCPT for each recipient, and DATA. stale reports
// that MAIL got no reply or a 421: the session was over before it began.
func (r *Relay) transaction(c *conn, t target, env *spool.Envelope, rcpts []string, msg []byte) (res []outcome, reusable, stale bool) {
	res = make([]outcome, len(rcpts))
	setAll := func(code int, reply string) { setUnrefused(res, rcpts, code, reply, t.host) }
	opts := &smtp.MailOptions{Size: int64(len(msg))}
	if needsSMTPUTF8(env.From, rcpts) {
		// RFC 6531 3.4: an address in UTF-8 needs a server that says
		// SMTPUTF8; there is no downgrade, so without it the mail bounces.
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			setAll(553, "553 5.6.7 the receiving server "+t.host+" does not support SMTPUTF8, which the non-ASCII address needs")
			return res, true, false
		}
		opts.UTF8 = true
	}
	if ok, _ := c.Extension("PIPELINING"); ok && c.raw != nil {
		return r.pipelinedTransaction(c, t, env, rcpts, msg, opts)
	}
	if err := c.Mail(env.From, opts); err != nil {
		code, reply := replyOf(err)
		setAll(code, reply)
		if code == 0 || code == 421 {
			return res, false, true
		}
		return res, resetOK(c), false
	}
	accepted := 0
	for i, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			code, reply := replyOf(err)
			res[i] = outcome{rcpt: rc, code: code, reply: reply, host: t.host}
			if code == 0 || code == 421 {
				setAll(code, reply)
				return res, false, false
			}
			continue
		}
		res[i] = outcome{rcpt: rc, code: 250, host: t.host}
		accepted++
	}
	if accepted == 0 {
		return res, resetOK(c), false
	}
	w, err := c.Data()
	if err != nil {
		code, reply := replyOf(err)
		setAll(code, reply)
		return res, code != 0 && code != 421 && resetOK(c), false
	}
	if _, err := w.Write(msg); err != nil {
		setAll(0, "connection lost while sending the message: "+resolver.Cause(err))
		return res, false, false
	}
	dr, err := w.CloseWithResponse()
	if err != nil {
		code, reply := replyOf(err)
		setAll(code, reply)
		return res, code != 0 && code != 421 && resetOK(c), false
	}
	reply := "250 " + dr.StatusText
	for i := range res {
		if res[i].code == 250 {
			res[i].reply = reply
		}
	}
	return res, true, false
}

// setUnrefused gives every recipient that no reply refused yet (none
// so far, or accepted) the outcome code and reply: what a failure of the
// whole transaction means for each.
func setUnrefused(res []outcome, rcpts []string, code int, reply, host string) {
	for i, rc := range rcpts {
		if res[i].code == 0 || res[i].ok() {
			res[i] = outcome{rcpt: rc, code: code, reply: reply, host: host}
		}
	}
}

func resetOK(c *conn) bool { return c.Reset() == nil }

// needsSMTPUTF8 reports an envelope address that is not ASCII.
func needsSMTPUTF8(from string, rcpts []string) bool {
	if !isASCII(from) {
		return true
	}
	for _, r := range rcpts {
		if !isASCII(r) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// replyOf turns a client error into a code and a reply line; code 0 means
// no SMTP reply (the connection failed).
func replyOf(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		enh := ""
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
			enh = fmt.Sprintf("%d.%d.%d ", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return se.Code, fmt.Sprintf("%d %s%s", se.Code, enh, strings.ReplaceAll(se.Message, "\n", " "))
	}
	return 0, "connection problem: " + resolver.Cause(err)
}
