package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"sluice/relay/spool"
)

// bounce queues a delivery status notification (RFC 3464) for env's sender:
// a failure report, or with delayed a warning that delivery is still being
// retried. It is sent from the null sender, so it can never cause another
// DSN. The original message's header is attached.
func (r *Relay) bounce(env *spool.Envelope, msg []byte, outs []outcome, delayed bool) error {
	if env.From == "" {
		return nil // never a DSN for a DSN
	}
	now := r.now().UTC()
	var b bytes.Buffer
	boundary := randomToken()
	host := r.cfg.Hostname
	subject := "Undelivered Mail Returned to Sender"
	action := "failed"
	if delayed {
		subject = "Delayed Mail (still being retried)"
		action = "delayed"
	}
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host)
	fmt.Fprintf(&b, "To: <%s>\r\n", env.From)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.dsn@%s>\r\n", randomToken(), host)
	fmt.Fprintf(&b, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is a MIME-encapsulated delivery status report.\r\n\r\n")

	// 1. For the person.
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n", boundary)
	intro := fmt.Sprintf("Your message (queue id %s, received %s) could not be delivered to the recipients below. Each entry says what went wrong and what to do.",
		env.ID, env.Received.UTC().Format(time.RFC1123Z))
	if delayed {
		intro = fmt.Sprintf("Your message (queue id %s, received %s) has not been delivered yet to the recipients below. Sluice keeps trying until %s; you do not need to send it again.",
			env.ID, env.Received.UTC().Format(time.RFC1123Z), env.Received.Add(r.cfg.MaxAge).UTC().Format(time.RFC1123Z))
	}
	fmt.Fprintf(&b, "This is the mail system at %s.\r\n\r\n%s\r\n\r\n", host, wrap(intro, 72, ""))
	for _, o := range outs {
		explained := o.reply
		if o.expired {
			explained = r.gaveUp(o.reply)
		}
		category, meaning, todo := r.explain(explained)
		fmt.Fprintf(&b, "<%s>\r\n", o.rcpt)
		if o.host != "" {
			fmt.Fprintf(&b, "    server:  %s\r\n", o.host)
		}
		fmt.Fprintf(&b, "    reply:   %s\r\n", wrapLine(o.reply))
		if o.expired {
			fmt.Fprintf(&b, "    result:  %s\r\n", wrapLine("gave up after "+span(r.cfg.MaxAge)+" of retries; the reply above is the last one"))
		}
		fmt.Fprintf(&b, "    kind:    %s\r\n", category)
		if meaning != "" {
			fmt.Fprintf(&b, "    meaning: %s\r\n", wrapLine(meaning))
		}
		if todo != "" {
			fmt.Fprintf(&b, "    to do:   %s\r\n", wrapLine(todo))
		}
		b.WriteString("\r\n")
	}

	// 2. For machines (RFC 3464 2.2, 2.3).
	fmt.Fprintf(&b, "--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\nX-Sluice-Queue-ID: %s\r\nArrival-Date: %s\r\n", host, env.ID, env.Received.UTC().Format(time.RFC1123Z))
	for _, o := range outs {
		fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", o.rcpt, action, statusOf(o, delayed))
		if o.host != "" && !o.suppressed {
			fmt.Fprintf(&b, "Remote-MTA: dns; %s\r\n", o.host)
		}
		if o.code > 0 {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %s\r\n", oneLine(o.reply))
		}
		fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", now.Format(time.RFC1123Z))
		if delayed {
			fmt.Fprintf(&b, "Will-Retry-Until: %s\r\n", env.Received.Add(r.cfg.MaxAge).UTC().Format(time.RFC1123Z))
		}
	}
	b.WriteString("\r\n")

	// 3. The original header.
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
	hdrEnd := bytes.Index(msg, []byte("\r\n\r\n"))
	if hdrEnd < 0 {
		hdrEnd = len(msg)
	} else {
		hdrEnd += 2
	}
	b.Write(msg[:hdrEnd])
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)

	dsn := &spool.Envelope{ID: spool.NewID(), From: "", To: []string{env.From}, Received: now, Login: "MAILER-DAEMON"}
	if err := r.spool.Enqueue(dsn, b.Bytes()); err != nil {
		return err
	}
	r.log.Info("dsn queued", "id", dsn.ID, "for", env.ID, "to", env.From, "kind", action, "recipients", len(outs))
	return nil
}

// statusOf is the RFC 3463 status of an outcome: the remote enhanced code
// when given, else derived from the reply code.
func statusOf(o outcome, delayed bool) string {
	if o.expired {
		return "4.4.7" // delivery time expired (RFC 3463 3.5)
	}
	if c := enhancedCode(o.reply); c != "" && c[0] != '2' {
		if !delayed {
			return "5" + c[1:]
		}
		return c
	}
	switch {
	case delayed:
		return "4.4.1"
	case o.code >= 500:
		return "5.0.0"
	}
	return "4.0.0"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// wrapLine wraps the value of a "    name:    " line of the DSN text.
func wrapLine(s string) string { return wrap(s, 64, "             ") }

// wrap breaks s into lines of at most width bytes (longer words stay
// whole), the second and later ones starting with indent.
func wrap(s string, width int, indent string) string {
	var out strings.Builder
	n := 0
	for _, w := range strings.Fields(s) {
		if n > 0 && n+len(w) > width {
			out.WriteString("\r\n" + indent)
			n = 0
		} else if n > 0 {
			out.WriteByte(' ')
			n++
		}
		out.WriteString(w)
		n += len(w)
	}
	return out.String()
}

// span says a duration as people do ("5 days", "4 hours", "90 minutes");
// one that is not a whole number of minutes as Go writes it ("300ms").
func span(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}} {
		if d >= u.d && d%u.d == 0 {
			if n := d / u.d; n != 1 {
				return fmt.Sprintf("%d %ss", n, u.name)
			}
			return "1 " + u.name
		}
	}
	return d.String()
}

func randomToken() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
