package submit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// connLimiter counts open connections in total and per client IP.
type connLimiter struct {
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[string]int
}

func newConnLimiter(max, perIP int) *connLimiter {
	return &connLimiter{max: max, perIP: perIP, byIP: map[string]int{}}
}

func (l *connLimiter) acquire(ip string) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return false, "max_connections"
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return false, "max_connections_per_ip"
	}
	l.total++
	l.byIP[ip]++
	return true, ""
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// limitListener refuses connections over the limits with "421 4.7.0 too
// busy" instead of handing them to the SMTP server. Each new connection is
// vetted in its own goroutine (a PROXY header may take a moment to
// arrive), so one slow client never holds up the accept loop.
type limitListener struct {
	net.Listener
	limiter   *connLimiter
	logger    *slog.Logger
	tlsConfig *tls.Config // set on implicit-TLS listeners: refuse inside TLS
	observer  Observer
	kind      string

	once  sync.Once
	ready chan net.Conn
	errc  chan error
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.once.Do(func() {
		l.ready = make(chan net.Conn)
		l.errc = make(chan error, 1)
		go l.acceptLoop()
	})
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		l.errc <- err // every later Accept sees it too
		return nil, err
	}
}

func (l *limitListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, net.ErrClosed) {
				continue
			}
			l.errc <- err
			return
		}
		go l.vet(c)
	}
}

func (l *limitListener) vet(c net.Conn) {
	ip := remoteIP(c.RemoteAddr()) // reads a PROXY header if one is due
	if err := proxyError(c); err != nil {
		l.logger.Warn("connection refused", "ip", ip, "reason", "PROXY header refused", "err", err)
		l.observer.Connection(l.kind, false)
		c.Close()
		return
	}
	if ok, why := l.limiter.acquire(ip); !ok {
		l.logger.Warn("connection refused", "ip", ip, "reason", why)
		l.observer.Connection(l.kind, false)
		l.refuse(c)
		return
	}
	l.observer.Connection(l.kind, true)
	cc := &countedConn{Conn: c, release: func() { l.limiter.release(ip) }}
	select {
	case l.ready <- cc:
	case err := <-l.errc:
		l.errc <- err
		cc.Close()
	}
}

func (l *limitListener) refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if l.tlsConfig != nil {
		tc := tls.Server(c, l.tlsConfig)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	fmt.Fprintf(c, "421 4.7.0 %s\r\n", errTooBusy.Message)
}

// countedConn releases its slot once, when closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func sprintf(format string, v ...any) string { return fmt.Sprintf(format, v...) }
func sprint(v ...any) string                 { return fmt.Sprint(v...) }
