package relay

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"
)

// go-smtp's client offers STARTTLS only before its own first EHLO (which
// then says "localhost"). Sluice wants its HELO name in every EHLO, so it
// runs the opening itself: greeting, EHLO, and STARTTLS when offered and
// wanted. The connection it returns replays a greeting, so that go-smtp's
// client starts cleanly on top of it (and sends EHLO again, which RFC 5321
// 4.1.4 allows).

// opening is what the server said before the SMTP client took over.
type opening struct {
	startTLS bool   // offered
	greeting string // first line of the banner
}

func openSession(conn net.Conn, helo string, timeout time.Duration) (*bufio.Reader, opening, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	br := bufio.NewReader(conn)
	code, lines, err := readReply(br)
	if err != nil {
		return nil, opening{}, err
	}
	if code != 220 {
		return nil, opening{}, &replyError{code: code, text: strings.Join(lines, " ")}
	}
	op := opening{greeting: lines[0]}
	if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", helo); err != nil {
		return nil, op, err
	}
	code, lines, err = readReply(br)
	if err != nil {
		return nil, op, err
	}
	if code == 250 {
		for _, l := range lines[1:] {
			if strings.EqualFold(strings.Fields(l + " x")[0], "STARTTLS") {
				op.startTLS = true
			}
		}
	}
	return br, op, nil
}

// upgrade sends STARTTLS and completes the handshake.
func upgrade(conn net.Conn, br *bufio.Reader, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(conn, "STARTTLS\r\n"); err != nil {
		return nil, err
	}
	code, lines, err := readReply(br)
	if err != nil {
		return nil, err
	}
	if code != 220 {
		return nil, &replyError{code: code, text: strings.Join(lines, " ")}
	}
	if br.Buffered() > 0 {
		return nil, fmt.Errorf("server sent data before the TLS handshake")
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

func readReply(br *bufio.Reader) (int, []string, error) {
	var lines []string
	code := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, nil, fmt.Errorf("malformed reply %q", line)
		}
		fmt.Sscanf(line[:3], "%d", &code)
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		lines = append(lines, text)
		if len(line) == 3 || line[3] != '-' {
			return code, lines, nil
		}
	}
}

type replyError struct {
	code int
	text string
}

func (e *replyError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

// replayConn yields a synthetic greeting, then whatever is buffered, then
// the connection.
type replayConn struct {
	net.Conn
	pending []byte
	br      *bufio.Reader // may hold bytes already read; nil after TLS
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.br != nil && c.br.Buffered() > 0 {
		return c.br.Read(p)
	}
	return c.Conn.Read(p)
}
