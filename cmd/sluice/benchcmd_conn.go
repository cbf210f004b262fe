package main

// The SMTP client of sluice bench: one connection (TLS, EHLO, AUTH) and the
// messages it sends, on net/textproto, timing each step.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// benchReply is one SMTP reply.
type benchReply struct {
	code int
	enh  string // "2.0.0" or ""
	text string // the first line after the codes
}

func (r *benchReply) String() string {
	if r.enh != "" {
		return fmt.Sprintf("%d %s %s", r.code, r.enh, r.text)
	}
	return fmt.Sprintf("%d %s", r.code, r.text)
}

// benchFail is a message that was not accepted: a reply (code != 0) or a
// transport error, at a stage: connect, auth, mail, rcpt, data (the DATA
// command), eod (the reply after the message).
type benchFail struct {
	stage string
	rep   *benchReply
	err   error
}

// benchConn is one client connection.
type benchConn struct {
	r      *benchRun
	nc     net.Conn
	tp     *textproto.Reader
	bw     *bufio.Writer
	ext    map[string]string // EHLO keywords (upper case) -> parameters
	cred   benchCred
	worker int
	sent   int
	opened bool // counted in the open connections
	hbuf   bytes.Buffer
}

func (r *benchRun) open(w int) (*benchConn, *benchFail) {
	o := r.o
	c := &benchConn{r: r, worker: w}
	if len(o.creds) > 0 {
		c.cred = o.creds[int((r.connN.Add(1)-1)%int64(len(o.creds)))]
	}
	t0 := time.Now()
	d := net.Dialer{Timeout: o.timeout}
	nc, err := d.Dial("tcp", o.addr)
	if err != nil {
		return nil, &benchFail{stage: "connect", err: err}
	}
	c.setConn(nc)
	fail := func(f *benchFail) (*benchConn, *benchFail) {
		c.close()
		return nil, f
	}
	if o.tlsMode == "implicit" {
		if err := c.handshake(); err != nil {
			return fail(&benchFail{stage: "connect", err: err})
		}
	}
	if rep, err := c.read(); err != nil || rep.code != 220 {
		return fail(&benchFail{stage: "connect", rep: rep, err: err})
	}
	if f := c.ehlo(); f != nil {
		return fail(f)
	}
	if o.tlsMode == "starttls" {
		if _, ok := c.ext["STARTTLS"]; !ok {
			return fail(&benchFail{stage: "connect", err: errors.New("the server does not offer STARTTLS (try --tls implicit or none)")})
		}
		if rep, err := c.cmd("STARTTLS"); err != nil || rep.code != 220 {
			return fail(&benchFail{stage: "connect", rep: rep, err: err})
		}
		if err := c.handshake(); err != nil {
			return fail(&benchFail{stage: "connect", err: err})
		}
		if f := c.ehlo(); f != nil {
			return fail(f)
		}
	}
	r.st.connected(time.Since(t0))
	if o.auth != "none" {
		t1 := time.Now()
		f := c.authenticate()
		if f == nil || f.rep != nil {
			r.st.authenticated(time.Since(t1)) // a refusal is timed too
		}
		if f != nil {
			return fail(f)
		}
	}
	c.opened = true
	r.st.ready()
	return c, nil
}

func (c *benchConn) setConn(nc net.Conn) {
	c.nc = nc
	c.tp = textproto.NewReader(bufio.NewReaderSize(nc, 4096))
	c.bw = bufio.NewWriterSize(nc, 32<<10)
}

func (c *benchConn) handshake() error {
	tc := tls.Client(c.nc, c.r.tlsConf)
	c.nc.SetDeadline(time.Now().Add(c.r.o.timeout))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.setConn(tc)
	return nil
}

func (c *benchConn) ehlo() *benchFail {
	rep, lines, err := c.cmdLines("EHLO " + c.r.o.helo)
	if err != nil || rep.code != 250 {
		return &benchFail{stage: "connect", rep: rep, err: err}
	}
	c.ext = map[string]string{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		k = strings.ToUpper(k)
		if strings.HasPrefix(k, "AUTH=") { // the old form "AUTH=PLAIN LOGIN"
			k, v = "AUTH", l[5:]
		}
		c.ext[k] = strings.ToUpper(v)
	}
	return nil
}

