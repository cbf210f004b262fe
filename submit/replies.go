package submit

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// reply builds the one kind of error that reaches a client: a code, an
// enhanced code (RFC 3463) and one sentence that says what to do.
func reply(code int, enhanced smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: fmt.Sprintf(format, args...)}
}

// Enhanced status codes used by the submission service (RFC 3463, RFC 5248).
var (
	ecOK             = smtp.EnhancedCode{2, 0, 0}
	ecBadDestSyntax  = smtp.EnhancedCode{5, 1, 3}
	ecBadSenderSyn   = smtp.EnhancedCode{5, 1, 7}
	ecTooManyRcpt    = smtp.EnhancedCode{4, 5, 3}
	ecTooBig         = smtp.EnhancedCode{5, 3, 4}
	ecSysTemp        = smtp.EnhancedCode{4, 3, 0}
	ecSysFull        = smtp.EnhancedCode{4, 3, 1}
	ecNetwork        = smtp.EnhancedCode{4, 4, 0}
	ecTimeout        = smtp.EnhancedCode{4, 4, 2}
	ecMediaBad       = smtp.EnhancedCode{5, 6, 0}
	ecPolicy         = smtp.EnhancedCode{5, 7, 1}
	ecAuthRequired   = smtp.EnhancedCode{5, 7, 0}
	ecTempPolicy     = smtp.EnhancedCode{4, 7, 0}
	ecAuthBad        = smtp.EnhancedCode{5, 7, 8}
	ecAuthNeedsCrypt = smtp.EnhancedCode{5, 7, 11}
)

// Replies with fixed text.
var (
	errAuthRequired = reply(530, ecAuthRequired,
		"authentication required: log in with your mailbox address and password (AUTH PLAIN or LOGIN over TLS) before sending")
	errAuthFailed = reply(535, ecAuthBad,
		"authentication failed: the username or password is wrong; use your full mailbox address as the username and check the password")
	errAuthzid = reply(535, ecAuthBad,
		"authentication failed: the authorization identity must be empty or equal to the username; clear it in your client's settings")
	errAuthMalformed = reply(501, ecSyntax,
		"malformed AUTH exchange; let your mail client use AUTH PLAIN or LOGIN")
	errAuthMechanism = reply(504, ecBadArgs,
		"unsupported authentication mechanism; use PLAIN or LOGIN")
	errNullSender = reply(550, ecPolicy,
		"the null sender MAIL FROM:<> is reserved for bounces; send from your own mailbox address")
	errSenderSyntax = reply(553, ecBadSenderSyn,
		"the MAIL FROM address is not a valid address; use the form name@example.com")
	errRcptSyntax = reply(553, ecBadDestSyntax,
		"the recipient address is not valid; use the form name@example.com")
	errTempFailure = reply(451, ecSysTemp,
		"temporary failure, try again in a few minutes")
	errSpoolFull = reply(452, ecSysFull,
		"the server is short of disk space for new mail; try again later")
	errDataTimeout = reply(421, ecTimeout,
		"timed out waiting for the message data; check your connection and send again")
	errDataBroken = reply(421, ecNetwork,
		"the connection broke during DATA; send the message again")
	errDataLineTooLong = reply(500, ecSyntax,
		"a line of the message is far longer than 998 characters; let your client encode long lines, then connect again")
	errAuthBackend = reply(454, ecTempPolicy,
		"temporary authentication failure, try again in a few minutes")
	errTooBusy = reply(421, ecTempPolicy,
		"too busy, try again later")
	errBareLineEnding = reply(554, ecMediaBad,
		"the message contains a bare CR or LF line ending (possible SMTP smuggling); send lines ending in CRLF")
	errNUL = reply(554, ecMediaBad,
		"the message contains a NUL byte; remove it or send the content as a base64 attachment")
	errLongLine = reply(554, ecMediaBad,
		"a line of the message is longer than 998 characters (RFC 5322 2.1.1); let your client encode long lines as quoted-printable or base64")
	errNoHeader = reply(554, ecMediaBad,
		"the message has no header section; send a message with From, To, Subject and a blank line before the body")
	errAuthNeedsTLS = reply(538, ecAuthNeedsCrypt,
		"encryption required: start TLS (port 587 with STARTTLS, or port 465) before logging in")
	errSmuggledDot = reply(554, ecMediaBad,
		"the message has a line \".\" followed by a bare CR, the end-of-data trick of SMTP smuggling; send lines ending in CRLF")
	errTLSRequired = reply(530, ecAuthRequired,
		"encryption required: send STARTTLS first (or use SSL/TLS on port 465), then log in and send; turn on STARTTLS in your mail client's outgoing server settings")
	errTLSUnavailable = reply(454, ecTempPolicy,
		"TLS is not available right now; try again in a few minutes")
	errUnknownCommand = reply(500, ecSyntax,
		"unrecognized command; check that your client is set up for SMTP submission (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA)")
	errNoArgsSTARTTLS = reply(501, ecBadArgs,
		"STARTTLS takes no arguments; send STARTTLS alone")
	errHeloArg = reply(501, ecBadArgs,
		"EHLO and HELO need your host name, e.g. EHLO client.example.com")
	errTooManyErrors = reply(421, ecTempPolicy,
		"too many bad commands; check your mail client's SMTP settings (server, port, encryption), then connect again")
	errCommandLine = reply(500, ecSyntax,
		"a command line is longer than 4000 characters; check your mail client's SMTP settings, then connect again")
)

