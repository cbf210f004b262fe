package submit

import (
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
	ecOtherMailbox   = smtp.EnhancedCode{5, 1, 0}
	ecBadDestSyntax  = smtp.EnhancedCode{5, 1, 3}
	ecBadSenderSyn   = smtp.EnhancedCode{5, 1, 7}
	ecTooManyRcpt    = smtp.EnhancedCode{4, 5, 3}
	ecTooBig         = smtp.EnhancedCode{5, 3, 4}
	ecSysTemp        = smtp.EnhancedCode{4, 3, 0}
	ecSysFull        = smtp.EnhancedCode{4, 3, 1}
	ecTimeout        = smtp.EnhancedCode{4, 4, 2}
	ecMediaBad       = smtp.EnhancedCode{5, 6, 0}
	ecPolicy         = smtp.EnhancedCode{5, 7, 1}
	ecAuthRequired   = smtp.EnhancedCode{5, 7, 0}
	ecTempPolicy     = smtp.EnhancedCode{4, 7, 0}
	ecAuthBad        = smtp.EnhancedCode{5, 7, 8}
	ecBusy           = smtp.EnhancedCode{4, 7, 0}
	ecAuthTooWeak    = smtp.EnhancedCode{5, 7, 9}
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
	errAuthMalformed = reply(501, smtp.EnhancedCode{5, 5, 2},
		"malformed AUTH exchange; let your mail client use AUTH PLAIN or LOGIN")
	errAuthMechanism = reply(504, smtp.EnhancedCode{5, 5, 4},
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
	errTooBusy = reply(421, ecBusy,
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
)

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

func errLockedOut(what string, until time.Time) *smtp.SMTPError {
	return reply(421, ecTempPolicy,
		"too many failed logins for %s; try again after %s UTC or reset your password", what, until.UTC().Format("15:04"))
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
