package submit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/emersion/go-smtp"

	"sluice/relay/spool"
)

// Data implements smtp.Session: bounded read, hygiene, sender rules, trace
// headers, then the spool. The reply is 250 only after the spool synced.
//
// After DATA, go-smtp calls it in its connection goroutine; after the first
// BDAT chunk, in a goroutine of its own, while the connection goroutine
// feeds it the chunks through a pipe and may reset the session (RSET, an
// oversize chunk): until the last chunk is in, it uses only what it copied
// at its start.
func (s *session) Data(r io.Reader) error {
	start := time.Now()
	if s.login == nil {
		return errAuthRequired
	}
	_, bdat := r.(*io.PipeReader)
	id := spool.NewID()
	from, nrcpt := s.from, len(s.rcpts)
	msg, err := s.readData(r, bdat)
	if errors.Is(err, smtp.ErrDataReset) {
		// RSET or a refused chunk during BDAT: go-smtp has answered.
		s.srv.Logger.Info("message", "id", id, "login", s.login.Name, "sender", from, "recipients", nrcpt,
			"size", len(msg), "verdict", "aborted", "stage", "data", "reason", "BDAT transfer reset", "ip", s.ip)
		s.srv.Observer.Message("aborted", "data")
		return err
	}
	if err != nil {
		return s.refuse(id, len(msg), err, "data")
	}
	if !bdat && s.wire != nil {
		// What go-smtp's DATA reader hides (see wireConn): refused before
		// anything looks at the content.
		if smuggled, bareCR := s.wire.dataFlags(); smuggled {
			return s.refuse(id, len(msg), errSmuggledDot, "hygiene")
		} else if bareCR {
			return s.refuse(id, len(msg), errBareLineEnding, "hygiene")
		}
	}
	if err := checkLineEndings(msg); err != nil {
		return s.refuse(id, len(msg), err, "hygiene")
	}
	hs, _, err := splitHeader(msg)
	if err != nil {
		return s.refuse(id, len(msg), err, "header")
	}
	fromDomain, err := checkHeaderSenders(hs, s.login)
	if err != nil {
		return s.refuse(id, len(msg), err, "header-sender")
	}

	// The DNS pre-check (cached answers) before the content screen: mail it
	// refuses never reaches the screen's counters (repeats, volume, first-
	// time recipients) nor an external scanner.
	if s.srv.Precheck != nil {
		if err := s.srv.Precheck.CheckSender(context.Background(), fromDomain, s.from); err != nil {
			return s.refuse(id, len(msg), err, "precheck")
		}
	}
	hold := ""
	var screenHeaders []byte
	// charged: the quota holds this message's charge; queued: it is in
	// the spool. A charge for a message not queued is given back, however
	// the message was refused after it.
	charged, queued := false, false
	ctx := context.Background()
	defer func() {
		if charged && !queued {
			s.srv.Quota.Refund(ctx, s.login.Name, s.login.Quota, id, len(s.rcpts))
		}
	}()
	if s.srv.Screen != nil {
		if sc, ok := s.srv.Screen.(ScreenCommitter); ok && s.srv.Quota != nil {
			hold, screenHeaders, charged, err = sc.ScreenAndCommit(ctx, s.login.Name, s.srv.Hostname, s.from, s.rcpts, msg, s.utf8,
				s.login.Quota, s.txn, id)
		} else {
			hold, screenHeaders, err = s.srv.Screen.ScreenMessageHeaders(ctx, s.login.Name, s.srv.Hostname, s.from, s.rcpts, msg, s.utf8)
		}
		if charged {
			s.reserved = false // the reservation became the charge
		}
		if err != nil {
			return s.refuse(id, len(msg), err, "screen")
		}
	}

	var prefix bytes.Buffer
	prefix.Grow(512)
	traceHeaders(&prefix, hs, traceInfo{
		helo: s.helo, ip: s.ip, hostname: s.srv.Hostname, id: id,
		login: s.login.Name, tlsInfo: s.tlsInfo(), now: time.Now(),
	})
	prefix.Write(screenHeaders)
	// Sign what will be delivered, byte for byte: the trace headers and the
	// client's message. Every retry later sends these same bytes.
	var sigs []byte
	signing := "unsigned"
	if s.srv.Signer != nil {
		sigs, signing, err = s.srv.Signer.Sign(fromDomain, prefix.Bytes(), msg)
		if err != nil {
			return s.refuse(id, len(msg), err, "dkim")
		}
	}
	if q := s.srv.Quota; q != nil && !charged {
		if err := q.Commit(ctx, s.login.Name, s.login.Quota, s.txn, id, len(s.rcpts)); err != nil {
			return s.refuse(id, len(msg), err, "quota")
		}
		charged, s.reserved = true, false
	}
	env := &spool.Envelope{
		ID: id, Login: s.login.Name, From: s.from, To: append([]string(nil), s.rcpts...),
		ClientIP: s.ip, Received: time.Now().UTC(), Hold: hold,
	}
	if err := s.srv.Spool.Enqueue(env, sigs, prefix.Bytes(), msg); err != nil {
		s.srv.Logger.Error("spool write failed", "id", id, "login", s.login.Name, "err", err)
		if errors.Is(err, spool.ErrNoSpace) {
			return s.refuse(id, len(msg), errSpoolFull, "spool")
		}
		return s.refuse(id, len(msg), errTempFailure, "spool")
	}
	queued = true
	verdict, reason := "queued", "accepted"
	if hold != "" {
		verdict, reason = "held", hold
	}
	s.srv.Observer.Message(verdict, "accepted")
	if hold != "" {
		s.srv.Observer.Held(id, s.login.Name, hold)
	}
	s.srv.Logger.Info("message", "id", id, "login", s.login.Name, "sender", s.from,
		"recipients", len(s.rcpts), "size", env.Size, "verdict", verdict, "reason", reason, "dkim", signing,
		"ip", s.ip, "ms", time.Since(start).Milliseconds())
	return errQueued(id)
}