// Enhanced codes of command errors (RFC 3463 5.5.x).
var (
	ecSyntax   = smtp.EnhancedCode{5, 5, 2}
	ecSequence = smtp.EnhancedCode{5, 5, 1}
	ecBadArgs  = smtp.EnhancedCode{5, 5, 4}
)

// maxCommandLine is the longest command line read, before or after TLS.
const maxCommandLine = 4000

func errIdle(d time.Duration) *smtp.SMTPError {
	return reply(421, ecTimeout, "no command for %s; closing the connection, connect again to send", d)
}

func errDeclaredTooBig(limit int64) *smtp.SMTPError {
	return reply(552, ecTooBig, "the declared message size exceeds %s; send large files as a download link instead of an attachment", humanSize(limit))
}

func errLongHeaderLine(field string) *smtp.SMTPError {
	return reply(554, ecMediaBad,
		"header field %s has a line longer than 998 characters (RFC 5322 2.1.1); the plugin or script that builds the message must fold it", field)
}

// goReply is Sluice's reply for one of go-smtp's own reply lines, and
// whether the connection closes after it.
type goReply struct {
	rep   *smtp.SMTPError
	close bool
}

// replyTable translates go-smtp's own reply lines (emersion/go-smtp
// v0.25.1, conn.go and server.go) into Sluice's: the right code for the
// situation and a sentence that says what to do. Each line is matched
// exactly, as go-smtp writes it ("code x.y.z text"); the few with a
// command name in them are matched by their fixed start and end. Lines of
// features Sluice leaves off (DSN, BINARYMIME, REQUIRETLS, LMTP, go-smtp's
// own STARTTLS, its recipient limit) cannot occur and are not listed: a
// parameter of such a feature gets "... is not implemented" first.
type replyTable struct {
	exact map[string]goReply
	fixes []goAffix
}

type goAffix struct {
	prefix, suffix string
	goReply
}

