// Package dovecotauth authenticates logins through a Dovecot auth server,
// the way Postfix's smtpd_sasl_type = dovecot does: the Dovecot auth
// protocol 1.x over its client socket (unix path or TCP host:port), with
// PLAIN. Dovecot decides whether the password is right; the addresses a
// login may send as come from another backend (the user file or SQL) or,
// by default, just its own address.
package dovecotauth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"sluice/submit"
)

// GrantSource supplies grants and quota for a login Dovecot accepted.
type GrantSource interface {
	Grants(ctx context.Context, login string) (grants []string, quota *int, err error)
}

// Client talks to one Dovecot auth socket.
type Client struct {
	Addr    string // "/run/dovecot/auth-client" or "127.0.0.1:12345"
	Service string // the service name Dovecot sees ("smtp")
	Timeout time.Duration
	Grants  GrantSource // nil: the login owns only its own address

	seq atomic.Uint64
}

// ErrUnavailable wraps failures to reach Dovecot.
var ErrUnavailable = errors.New("dovecot auth unavailable")

// Authenticate implements submit.Authenticator. A new connection is used
// per login (Dovecot's handshake is one round trip; logins are not hot).
func (c *Client) Authenticate(ctx context.Context, username, password string) (*submit.Login, error) {
	if strings.ContainsAny(username, "\x00\t\n") || strings.ContainsAny(password, "\x00\n") {
		return nil, submit.ErrBadCredentials
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	network := "unix"
	if !strings.HasPrefix(c.Addr, "/") {
		network = "tcp"
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, network, c.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(conn)

	// Handshake: our VERSION and CPID; the server's VERSION, MECH lines,
	// SPID, CUID, COOKIE and DONE.
	if _, err := fmt.Fprintf(conn, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	plain := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("%w: handshake: %v", ErrUnavailable, err)
		}
		f := strings.Split(strings.TrimRight(line, "\n"), "\t")
		switch f[0] {
		case "VERSION":
			if len(f) < 2 || f[1] != "1" {
				return nil, fmt.Errorf("%w: unsupported protocol version %q", ErrUnavailable, line)
			}
		case "MECH":
			if len(f) > 1 && strings.EqualFold(f[1], "PLAIN") {
				plain = true
			}
		}
		if f[0] == "DONE" {
			break
		}
	}
	if !plain {
		return nil, fmt.Errorf("%w: Dovecot does not offer PLAIN on this socket", ErrUnavailable)
	}
	id := c.seq.Add(1)
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + username + "\x00" + password))
	service := c.Service
	if service == "" {
		service = "smtp"
	}
	if _, err := fmt.Fprintf(conn, "AUTH\t%d\tPLAIN\tservice=%s\tsecured\tno-penalty\tresp=%s\n", id, service, resp); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	f := strings.Split(strings.TrimRight(line, "\n"), "\t")
	if len(f) < 2 || f[1] != strconv.FormatUint(id, 10) {
		return nil, fmt.Errorf("%w: unexpected reply %q", ErrUnavailable, line)
	}
	params := map[string]string{}
	for _, p := range f[2:] {
		k, v, _ := strings.Cut(p, "=")
		params[k] = v
	}
	switch f[0] {
	case "OK":
	case "FAIL":
		if _, temp := params["temp"]; temp {
			return nil, fmt.Errorf("%w: temporary failure: %s", ErrUnavailable, params["reason"])
		}
		return nil, submit.ErrBadCredentials
	default:
		return nil, fmt.Errorf("%w: unexpected reply %q", ErrUnavailable, f[0])
	}
	login := strings.ToLower(username)
	if u := params["user"]; u != "" && strings.Contains(u, "@") {
		login = strings.ToLower(u)
	}
	l := &submit.Login{Name: login}
	if c.Grants != nil {
		g, q, err := c.Grants.Grants(ctx, login)
		if err != nil {
			return nil, fmt.Errorf("%w: grants: %v", ErrUnavailable, err)
		}
		l.Grants, l.Quota = g, q
	}
	return l, nil
}