// readData reads the message within the size limit and, for DATA, the
// data timeout (between BDAT chunks go-smtp's idle timeout applies).
func (s *session) readData(r io.Reader, bdat bool) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, 8192))
	var src io.Reader = r
	if !bdat {
		src = &deadlineReader{r: r, conn: s.conn.Conn(), idle: s.srv.Limits.DataTimeout}
	}
	_, err := buf.ReadFrom(src)
	switch {
	case err == nil:
		return buf.Bytes(), nil
	case errors.Is(err, smtp.ErrDataReset):
		return buf.Bytes(), err
	case errors.Is(err, smtp.ErrDataTooLarge):
		return nil, errTooBigMessage(s.srv.Limits.MaxMessageSize)
	case errors.Is(err, smtp.ErrTooLongLine):
		return nil, s.closeWith(errDataLineTooLong)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, s.closeWith(errDataTimeout)
	}
	return nil, s.closeWith(errDataBroken)
}

// deadlineReader extends the read deadline before each read, so a slow but
// moving upload continues and a stalled one ends after idle.
type deadlineReader struct {
	r    io.Reader
	conn net.Conn
	idle time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.idle > 0 {
		d.conn.SetReadDeadline(time.Now().Add(d.idle))
	}
	return d.r.Read(p)
}

// ruleNamer is a refusal that says which content rule made it
// (screen.Verdict).
type ruleNamer interface {
	RuleName() string
}

// refuse logs a refused message and returns the reply for it.
func (s *session) refuse(id string, size int, err error, stage string) error {
	rep := toReply(err)
	se, _ := rep.(*smtp.SMTPError)
	code := 0
	msg := ""
	if se != nil {
		code, msg = se.Code, se.Message
	}
	var sr smtpReplier
	if rep != err && !errors.As(err, &sr) {
		s.srv.Logger.Error("internal error", "id", id, "stage", stage, "err", err)
	}
	attrs := []any{"id", id, "login", s.login.Name, "sender", s.from, "recipients", len(s.rcpts), "size", size,
		"verdict", "refused", "code", code, "stage", stage}
	var rn ruleNamer
	if errors.As(err, &rn) && rn.RuleName() != "" {
		attrs = append(attrs, "rule", rn.RuleName())
	}
	s.srv.Logger.Info("message", append(attrs, "reason", msg, "ip", s.ip)...)
	s.srv.Observer.Message("refused", stage)
	return rep
}

// closeWith writes a final reply and closes the connection: the reply goes
// out directly because go-smtp would otherwise keep the session open.
func (s *session) closeWith(e *smtp.SMTPError) error {
	s.wire.closeWith(e)
	s.conn.Close()
	return e
}

// tlsInfo is the TLS version and cipher, for the Received field.
func (s *session) tlsInfo() string {
	st := s.wire.tlsState()
	return tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
}
