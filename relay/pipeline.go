package relay

import (
	"bufio"
	"errors"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sluice/relay/resolver"
	"sluice/relay/spool"
)

// pipelinedTransaction is transaction for a server that offers PIPELINING
// (RFC 2920): MAIL, every RCPT and DATA go out in one write and their
// replies are read in order, then the message and its final dot in one
// more; two round trips a message instead of three plus one per
// recipient. go-smtp's client sends one command at a time, so this writes
// and reads the session's connection itself, between go-smtp's commands
// (EHLO before it, RSET and QUIT after), which it leaves with nothing
// unread: a server that sent more than the replies asked for has its
// session closed rather than reused.
func (r *Relay) pipelinedTransaction(c *conn, t target, env *spool.Envelope, rcpts []string, msg []byte,
	opts *smtp.MailOptions) (res []outcome, reusable, stale bool) {
	res = make([]outcome, len(rcpts))
	setAll := func(code int, reply string) { setUnrefused(res, rcpts, code, reply, t.host) }
	lost := func(err error) string { return "connection lost while sending the message: " + resolver.Cause(err) }
	if strings.ContainsAny(env.From, "\r\n") {
		setAll(553, "553 5.1.7 the sender address holds a line break")
		return res, true, false
	}
	for _, rc := range rcpts {
		if strings.ContainsAny(rc, "\r\n") {
			setAll(553, "553 5.1.3 a recipient address holds a line break")
			return res, true, false
		}
	}
	if c.rd == nil {
		c.rd = textproto.NewReader(bufio.NewReaderSize(c.raw, 4096))
		c.bw = bufio.NewWriterSize(c.raw, 16<<10)
	}
	defer c.raw.SetDeadline(time.Time{})

	c.raw.SetDeadline(time.Now().Add(r.cfg.CommandTimeout))
	c.writeMail(env.From, opts)
	for _, rc := range rcpts {
		c.bw.WriteString("RCPT TO:<")
		c.bw.WriteString(rc)
		c.bw.WriteString(">\r\n")
	}
	c.bw.WriteString("DATA\r\n")
	if err := c.bw.Flush(); err != nil {
		setAll(0, lost(err))
		return res, false, true // nothing reached the server: a closed idle session
	}

	// next reads the reply to MAIL or to a RCPT; ok is false when there
	// was none or a 421, which ends the session for every recipient.
	next := func(expect int) (code int, reply string, ok bool) {
		code, reply, err := c.reply(expect)
		if err != nil {
			code, reply = 0, lost(err)
		}
		if err != nil || code == 421 {
			setAll(code, reply)
			return code, reply, false
		}
		return code, reply, true
	}
	mailCode, mailReply, ok := next(250)
	if !ok {
		return res, false, true // the session was over before MAIL
	}
	accepted := 0
	for i, rc := range rcpts {
		code, reply, ok := next(25)
		switch {
		case !ok:
			return res, false, false
		case code/10 != 25:
			res[i] = outcome{rcpt: rc, code: code, reply: reply, host: t.host}
		default:
			res[i] = outcome{rcpt: rc, code: 250, host: t.host}
			accepted++
		}
	}
	dataCode, dataReply, err := c.reply(354)
	if err != nil {
		setAll(0, lost(err))
		return res, false, false
	}
	if mailCode != 250 || accepted == 0 {
		if mailCode != 250 {
			// The RCPT replies (503: no MAIL) say nothing of the recipients.
			for i, rc := range rcpts {
				res[i] = outcome{rcpt: rc, code: mailCode, reply: mailReply, host: t.host}
			}
		}
		if dataCode == 354 {
			// A server that takes DATA with no sender or recipient
			// accepted (RFC 2920 says it must refuse it): end it empty.
			c.bw.WriteString(".\r\n")
			if c.bw.Flush() != nil {
				return res, false, false
			}
			if code, _, err := c.reply(250); err != nil || code == 421 {
				return res, false, false
			}
		}
		return res, dataCode != 421 && c.clean() && resetOK(c), false
	}
	if dataCode != 354 {
		setAll(dataCode, dataReply)
		return res, dataCode != 421 && c.clean() && resetOK(c), false
	}

	c.raw.SetDeadline(time.Now().Add(r.cfg.CommandTimeout))
	if err := writeDotted(c.bw, msg); err != nil { // the final dot, and the flush
		setAll(0, lost(err))
		return res, false, false
	}
	c.raw.SetDeadline(time.Now().Add(r.cfg.CommandTimeout + 2*time.Minute))
	code, reply, err := c.reply(250)
	if err != nil {
		setAll(0, lost(err))
		return res, false, false
	}
	if code != 250 {
		setAll(code, reply)
		return res, code != 421 && c.clean() && resetOK(c), false
	}
	for i := range res {
		if res[i].code == 250 {
			res[i].reply = reply
		}
	}
	return res, c.clean(), false
}

// writeMail buffers the MAIL command go-smtp's Client.Mail would send
// for opts (the SIZE and SMTPUTF8 that transaction sets).
func (c *conn) writeMail(from string, opts *smtp.MailOptions) {
	c.bw.WriteString("MAIL FROM:<")
	c.bw.WriteString(from)
	c.bw.WriteString(">")
	if ok, _ := c.Extension("8BITMIME"); ok {
		c.bw.WriteString(" BODY=8BITMIME")
	}
	if ok, _ := c.Extension("SIZE"); ok && opts.Size != 0 {
		c.bw.WriteString(" SIZE=")
		c.bw.WriteString(strconv.FormatInt(opts.Size, 10))
	}
	if opts.UTF8 {
		c.bw.WriteString(" SMTPUTF8")
	}
	c.bw.WriteString("\r\n")
}

// reply reads one reply: its code and the line the relay keeps ("550
// 5.1.1 text", lines joined by spaces), as replyOf gives for go-smtp's
// errors. err is set only when no reply could be read.
func (c *conn) reply(expect int) (int, string, error) {
	code, text, err := c.rd.ReadResponse(expect)
	var te *textproto.Error
	if errors.As(err, &te) {
		code, reply := replyOf(smtpError(te))
		return code, reply, nil
	}
	if err != nil {
		return 0, "", err
	}
	return code, strconv.Itoa(code) + " " + strings.ReplaceAll(text, "\n", " "), nil
}

// clean reports that nothing the server sent is left unread.
func (c *conn) clean() bool { return c.rd.R.Buffered() == 0 }

// smtpError is the *smtp.SMTPError go-smtp makes of a reply: the enhanced
// code taken off the front of the text (and of each of its lines).
func smtpError(te *textproto.Error) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	first, rest, ok := strings.Cut(te.Msg, " ")
	if !ok {
		return se
	}
	var enh smtp.EnhancedCode
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return se
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return se
		}
		enh[i] = n
	}
	se.EnhancedCode = enh
	se.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return se
}
