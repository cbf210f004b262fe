// Package dovecotauth authenticates logins through a Dovecot auth server,
// the way Postfix's smtpd_sasl_type = dovecot does: the Dovecot auth
// protocol 1.x over its client socket (unix path or TCP host:port), with
// PLAIN. Dovecot decides whether the password is right; the addresses a
// login may send as come from another backend (the user file or SQL) or,
// by default, just its own address.
//
// The protocol (doc/wiki "Design/AuthProtocol" in Dovecot's sources): the
// client sends VERSION and CPID; the server sends VERSION, one MECH line a
// mechanism, SPID, CUID, COOKIE and DONE; then each AUTH line of the
// client gets OK, FAIL or CONT with the same request id. Lines are
// tab-separated; values are escaped with \001 (str_tabescape).
package dovecotauth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"sluice/submit"
	"sluice/submit/userdb"
)

// GrantSource supplies grants and quota for a login Dovecot accepted.
type GrantSource interface {
	Grants(ctx context.Context, login string) (grants []string, quota *int, err error)
}

// StateSource is implemented by a GrantSource that also knows whether
// Sluice itself disabled or suspended a login (the user file does): such a
// login is refused even when Dovecot accepts its password.
type StateSource interface {
	// State reports whether Sluice disabled login, why, and whether that
	// is a suspension of the compromise rule.
	State(ctx context.Context, login string) (disabled, suspended bool, reason string, err error)
}

// FileGrants is the user file as a GrantSource and StateSource: grants,
// quota and `sluice user disable` (or a suspension) of a Dovecot login
// come from its entry there; a login without an entry owns only its own
// address.
func FileGrants(f *userdb.File) GrantSource { return fileGrants{f} }

type fileGrants struct{ f *userdb.File }

func (g fileGrants) Grants(ctx context.Context, login string) ([]string, *int, error) {
	return g.f.Grants(ctx, login)
}

func (g fileGrants) State(_ context.Context, login string) (bool, bool, string, error) {
	u, err := g.f.Get(login)
	if errors.Is(err, userdb.ErrNotFound) {
		return false, false, "", nil
	}
	if err != nil {
		return false, false, "", err
	}
	return u.Disabled, u.Disabled && u.Suspended, u.Reason, nil
}

// Client talks to one Dovecot auth socket.
type Client struct {
	Addr    string // "/run/dovecot/auth-client" or "127.0.0.1:12345"
	Service string // the service name Dovecot sees ("smtp")
	Timeout time.Duration
	Grants  GrantSource // nil: the login owns only its own address

	seq atomic.Uint64
}

// ErrUnavailable wraps failures to reach Dovecot or to understand it.
var ErrUnavailable = errors.New("dovecot auth unavailable")

// maxLine bounds one line from the server.
const maxLine = 64 << 10

