package submit

import (
	"bytes"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// wireConn is the connection go-smtp serves: always inside TLS, which
// Sluice sets up itself (implicit TLS, or its own plaintext loop up to
// STARTTLS), so go-smtp never sees a *tls.Conn and never offers STARTTLS.
//
// Read side: go-smtp's DATA reader (v0.25.1, data.go) drops ".\r" when a
// line starts with ".\r" followed by anything but "\n", and treats "\r\r\n"
// as no line end; a message could then hide a second one ("\r\n.\rMAIL
// ...") or make go-smtp miss the client's end of data. So the bytes go-smtp
// reads are first scanned here:
//
//   - Outside DATA content they are handed out one line at a time, so
//     go-smtp's buffered reader never holds more than the line it parses.
//     When it writes "354", nothing of the content has been read ahead,
//     and the scanner knows the next byte starts the content.
//   - Inside DATA content every bare CR (a CR not followed by LF) is handed
//     out as LF, and noted; one that follows a "." at the start of a line
//     is noted as the smuggling pattern. With no bare CR left, go-smtp's
//     end of data is the RFC 5321 one, the first CRLF.CRLF; the scanner
//     runs the same state machine and stops handing out content at that
//     end, so bytes pipelined after it (the next transaction) are never
//     counted against this message. The session refuses a message with a
//     note, and the LF left in its place would refuse it anyway (bare LF).
//
// BDAT chunks are not DATA content: they reach the session unchanged and
// its line-ending check sees any bare CR.
//
// Write side: each reply line go-smtp writes is matched against its own
// reply texts (replyTable) and replaced by Sluice's; bad-command replies
// (500-504) are counted against Limits.MaxCommandErrors; go-smtp's greeting
// is dropped after STARTTLS, where the client speaks first. Replies are
// held until go-smtp next waits for input that has not arrived (RFC 2920:
// the replies to a group of pipelined commands go out together, in one TLS
// record and one write), until the connection closes, or until they pass
// maxHeldReplies; a client that waits for each reply gets it at once,
// since go-smtp reads right after it answers.
type wireConn struct {
	net.Conn // the TLS connection
	tc       *tls.Conn
	srv      *Server

	// Read side: only go-smtp's connection goroutine reads.
	pending  []byte // read from TLS, not yet scanned or handed out
	spare    []byte // pending's buffer, kept for the next pipelined group
	rerr     error  // error of a read whose bytes are still pending
	inData   bool
	st       dotState
	dataNext atomic.Bool // the 354 reply went out: DATA content is next

	fmu      sync.Mutex
	smuggled bool // "\r\n.\r" + not "\n" in this DATA content
	bareCR   bool // any bare CR in this DATA content

	// Write side: go-smtp's goroutine, and the session's from a BDAT
	// transfer, which runs in its own goroutine.
	wmu      sync.Mutex
	partial  []byte // start of a reply line not yet complete
	greeting bool   // drop the next 220 line (go-smtp's greeting)
	errs     int    // bad commands so far, plaintext part included
	closing  bool   // a final reply went out; nothing more is written
	held     []byte // replies written by go-smtp, not yet sent
	werr     error  // the error of the write that sent held replies
}

// maxHeldReplies is how many bytes of replies wait for the client's next
// pipelined command before they are sent anyway.
const maxHeldReplies = 8 << 10

func newWireConn(tc *tls.Conn, srv *Server, errs int, afterSTARTTLS bool) *wireConn {
	return &wireConn{Conn: tc, tc: tc, srv: srv, errs: errs, greeting: afterSTARTTLS}
}

// tlsState is the connection's TLS state (version and cipher for the
// Received field).
func (w *wireConn) tlsState() tls.ConnectionState { return w.tc.ConnectionState() }

// dotState follows DATA content the way go-smtp's reader does.
type dotState uint8

const (
	stBOL   dotState = iota // at the start of a line (and of the content)
	stDot                   // "." at the start of a line
	stDotCR                 // ".\r" at the start of a line
	stCR                    // "\r" elsewhere
	stMid                   // inside a line
	stEnd                   // ".\r\n" at the start of a line: end of data
)

func (s dotState) next(c byte) dotState {
	switch s {
	case stBOL:
		switch c {
		case '.':
			return stDot
		case '\r':
			return stCR
		}
	case stDot:
		if c == '\r' {
			return stDotCR
		}
	case stDotCR:
		if c == '\n' {
			return stEnd
		}
	case stCR:
		if c == '\n' {
			return stBOL
		}
	case stMid:
		if c == '\r' {
			return stCR
		}
	}
	return stMid
}

// Read implements net.Conn for go-smtp.
func (w *wireConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if w.dataNext.Swap(false) {
		w.inData, w.st = true, stBOL
		w.fmu.Lock()
		w.smuggled, w.bareCR = false, false
		w.fmu.Unlock()
	}
	for {
		if len(w.pending) > 0 {
			if k := w.scan(w.pending, len(p), w.rerr != nil); k > 0 {
				n := copy(p, w.pending[:k])
				if w.pending = w.pending[k:]; len(w.pending) == 0 {
					w.pending = nil
				}
				return n, nil
			}
			// A CR is the last byte: what follows it decides.
			if err := w.flush(); err != nil {
				return 0, err
			}
			n, err := w.Conn.Read(p)
			w.pending = append(w.pending, p[:n]...)
			if err != nil {
				w.rerr = err
			}
			continue
		}
		if w.rerr != nil {
			err := w.rerr
			w.rerr = nil
			return 0, err
		}
		if err := w.flush(); err != nil {
			return 0, err
		}
		n, err := w.Conn.Read(p)
		if n == 0 {
			return 0, err
		}
		if err != nil {
			w.rerr = err
		}
		k := w.scan(p[:n], n, err != nil)
		if k < n {
			w.spare = append(w.spare[:0], p[k:n]...)
			w.pending = w.spare
		}
		if k > 0 {
			return k, nil
		}
	}
}

// scan looks at up to lim bytes of b (it may peek at b[lim]) and returns
// how many to hand out now: outside DATA content up to the first line end;
// inside it up to the end of data, rewriting bare CRs. It returns 0 when b
// starts with a CR whose next byte has not arrived (final: none will).
func (w *wireConn) scan(b []byte, lim int, final bool) int {
	lim = min(lim, len(b))
	if !w.inData {
		if i := bytes.IndexByte(b[:lim], '\n'); i >= 0 {
			return i + 1
		}
		return lim
	}
	for i := 0; i < lim; i++ {
		if w.st == stMid {
			// Inside a line only a CR changes the state: skip to it.
			j := bytes.IndexByte(b[i:lim], '\r')
			if j < 0 {
				return lim
			}
			i += j
		}
		c := b[i]
		if c == '\r' {
			if i+1 == len(b) && !final {
				return i
			}
			if i+1 == len(b) || b[i+1] != '\n' {
				w.fmu.Lock()
				w.bareCR = true
				w.smuggled = w.smuggled || w.st == stDot
				w.fmu.Unlock()
				b[i], c = '\n', '\n'
			}
		}
		if w.st = w.st.next(c); w.st == stEnd {
			w.inData = false
			return i + 1
		}
	}
	return lim
}

// dataFlags reports what the scanner saw in the DATA content read last.
func (w *wireConn) dataFlags() (smuggled, bareCR bool) {
	w.fmu.Lock()
	defer w.fmu.Unlock()
	return w.smuggled, w.bareCR
}

// Write implements net.Conn for go-smtp: whole reply lines, translated.
func (w *wireConn) Write(p []byte) (int, error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.closing {
		return 0, net.ErrClosed
	}
	if w.werr != nil {
		return 0, w.werr
	}
	data := p
	if len(w.partial) > 0 {
		data = append(w.partial, p...)
		w.partial = nil
	}
	var out []byte // nil while nothing changed: data goes out as it is
	done := 0
	for done < len(data) && !w.closing {
		i := bytes.IndexByte(data[done:], '\n')
		if i < 0 {
			w.partial = append([]byte(nil), data[done:]...)
			break
		}
		line := data[done : done+i+1]
		if rep, changed := w.translate(line); changed {
			if out == nil {
				out = append(make([]byte, 0, len(data)+128), data[:done]...)
			}
			out = append(out, rep...)
		} else if out != nil {
			out = append(out, line...)
		}
		done += i + 1
	}
	if out == nil {
		out = data[:done]
	}
	w.held = append(w.held, out...)
	var err error
	if w.closing || len(w.held) >= maxHeldReplies {
		err = w.flushLocked()
	}
	if w.closing {
		w.Conn.Close()
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush sends the held replies: go-smtp is about to wait for the client.
func (w *wireConn) flush() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.flushLocked()
}

func (w *wireConn) flushLocked() error {
	if w.werr != nil || len(w.held) == 0 {
		return w.werr
	}
	_, w.werr = w.Conn.Write(w.held)
	w.held = w.held[:0]
	return w.werr
}

// Close sends the held replies (a 421 before go-smtp closes, say), then
// closes. A flush already in progress (a client that does not read) is not
// waited for.
func (w *wireConn) Close() error {
	if w.wmu.TryLock() {
		if len(w.held) > 0 && w.werr == nil {
			w.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			w.flushLocked()
		}
		w.wmu.Unlock()
	}
	return w.Conn.Close()
}

// translate returns what to send for one reply line, and whether it
// differs from the line.
func (w *wireConn) translate(line []byte) ([]byte, bool) {
	body := bytes.TrimRight(line, "\r\n")
	if w.greeting {
		w.greeting = false
		if bytes.HasPrefix(body, []byte("220 ")) {
			return nil, true
		}
	}
	if len(body) < 4 || body[3] != ' ' {
		return line, false // a continuation line (EHLO) or not a reply
	}
	code := int(body[0]-'0')*100 + int(body[1]-'0')*10 + int(body[2]-'0')
	out, changed := line, false
	if r, ok := w.srv.replies.lookup(body); ok {
		out, changed, code = []byte(formatReply(r.rep)), true, r.rep.Code
		w.closing = r.close
	}
	if code == 354 {
		w.dataNext.Store(true)
	}
	if code >= 500 && code <= 504 && !w.closing {
		w.errs++
		if w.errs >= w.srv.maxCommandErrors() {
			out = append(append([]byte(nil), out...), formatReply(errTooManyErrors)...)
			changed, w.closing = true, true
		}
	}
	return out, changed
}

// closeWith sends a last reply and closes the connection; later writes
// (go-smtp answering the same command) are dropped.
func (w *wireConn) closeWith(e *smtp.SMTPError) {
	w.wmu.Lock()
	if !w.closing {
		w.closing = true
		w.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		w.held = append(w.held, formatReply(e)...)
		w.flushLocked()
	}
	w.wmu.Unlock()
	w.Conn.Close()
}