func newReplyTable(hostname string, lim Limits) *replyTable {
	tooBig := goReply{rep: errDeclaredTooBig(lim.MaxMessageSize)}
	badBDAT := goReply{rep: reply(501, ecBadArgs,
		"malformed BDAT command; use BDAT <size> or BDAT <size> LAST (the connection is closed, since the chunk after it cannot be told from commands)"), close: true}
	param := goReply{rep: reply(555, ecBadArgs,
		"a MAIL FROM or RCPT TO parameter is not offered here (no DSN, REQUIRETLS, BINARYMIME, DELIVERBY or MT-PRIORITY); remove it from the command")}
	badParam := goReply{rep: reply(501, ecBadArgs,
		"a MAIL FROM or RCPT TO parameter is malformed; check your mail client's settings or remove the parameter")}
	mailSyntax := goReply{rep: reply(501, ecSyntax, "use the form MAIL FROM:<address>, e.g. MAIL FROM:<you@example.com>")}
	rcptSyntax := goReply{rep: reply(501, ecSyntax, "use the form RCPT TO:<address>, e.g. RCPT TO:<name@example.com>")}
	noRcpt := goReply{rep: reply(554, ecSequence, "no recipient was accepted; send RCPT TO with a valid recipient (see the replies to RCPT) before the message")}
	inTransfer := goReply{rep: reply(503, ecSequence, "a BDAT transfer is in progress; finish it with BDAT <size> LAST or send RSET first")}
	t := &replyTable{exact: map[string]goReply{
		"220 " + hostname + " ESMTP Service Ready":                  {rep: greetingReply(hostname)},
		"500 5.5.2 Error: bad syntax":                               {rep: reply(500, ecSyntax, "empty command line; send an SMTP command such as EHLO")},
		"501 5.5.2 Bad command":                                     {rep: reply(501, ecSyntax, "malformed command line: a command is a word of four letters, then a space and its arguments")},
		"500 5.5.1 This is not a LMTP server":                       {rep: reply(500, ecSequence, "this is an SMTP submission server; send EHLO, not LHLO")},
		"501 5.5.2 Domain/address argument required for HELO":       {rep: errHeloArg},
		"502 5.5.1 Please introduce yourself first.":                {rep: reply(503, ecSequence, "send EHLO with your host name first")},
		"502 5.5.1 MAIL not allowed during message transfer":        inTransfer,
		"502 5.5.1 RCPT not allowed during message transfer":        inTransfer,
		"502 5.5.1 DATA not allowed during message transfer":        inTransfer,
		"501 5.5.2 Was expecting MAIL arg syntax of FROM:<address>": mailSyntax,
		"501 5.5.4 Unable to parse MAIL ESMTP parameters":           badParam,
		"501 5.5.4 Unable to parse SIZE as an integer":              {rep: reply(501, ecBadArgs, "SIZE must be the message size in bytes, e.g. SIZE=12345")},
		"552 5.3.4 Max message size exceeded":                       tooBig,
		"501 5.5.4 Unknown BODY value":                              {rep: reply(501, ecBadArgs, "BODY must be 7BIT or 8BITMIME")},
		"500 5.5.4 Malformed AUTH parameter value":                  badParam,
		"500 5.5.4 Malformed AUTH parameter mailbox":                badParam,
		"500 5.5.4 Unknown MAIL FROM argument":                      param,
		"502 5.5.1 Missing MAIL FROM command.":                      {rep: reply(503, ecSequence, "send MAIL FROM before RCPT TO")},
		"501 5.5.2 Was expecting RCPT arg syntax of TO:<address>":   rcptSyntax,
		"501 5.5.4 Unable to parse RCPT ESMTP parameters":           badParam,
		"500 5.5.4 Unknown RCPT TO argument":                        param,
		"502 5.5.1 Missing RCPT TO command.":                        noRcpt,
		"503 5.5.1 Already authenticated":                           {rep: reply(503, ecSequence, "you are already logged in; go on with MAIL FROM")},
		"502 5.5.4 Missing parameter":                               {rep: reply(501, ecBadArgs, "AUTH needs a mechanism: AUTH PLAIN or AUTH LOGIN")},
		"454 4.7.0 Invalid base64 data":                             {rep: reply(501, ecSyntax, "the AUTH data is not valid base64; let your mail client encode the login")},
		"501 5.0.0 Negotiation cancelled":                           {rep: reply(501, smtp.EnhancedCode{5, 7, 0}, "authentication cancelled by the client; send AUTH again to log in")},
		"502 5.5.1 TLS not supported":                               {rep: reply(503, ecSequence, "TLS is already active on this connection; go on with EHLO and AUTH")},
		"501 5.5.4 DATA command should not have any arguments":      {rep: reply(501, ecBadArgs, "DATA takes no arguments; send DATA alone")},
		"501 5.5.4 Missing chunk size argument":                     badBDAT,
		"501 5.5.4 Too many arguments":                              badBDAT,
		"501 5.5.4 Unknown BDAT argument":                           badBDAT,
		"501 5.5.4 Malformed size argument":                         badBDAT,
		"421 4.0.0 Internal server error":                           {rep: reply(421, ecSysTemp, "internal error; try again in a few minutes"), close: true},
		"500 5.4.0 Too long line, closing connection":               {rep: errCommandLine, close: true},
		"421 4.4.2 Idle timeout, bye bye":                           {rep: errIdle(lim.IdleTimeout), close: true},
		"421 4.4.0 Connection error, sorry":                         {rep: reply(421, ecNetwork, "connection error; connect again and send the message again"), close: true},
		"500 5.5.1 Too many errors. Quiting now":                    {rep: errTooManyErrors, close: true},
	}}
	for _, p := range []string{"SMTPUTF8", "REQUIRETLS", "BINARYMIME", "RET", "ENVID", "NOTIFY", "ORCPT", "RRVS", "DELIVERBY", "MT-PRIORITY"} {
		t.exact["504 5.5.4 "+p+" is not implemented"] = param
	}
	t.fixes = []goAffix{
		{"500 5.5.2 Syntax errors, ", " command unrecognized", goReply{rep: errUnknownCommand}},
		{"502 5.5.1 ", " command not implemented", goReply{rep: reply(502, ecSequence, "command not offered by this server; a mail client needs only EHLO, AUTH, MAIL, RCPT and DATA")}},
		// A non-SMTP error out of Data (a broken BDAT chunk read); no
		// internal text reaches the client.
		{"554 5.0.0 Error: transaction failed: ", "", goReply{rep: errTempFailure}},
	}
	return t
}