// Authenticate implements submit.Authenticator. A new connection is used
// per login (the handshake is one round trip; Postfix does the same).
func (c *Client) Authenticate(ctx context.Context, username, password string) (*submit.Login, error) {
	if username == "" || strings.ContainsAny(username, "\x00\t\r\n") || strings.ContainsRune(password, 0) {
		return nil, submit.ErrBadCredentials
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	network := "tcp"
	if strings.Contains(c.Addr, "/") { // a path; host:port has no slash
		network = "unix"
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, c.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	br := bufio.NewReaderSize(conn, 4096)

	if _, err := fmt.Fprintf(conn, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	mechs, err := readHandshake(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if !mechs["PLAIN"] {
		return nil, fmt.Errorf("%w: Dovecot does not offer PLAIN on %s; add plain to auth_mechanisms", ErrUnavailable, c.Addr)
	}
	id := c.seq.Add(1)
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + username + "\x00" + password))
	service := c.Service
	if service == "" {
		service = "smtp"
	}
	// secured: Sluice takes AUTH only over TLS. no-penalty: Sluice keeps
	// its own failure counters and lockouts.
	if _, err := fmt.Fprintf(conn, "AUTH\t%d\tPLAIN\tservice=%s\tsecured\tno-penalty\tresp=%s\n", id, tabEscape(service), resp); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	line, err := readLine(br)
	if err != nil {
		return nil, fmt.Errorf("%w: waiting for the answer to AUTH: %v", ErrUnavailable, err)
	}
	r, err := parseReply(line)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if r.ID != id {
		return nil, fmt.Errorf("%w: answer for request %d, want %d", ErrUnavailable, r.ID, id)
	}
	switch r.Result {
	case "FAIL":
		if _, temp := r.Params["temp"]; temp {
			return nil, fmt.Errorf("%w: temporary failure: %s", ErrUnavailable, r.Params["reason"])
		}
		return nil, submit.ErrBadCredentials
	case "CONT":
		return nil, fmt.Errorf("%w: Dovecot asked for more than the PLAIN response", ErrUnavailable)
	}
	if _, proxy := r.Params["proxy"]; proxy {
		// A proxy answer need not mean the password was checked
		// (nopassword proxies leave that to the backend).
		return nil, fmt.Errorf("%w: Dovecot answered with a proxy destination; point [auth.dovecot] socket at an auth server that checks passwords", ErrUnavailable)
	}
	login := strings.ToLower(username)
	if u := r.Params["user"]; strings.Contains(u, "@") {
		login = strings.ToLower(u)
	}
	l := &submit.Login{Name: login}
	if _, nologin := r.Params["nologin"]; nologin {
		l.Disabled = true
		l.DisabledReason = "disabled in Dovecot"
		if reason := r.Params["reason"]; reason != "" {
			l.DisabledReason += ": " + reason
		}
		return l, nil
	}
	if c.Grants != nil {
		g, q, err := c.Grants.Grants(ctx, login)
		if err != nil {
			return nil, fmt.Errorf("%w: grants of %s: %v", ErrUnavailable, login, err)
		}
		l.Grants, l.Quota = g, q
		if st, ok := c.Grants.(StateSource); ok {
			disabled, suspended, reason, err := st.State(ctx, login)
			if err != nil {
				return nil, fmt.Errorf("%w: state of %s: %v", ErrUnavailable, login, err)
			}
			l.Disabled, l.Suspended, l.DisabledReason = disabled, suspended, reason
		}
	}
	return l, nil
}

// readHandshake reads the server's side of the handshake up to DONE and
// returns the mechanisms it offers (upper case). It needs a VERSION line
// with major version 1 before DONE.
func readHandshake(br *bufio.Reader) (map[string]bool, error) {
	mechs := map[string]bool{}
	version := false
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		f := strings.Split(line, "\t")
		switch f[0] {
		case "VERSION":
			if len(f) < 3 || f[1] != "1" {
				return nil, fmt.Errorf("handshake: protocol version %q, want 1.x", strings.Join(f[1:], "."))
			}
			if _, err := strconv.Atoi(f[2]); err != nil {
				return nil, fmt.Errorf("handshake: malformed VERSION line %q", line)
			}
			version = true
		case "MECH":
			if len(f) < 2 || f[1] == "" {
				return nil, fmt.Errorf("handshake: MECH line without a mechanism")
			}
			mechs[strings.ToUpper(f[1])] = true
		case "DONE":
			if !version {
				return nil, errors.New("handshake: DONE before VERSION; is this a Dovecot auth client socket?")
			}
			return mechs, nil
		case "SPID", "CUID", "COOKIE":
		default:
			if !version {
				return nil, fmt.Errorf("handshake: unexpected line %.40q; is this a Dovecot auth client socket?", line)
			}
			// Later 1.x versions may add lines: ignore them.
		}
	}
}

// authReply is the server's answer to an AUTH request.
type authReply struct {
	Result string // OK, FAIL or CONT
	ID     uint64
	Params map[string]string // unescaped; flags have ""
}

// parseReply reads an OK, FAIL or CONT line.
func parseReply(line string) (*authReply, error) {
	f := strings.Split(line, "\t")
	switch f[0] {
	case "OK", "FAIL", "CONT":
	default:
		return nil, fmt.Errorf("unexpected answer %.40q", line)
	}
	if len(f) < 2 {
		return nil, fmt.Errorf("%s answer without a request id", f[0])
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s answer with a malformed request id %.20q", f[0], f[1])
	}
	r := &authReply{Result: f[0], ID: id, Params: map[string]string{}}
	for _, p := range f[2:] {
		if f[0] == "CONT" {
			break // the challenge, not parameters
		}
		k, v, _ := strings.Cut(p, "=")
		r.Params[k] = tabUnescape(v)
	}
	return r, nil
}

// readLine reads one line without its newline, at most maxLine bytes.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > maxLine {
			return "", fmt.Errorf("line longer than %d bytes", maxLine)
		}
		switch {
		case err == nil:
			return strings.TrimSuffix(string(b[:len(b)-1]), "\r"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return "", errors.New("the server closed the connection")
		default:
			return "", err
		}
	}
}

// tabEscape and tabUnescape are Dovecot's str_tabescape and
// str_tabunescape: \001 followed by 1, t, r, n or 0 stands for \001, tab,
// CR, LF and NUL.
func tabEscape(s string) string {
	if !strings.ContainsAny(s, "\x00\x01\t\r\n") {
		return s
	}
	r := strings.NewReplacer("\x01", "\x011", "\t", "\x01t", "\r", "\x01r", "\n", "\x01n", "\x00", "\x010")
	return r.Replace(s)
}

func tabUnescape(s string) string {
	if !strings.ContainsRune(s, 1) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != 1 || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case '1':
			b.WriteByte(1)
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		case '0':
			b.WriteByte(0)
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
