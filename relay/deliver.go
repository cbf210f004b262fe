package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sluice/relay/spool"
)

// target is one server to try, in order.
type target struct {
	host     string // name (for TLS and logs)
	port     int
	implicit bool // implicit TLS (smarthost on 465)
	policy   *Policy
}

// deliverDomain runs one SMTP transaction for the recipients of one domain.
func (r *Relay) deliverDomain(ctx context.Context, domain string, env *spool.Envelope, rcpts []string, msg []byte) []outcome {
	all := func(code int, reply, host string) []outcome {
		out := make([]outcome, len(rcpts))
		for i, rc := range rcpts {
			out[i] = outcome{rcpt: rc, code: code, reply: reply, host: host}
		}
		return out
	}
	dest := domain
	if r.cfg.Mode == "smarthost" {
		dest = "smarthost"
	}
	release, err := r.domainSlot(ctx, dest)
	if err != nil {
		return all(0, "shutting down before the attempt", "")
	}
	defer release()

	targets, perm, err := r.targets(ctx, domain)
	if err != nil {
		if perm {
			return all(550, err.Error(), "")
		}
		return all(0, err.Error(), "")
	}
	var last []outcome
	for _, t := range targets {
		outs, tried := r.tryTarget(ctx, t, env, rcpts, msg)
		if !tried {
			last = outs
			continue
		}
		return outs
	}
	if last == nil {
		last = all(0, "no mail server of "+domain+" could be reached", "")
	}
	return last
}

// targets lists the servers for domain: the smarthost, or its MX hosts by
// preference (equal preferences shuffled), or its address records when it
// has no MX (RFC 5321 5.1). A null MX (RFC 7505) is a permanent failure.
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
		policy = p
	}
	mxs, err := r.dns.LookupMX(ctx, domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			if _, aerr := r.dns.LookupIPAddr(ctx, domain); aerr != nil {
				if errors.As(aerr, &de) && de.IsNotFound {
					return nil, true, fmt.Errorf("550 5.1.2 the domain %s has no mail server (no MX or address record)", domain)
				}
				return nil, false, fmt.Errorf("DNS lookup for %s failed: %v", domain, aerr)
			}
			return []target{{host: domain, port: r.cfg.MXPort, policy: policy}}, false, nil
		}
		return nil, false, fmt.Errorf("MX lookup for %s failed: %v", domain, err)
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return nil, true, fmt.Errorf("556 5.1.10 the domain %s does not accept mail (null MX, RFC 7505)", domain)
	}
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	var out []target
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		if policy != nil && policy.Mode == "enforce" && !policy.Matches(host) {
			r.log.Warn("mta-sts: MX not in the enforced policy; skipped", "domain", domain, "mx", host)
			continue
		}
		out = append(out, target{host: host, port: r.cfg.MXPort, policy: policy})
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
	fail := func(code int, reply string) []outcome {
		out := make([]outcome, len(rcpts))
		for i, rc := range rcpts {
			out[i] = outcome{rcpt: rc, code: code, reply: reply, host: t.host}
		}
		return out
	}
	c, key, err := r.connect(ctx, t)
	if err != nil {
		return fail(0, err.Error()), false
	}
	outs, reusable := r.transaction(c, t, env, rcpts, msg)
	if reusable {
		r.pool.put(key, c)
	} else {
		c.Close()
	}
	return outs, true
}

// transaction runs MAIL, RCPT for each recipient, and DATA.
func (r *Relay) transaction(c *smtp.Client, t target, env *spool.Envelope, rcpts []string, msg []byte) ([]outcome, bool) {
	res := make([]outcome, len(rcpts))
	setAll := func(code int, reply string) {
		for i, rc := range rcpts {
			if res[i].code == 0 || res[i].ok() {
				res[i] = outcome{rcpt: rc, code: code, reply: reply, host: t.host}
			}
		}
	}
	opts := &smtp.MailOptions{Size: int64(len(msg))}
	if err := c.Mail(env.From, opts); err != nil {
		code, reply := replyOf(err)
		setAll(code, reply)
		return res, code != 0 && resetOK(c)
	}
	accepted := 0
	for i, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			code, reply := replyOf(err)
			res[i] = outcome{rcpt: rc, code: code, reply: reply, host: t.host}
			if code == 0 {
				setAll(0, reply)
				return res, false
			}
			continue
		}
		res[i] = outcome{rcpt: rc, code: 250, host: t.host}
		accepted++
	}
	if accepted == 0 {
		return res, resetOK(c)
	}
	w, err := c.Data()
	if err != nil {
		code, reply := replyOf(err)
		setAll(code, reply)
		return res, code != 0 && resetOK(c)
	}
	if _, err := w.Write(msg); err != nil {
		setAll(0, "connection lost while sending the message: "+err.Error())
		return res, false
	}
	dr, err := w.CloseWithResponse()
	if err != nil {
		code, reply := replyOf(err)
		setAll(code, reply)
		return res, code != 0 && resetOK(c)
	}
	reply := "250 " + dr.StatusText
	for i := range res {
		if res[i].code == 250 {
			res[i].reply = reply
		}
	}
	return res, true
}