func (c *benchConn) authenticate() *benchFail {
	mech := c.r.o.auth
	if mech == "auto" {
		offered := strings.Fields(c.ext["AUTH"])
		mech = ""
		for _, want := range []string{"PLAIN", "LOGIN"} {
			for _, m := range offered {
				if m == want && mech == "" {
					mech = strings.ToLower(want)
				}
			}
		}
		if mech == "" {
			return &benchFail{stage: "auth", err: fmt.Errorf("the server offers no AUTH PLAIN or LOGIN after EHLO (offered: %q)", c.ext["AUTH"])}
		}
	}
	b64 := base64.StdEncoding.EncodeToString
	var rep *benchReply
	var err error
	switch mech {
	case "plain":
		ir := b64([]byte("\x00" + c.cred.login + "\x00" + c.cred.password))
		rep, err = c.cmd("AUTH PLAIN " + ir)
		if err == nil && rep.code == 334 {
			rep, err = c.cmd(ir)
		}
	case "login":
		rep, err = c.cmd("AUTH LOGIN")
		if err == nil && rep.code == 334 {
			rep, err = c.cmd(b64([]byte(c.cred.login)))
		}
		if err == nil && rep.code == 334 {
			rep, err = c.cmd(b64([]byte(c.cred.password)))
		}
	}
	if err != nil || rep.code != 235 {
		return &benchFail{stage: "auth", rep: rep, err: err}
	}
	return nil
}

// send sends message n and records its outcome. It reports whether the
// connection can carry the next message.
func (c *benchConn) send(n int64) (keep bool) {
	o := c.r.o
	st := c.r.st
	from := c.expand(o.from, n)
	rcpts := make([]string, o.recipients)
	for i := range rcpts {
		rcpts[i] = c.expand(o.to, c.r.rcptN.Add(1))
	}
	c.buildHeader(n, from, rcpts)
	c.hbuf.Write(benchToken(c.r.tokenLen))
	size := c.hbuf.Len() + len(c.r.body)

	// fail records f; the connection stays for the next message unless the
	// server is closing it (421) or it broke.
	fail := func(f *benchFail) bool {
		st.fail(f)
		if f.rep == nil || f.rep.code == 421 {
			return false
		}
		if f.stage != "eod" {
			if rep, err := c.cmd("RSET"); err != nil || rep.code != 250 {
				return false
			}
		}
		return true
	}

	t0 := time.Now()
	mail := "MAIL FROM:<" + from + ">"
	if _, ok := c.ext["SIZE"]; ok {
		mail += " SIZE=" + strconv.Itoa(size)
	}
	f, refused := c.envelope(mail, rcpts)
	if f != nil {
		return fail(f)
	}
	for _, f := range refused {
		st.rcptRefused(f) // the message still goes to the others
	}
	c.nc.SetDeadline(time.Now().Add(o.timeout))
	c.bw.Write(c.hbuf.Bytes())
	c.bw.Write(c.r.body)
	// The end of the message goes out with its last bytes, as mail clients
	// send it; data time runs from that last write.
	c.bw.WriteString(".\r\n")
	t1 := time.Now()
	if err := c.bw.Flush(); err != nil {
		return fail(&benchFail{stage: "data", err: err})
	}
	rep, _, err := c.readLines()
	if err != nil {
		return fail(&benchFail{stage: "eod", err: err})
	}
	now := time.Now()
	st.endOfData(now.Sub(t1))
	if rep.code/100 != 2 {
		return fail(&benchFail{stage: "eod", rep: rep})
	}
	st.accepted(rep, now.Sub(t0))
	return true
}