// lookup returns Sluice's reply for a final reply line of go-smtp
// (without CRLF), if it is one of go-smtp's own.
func (t *replyTable) lookup(line []byte) (goReply, bool) {
	if r, ok := t.exact[string(line)]; ok {
		return r, true
	}
	for _, f := range t.fixes {
		if bytes.HasPrefix(line, []byte(f.prefix)) && bytes.HasSuffix(line, []byte(f.suffix)) && len(line) >= len(f.prefix)+len(f.suffix) {
			return f.goReply, true
		}
	}
	return goReply{}, false
}

// greetingReply is the 220 a client gets first (RFC 5321 4.2: no enhanced
// code), from Sluice's plaintext loop or, on implicit TLS, for go-smtp's.
func greetingReply(hostname string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 220, EnhancedCode: smtp.NoEnhancedCode, Message: hostname + " ESMTP Sluice ready"}
}

// formatReply is the wire form of a one-line reply.
func formatReply(e *smtp.SMTPError) string {
	if e.EnhancedCode == smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s\r\n", e.Code, e.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

func errTooManyRecipients(limit int) *smtp.SMTPError {
	return reply(452, ecTooManyRcpt, "too many recipients (limit %d); send the rest in another message", limit)
}

func errTooBigMessage(limit int64) *smtp.SMTPError {
	return reply(552, ecTooBig, "message exceeds %s; send large files as a download link instead of an attachment", humanSize(limit))
}

func errSenderNotOwned(sender, login string) *smtp.SMTPError {
	return reply(553, ecPolicy,
		"sender %s is not an address of login %s; send from your own address or ask for it to be added to your login", sender, login)
}

func errDisabled(l *Login, contact string) *smtp.SMTPError {
	if strings.HasPrefix(l.DisabledReason, "suspended") {
		return reply(535, ecAuthBad, "login %s is %s; contact %s to check the account and have it enabled", l.Name, l.DisabledReason, contact)
	}
	return reply(535, ecAuthBad, "login %s is disabled; ask your mail administrator to enable it", l.Name)
}

// errLockedOut names what is locked: the login, or else the client's
// address (then every login from it is refused).
func errLockedOut(l lockout, login, ip string) *smtp.SMTPError {
	at := l.until.UTC().Format("15:04")
	if l.login {
		return reply(421, ecTempPolicy,
			"too many failed logins for %s; try again after %s UTC or reset your password", login, at)
	}
	return reply(421, ecTempPolicy,
		"too many failed logins from your address %s; try again after %s UTC and correct the password saved in the mail clients and devices there", ip, at)
}

func errQueued(id string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 250, EnhancedCode: ecOK, Message: "Ok: queued as " + id}
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// smtpReplier is an error that carries its own reply (screen's verdicts).
type smtpReplier interface {
	error
	SMTPReply() (code int, enhanced [3]int, message string)
}

// toReply is the one translator at the SMTP edge: every error a session
// method returns passes through it. An *smtp.SMTPError built by this package
// goes out as it is; anything else (a disk error, a store error) is logged by
// the caller and becomes a generic temporary failure, so no internal text
// ever reaches a client.
func toReply(err error) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	var sr smtpReplier
	if errors.As(err, &sr) {
		code, enh, msg := sr.SMTPReply()
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: msg}
	}
	return errTempFailure
}
