package submit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// plaintext runs the part of a submission-port session before TLS (RFC
// 6409, RFC 3207): the greeting, EHLO or HELO, NOOP, RSET, QUIT and
// STARTTLS. AUTH is refused with 538 5.7.11, the mail commands with 530
// 5.7.0 saying how to turn TLS on; anything else is a bad command. After
// STARTTLS it discards whatever the client pipelined in plaintext behind
// it (the CVE-2011-0411 class: it must not be read as if it came inside
// TLS), runs the handshake (TLS 1.2 or newer) and returns the connection
// for go-smtp, whose own greeting is then dropped since the client speaks
// first. It returns nil when the session ended before TLS; c is closed
// then.
func (srv *Server) plaintext(c *liveConn, ip string) *wireConn {
	br := bufio.NewReaderSize(c, maxCommandLine+2)
	errs := 0
	send := func(s string) bool {
		c.SetWriteDeadline(time.Now().Add(time.Minute))
		_, err := io.WriteString(c, s)
		return err == nil
	}
	end := func(e *smtp.SMTPError) *wireConn {
		if e != nil {
			send(formatReply(e))
		}
		c.Close()
		return nil
	}
	if !send(formatReply(greetingReply(srv.Hostname))) {
		return end(nil)
	}
	for {
		if d := srv.Limits.IdleTimeout; d > 0 {
			c.SetReadDeadline(time.Now().Add(d))
		}
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			srv.Logger.Info("plaintext session closed: command line too long", "ip", ip)
			return end(errCommandLine)
		case err != nil:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return end(errIdle(srv.Limits.IdleTimeout))
			}
			return end(nil)
		}
		verb, arg := splitCommand(line)
		var rep *smtp.SMTPError
		bad := false
		switch verb {
		case "EHLO", "HELO":
			if arg == "" {
				rep, bad = errHeloArg, true
				break
			}
			if !send(srv.helloReply(verb, arg)) {
				return end(nil)
			}
			continue
		case "STARTTLS":
			if arg != "" {
				rep, bad = errNoArgsSTARTTLS, true
				break
			}
			if srv.tlsConf == nil {
				rep = errTLSUnavailable
				break
			}
			if !send(formatReply(reply(220, ecOK, "ready to start TLS"))) {
				return end(nil)
			}
			if n := br.Buffered(); n > 0 {
				srv.Logger.Warn("plaintext sent after STARTTLS discarded", "ip", ip, "bytes", n)
			}
			tc := srv.handshake(c, ip, "submission")
			if tc == nil {
				return nil
			}
			return newWireConn(tc, srv, errs, true)
		case "NOOP", "RSET":
			rep = reply(250, ecOK, "OK")
		case "QUIT":
			return end(reply(221, ecOK, "bye"))
		case "AUTH":
			rep = errAuthNeedsTLS
		case "MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "HELP", "ETRN", "TURN", "ATRN", "BURL", "SEND", "SOML", "SAML":
			rep = errTLSRequired
		default:
			rep, bad = errUnknownCommand, true
		}
		if !send(formatReply(rep)) {
			return end(nil)
		}
		if bad {
			if errs++; errs >= srv.maxCommandErrors() {
				srv.Logger.Info("plaintext session closed: too many bad commands", "ip", ip, "count", errs)
				return end(errTooManyErrors)
			}
		}
	}
}

// splitCommand returns the upper-cased verb and the trimmed argument.
func splitCommand(line []byte) (verb, arg string) {
	line = bytes.TrimRight(line, "\r\n")
	v, a, _ := bytes.Cut(line, []byte{' '})
	return strings.ToUpper(string(v)), strings.TrimSpace(string(a))
}

// helloReply answers EHLO (extensions for the plaintext part: never AUTH)
// or HELO. RFC 2034 puts no enhanced code on these replies.
func (srv *Server) helloReply(verb, arg string) string {
	name := sanitizeToken(strings.Fields(arg)[0])
	first := fmt.Sprintf("%s Hello %s", srv.Hostname, name)
	if verb == "HELO" {
		return "250 " + first + "\r\n"
	}
	ext := []string{first, "PIPELINING"}
	if n := srv.Limits.MaxMessageSize; n > 0 {
		ext = append(ext, fmt.Sprintf("SIZE %d", n))
	}
	ext = append(ext, "ENHANCEDSTATUSCODES")
	if srv.tlsConf != nil {
		ext = append(ext, "STARTTLS")
	}
	var b strings.Builder
	for i, e := range ext {
		sep := "-"
		if i == len(ext)-1 {
			sep = " "
		}
		b.WriteString("250" + sep + e + "\r\n")
	}
	return b.String()
}