// envelope sends MAIL, a RCPT per recipient and DATA, and reads their
// replies: with PIPELINING (offered, and not --pipelining off) in one write
// and one read (RFC 2920), as msmtp and Postfix do, else one command at a
// time. It returns the failure that ends the message, if any (the first of
// MAIL, every RCPT, DATA), and the recipients refused in a message that goes
// on to the others.
func (c *benchConn) envelope(mail string, rcpts []string) (*benchFail, []*benchFail) {
	_, offered := c.ext["PIPELINING"]
	pipelined := offered && c.r.o.pipelining
	if pipelined {
		c.nc.SetDeadline(time.Now().Add(c.r.o.timeout))
		c.bw.WriteString(mail + "\r\n")
		for _, rc := range rcpts {
			c.bw.WriteString("RCPT TO:<" + rc + ">\r\n")
		}
		c.bw.WriteString("DATA\r\n")
		if err := c.bw.Flush(); err != nil {
			return &benchFail{stage: "mail", err: err}, nil
		}
	}
	// next is the reply to the next command: sent now, or already sent.
	next := func(line string) (*benchReply, error) {
		if pipelined {
			rep, _, err := c.readLines()
			return rep, err
		}
		return c.cmd(line)
	}
	rep, err := next(mail)
	if err != nil {
		return &benchFail{stage: "mail", err: err}, nil
	}
	var first *benchFail // what ends the message
	if rep.code != 250 {
		if !pipelined {
			return &benchFail{stage: "mail", rep: rep}, nil
		}
		first = &benchFail{stage: "mail", rep: rep}
	}
	var refused []*benchFail
	accepted := 0
	for _, rc := range rcpts {
		if first != nil && !pipelined {
			break
		}
		rep, err := next("RCPT TO:<" + rc + ">")
		switch {
		case err != nil && first != nil:
			return first, nil // a 421 to MAIL, and the server closed
		case err != nil:
			return &benchFail{stage: "rcpt", err: err}, nil
		case rep.code == 250 || rep.code == 251:
			accepted++
		case rep.code == 421:
			if first == nil {
				first = &benchFail{stage: "rcpt", rep: rep}
			}
		default:
			refused = append(refused, &benchFail{stage: "rcpt", rep: rep})
		}
	}
	if first == nil && accepted == 0 {
		first = refused[0] // the message's outcome
	}
	if first != nil && !pipelined {
		return first, nil
	}
	rep, err = next("DATA")
	if err != nil && first != nil {
		return first, nil
	}
	if err != nil {
		return &benchFail{stage: "data", err: err}, nil
	}
	if first == nil && rep.code != 354 {
		first = &benchFail{stage: "data", rep: rep}
	}
	if first != nil {
		if rep.code == 354 {
			// The server wants the content of a message it has no valid
			// sender or recipient for (RFC 2920 says it must not): end it
			// empty.
			if r2, err := c.cmd("."); err != nil || r2.code == 421 {
				return &benchFail{stage: first.stage, rep: r2, err: err}, nil
			}
		}
		return first, nil
	}
	return nil, refused
}

// expand fills a --from or --to pattern.
func (c *benchConn) expand(p string, n int64) string {
	if !strings.Contains(p, "{") {
		return p
	}
	login := c.cred.login
	domain := login[strings.LastIndexByte(login, '@')+1:]
	return strings.NewReplacer("{user}", login, "{domain}", domain,
		"{worker}", strconv.Itoa(c.worker), "{n}", strconv.FormatInt(n, 10)).Replace(p)
}