func resetOK(c *smtp.Client) bool { return c.Reset() == nil }

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
	return 0, "connection problem: " + err.Error()
}

// connect returns a ready client for t (EHLO done, TLS and AUTH as policy
// says), reused from the pool when one is idle.
func (r *Relay) connect(ctx context.Context, t target) (*smtp.Client, string, error) {
	ips, err := r.addrs(ctx, t.host)
	if err != nil {
		return nil, "", err
	}
	var lastErr error
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(t.port))
		key := t.host + "|" + addr
		if c := r.pool.get(key); c != nil {
			return c, key, nil
		}
		c, err := r.dial(ctx, t, ip, addr, true)
		if err != nil && t.policy == nil && !t.implicit && r.cfg.Mode != "smarthost" && errors.Is(err, errTLSFailed) {
			// Opportunistic TLS failed: deliver in clear rather than not
			// at all (RFC 3207 allows it; MTA-STS enforce forbids it).
			c, err = r.dial(ctx, t, ip, addr, false)
		}
		if err != nil {
			lastErr = err
			continue
		}
		return c, key, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("%s has no address", t.host)
	}
	return nil, "", lastErr
}

func (r *Relay) addrs(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	as, err := r.dns.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("address lookup for %s failed: %v", host, err)
	}
	ips := make([]net.IP, 0, len(as))
	for _, a := range as {
		ips = append(ips, a.IP)
	}
	return ips, nil
}

var errTLSFailed = errors.New("TLS negotiation failed")

func (r *Relay) dial(ctx context.Context, t target, ip net.IP, addr string, useTLS bool) (*smtp.Client, error) {
	d := net.Dialer{Timeout: r.cfg.ConnectTimeout}
	if local := r.localAddr(ip); local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s (%s): %v", t.host, addr, err)
	}
	tlsCfg := r.tlsConfig(t)
	helo := r.cfg.HELO
	if helo == "" {
		helo = r.cfg.Hostname
	}
	mustTLS := t.policy != nil && t.policy.Mode == "enforce" || r.cfg.Mode == "smarthost"
	var c *smtp.Client
	if t.implicit {
		c = smtp.NewClient(tls.Client(conn, tlsCfg))
	} else {
		br, op, err := openSession(conn, helo, r.cfg.ConnectTimeout)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s (%s) greeting: %v", t.host, addr, err)
		}
		switch {
		case op.startTLS && useTLS:
			tc, err := upgrade(conn, br, tlsCfg, r.cfg.ConnectTimeout)
			if err != nil {
				conn.Close()
				return nil, fmt.Errorf("%w with %s: %v", errTLSFailed, t.host, err)
			}
			conn = &replayConn{Conn: tc, pending: []byte("220 " + op.greeting + "\r\n")}
		case mustTLS:
			conn.Close()
			return nil, fmt.Errorf("%s does not offer STARTTLS, which its policy requires", t.host)
		default:
			conn = &replayConn{Conn: conn, pending: []byte("220 " + op.greeting + "\r\n"), br: br}
		}
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = r.cfg.CommandTimeout
	c.SubmissionTimeout = r.cfg.CommandTimeout + 2*time.Minute
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s (%s) EHLO: %v", t.host, addr, err)
	}
	if r.cfg.Mode == "smarthost" && r.cfg.SmarthostUsername != "" {
		var a sasl.Client
		if c.SupportsAuth(sasl.Plain) {
			a = sasl.NewPlainClient("", r.cfg.SmarthostUsername, r.cfg.SmarthostPassword)
		} else {
			a = sasl.NewLoginClient(r.cfg.SmarthostUsername, r.cfg.SmarthostPassword)
		}
		if err := c.Auth(a); err != nil {
			c.Close()
			_, reply := replyOf(err)
			return nil, fmt.Errorf("smarthost refused our login: %s", reply)
		}
	}
	return c, nil
}

// tlsConfig verifies certificates only where a policy says so (MTA-STS
// enforce, or the smarthost); elsewhere TLS is opportunistic (RFC 3207).
func (r *Relay) tlsConfig(t target) *tls.Config {
	cfg := &tls.Config{ServerName: t.host, MinVersion: tls.VersionTLS12}
	switch {
	case r.cfg.Mode == "smarthost":
		cfg.InsecureSkipVerify = r.cfg.SmarthostInsecure
	case t.policy != nil && t.policy.Mode == "enforce":
		if r.sts != nil && r.sts.RootCAs != nil {
			cfg.RootCAs = r.sts.RootCAs
		}
	default:
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

func (r *Relay) localAddr(remote net.IP) net.IP {
	if remote.IsLoopback() {
		return nil
	}
	v4 := remote.To4() != nil
	for _, ip := range r.cfg.SourceIPs {
		if (ip.To4() != nil) == v4 {
			return ip
		}
	}
	return nil
}