// buildHeader writes the RFC 5322 header of message n into c.hbuf.
func (c *benchConn) buildHeader(n int64, from string, rcpts []string) {
	h := &c.hbuf
	h.Reset()
	domain := from[strings.LastIndexByte(from, '@')+1:]
	if domain == "" || domain == from {
		domain = "bench.sluice.invalid"
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	fmt.Fprintf(h, "From: %s\r\n", from)
	h.WriteString("To: ")
	for i, rc := range rcpts {
		if i > 0 {
			h.WriteString(",\r\n ") // one address per line: no line grows past 998
		}
		h.WriteString(rc)
	}
	h.WriteString("\r\n")
	fmt.Fprintf(h, "Subject: sluice bench message %d\r\n", n)
	fmt.Fprintf(h, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(h, "Message-ID: <bench.%d.%s@%s>\r\n", n, hex.EncodeToString(rnd[:]), domain)
	h.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
}

// benchBodyParts splits a body of size bytes into a first line of tokenLen
// bytes that differs in every message (random letters, so that content
// rules that ignore digits, such as loop detection, see different messages)
// and the rest, the same in every message. Bodies too small for the first
// line are the same in every message.
func benchBodyParts(size int) (tokenLen int, rest []byte) {
	const line = 78 // 76 characters and CRLF
	switch r := size - line; {
	case r < 0:
		return 0, benchBody(size)
	case r == 1:
		return line + 1, nil
	default:
		return line, benchBody(r)
	}
}

// benchToken is a line of n bytes: "sluice-bench ", random lower-case
// letters and CRLF.
func benchToken(n int) []byte {
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	copy(b, "sluice-bench ")
	for i := 13; i < n-2; i++ {
		b[i] = 'a' + byte(mrand.IntN(26))
	}
	b[n-2], b[n-1] = '\r', '\n'
	return b
}

// benchBody is a body of exactly size bytes: lines of 76 printable
// characters ending in CRLF (the last one shorter, or one character longer
// when a single byte is left over). No line starts with a dot.
func benchBody(size int) []byte {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	if size < 2 {
		return nil // no room for a line: an empty body
	}
	b := make([]byte, 0, size)
	line := 0
	for rest := size; rest > 0; line++ {
		n := 76
		switch {
		case rest == 76+2+1: // would leave one byte: make this line 77
			n = 77
		case rest < 76+2:
			n = rest - 2
		}
		for i := 0; i < n; i++ {
			b = append(b, chars[(line+i)%len(chars)])
		}
		b = append(b, '\r', '\n')
		rest -= n + 2
	}
	return b
}

// cmd sends one command line and reads the reply, within --timeout.
func (c *benchConn) cmd(line string) (*benchReply, error) {
	rep, _, err := c.cmdLines(line)
	return rep, err
}

func (c *benchConn) cmdLines(line string) (*benchReply, []string, error) {
	c.nc.SetDeadline(time.Now().Add(c.r.o.timeout))
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		return nil, nil, err
	}
	return c.readLines()
}

func (c *benchConn) read() (*benchReply, error) {
	c.nc.SetDeadline(time.Now().Add(c.r.o.timeout))
	rep, _, err := c.readLines()
	return rep, err
}

var enhancedRe = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// readLines reads one reply, single- or multi-line; lines are the texts
// after the codes.
func (c *benchConn) readLines() (*benchReply, []string, error) {
	var lines []string
	code := 0
	for {
		l, err := c.tp.ReadLine()
		if err != nil {
			return nil, nil, err
		}
		if len(l) < 3 || len(l) > 3 && l[3] != ' ' && l[3] != '-' {
			return nil, nil, fmt.Errorf("malformed reply %q", truncate(l, 80))
		}
		n, err := strconv.Atoi(l[:3])
		if err != nil || n < 200 || n > 599 || code != 0 && n != code {
			return nil, nil, fmt.Errorf("malformed reply %q", truncate(l, 80))
		}
		code = n
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		lines = append(lines, text)
		if len(l) == 3 || l[3] == ' ' {
			break
		}
		if len(lines) > 1000 {
			return nil, nil, errors.New("reply of more than 1000 lines")
		}
	}
	rep := &benchReply{code: code, text: lines[0]}
	if e, rest, _ := strings.Cut(lines[0], " "); enhancedRe.MatchString(e) {
		rep.enh, rep.text = e, rest
	}
	return rep, lines, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// quit ends the session politely; its reply is waited for briefly only.
func (c *benchConn) quit() {
	t := c.r.o.timeout
	if t > 5*time.Second {
		t = 5 * time.Second
	}
	c.nc.SetDeadline(time.Now().Add(t))
	c.bw.WriteString("QUIT\r\n")
	if c.bw.Flush() == nil {
		c.readLines()
	}
	c.close()
}

func (c *benchConn) close() {
	if c.nc != nil {
		c.nc.Close()
	}
	if c.opened {
		c.opened = false
		c.r.st.closed()
	}
}
