package submit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
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

// limitListener is what go-smtp accepts from: connections that passed the
// PROXY header, the connection limits and TLS (implicit, or Sluice's own
// plaintext loop up to STARTTLS), each wrapped in a wireConn. Every new
// connection is prepared in its own goroutine, so a slow client never
// holds up the accept loop.
type limitListener struct {
	net.Listener // the real one
	srv          *Server
	implicit     bool
	kind         string // "submission" or "submissions", for logs and metrics

	ready     chan net.Conn
	done      chan struct{} // closed by Close (go-smtp) or a fatal accept error
	doneOnce  sync.Once
	err       error // what Accept returns once done
	stopping  atomic.Bool
	closeOnce sync.Once
}

// Accept implements net.Listener for go-smtp.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *limitListener) finish(err error) {
	l.doneOnce.Do(func() { l.err = err; close(l.done) })
}

// Close implements net.Listener: go-smtp's Close and Shutdown call it.
func (l *limitListener) Close() error {
	l.finish(net.ErrClosed)
	return l.stop()
}

// stop closes the real listener only: nothing new is accepted, and the
// connections still on their way (in the plaintext loop) are still handed
// to go-smtp.
func (l *limitListener) stop() error {
	l.stopping.Store(true)
	var err error
	l.closeOnce.Do(func() { err = l.Listener.Close() })
	return err
}

func (l *limitListener) acceptLoop() {
	defer l.srv.untrack()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.stopping.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, net.ErrClosed) {
				continue
			}
			l.finish(err)
			return
		}
		lc := l.srv.register(c)
		if lc == nil {
			c.Close()
			continue
		}
		go l.prepare(lc)
	}
}

// prepare vets one connection and gets it to TLS, then hands it to go-smtp.
func (l *limitListener) prepare(lc *liveConn) {
	srv := l.srv
	ip := remoteIP(lc.RemoteAddr()) // reads a PROXY header if one is due
	if err := proxyError(lc.Conn); err != nil {
		srv.Logger.Warn("connection refused", "ip", ip, "listener", l.kind, "reason", "PROXY header refused", "err", err)
		srv.Observer.Connection(l.kind, false)
		lc.Close()
		return
	}
	if ok, why := srv.conns.acquire(ip); !ok {
		srv.Logger.Warn("connection refused", "ip", ip, "listener", l.kind, "reason", why)
		srv.Observer.Connection(l.kind, false)
		l.refuse(lc)
		return
	}
	lc.onClose(func() { srv.conns.release(ip) })
	srv.Observer.Connection(l.kind, true)
	var wc *wireConn
	if l.implicit {
		tc := srv.handshake(lc, ip, l.kind)
		if tc == nil {
			return
		}
		wc = newWireConn(tc, srv, 0, false)
	} else if wc = srv.plaintext(lc, ip); wc == nil {
		return
	}
	select {
	case l.ready <- wc:
	case <-l.done:
		wc.Close()
	}
}

// handshake runs the server side of TLS on c; on failure it logs, closes c
// and returns nil.
func (srv *Server) handshake(c *liveConn, ip, kind string) *tls.Conn {
	if srv.tlsConf == nil {
		srv.Logger.Error("TLS not configured; connection closed", "ip", ip, "listener", kind)
		c.Close()
		return nil
	}
	tc := tls.Server(c, srv.tlsConf)
	c.SetDeadline(time.Now().Add(srv.handshakeTimeout()))
	if err := tc.Handshake(); err != nil {
		srv.Logger.Info("TLS handshake failed", "ip", ip, "listener", kind, "err", err)
		c.Close()
		return nil
	}
	c.SetDeadline(time.Time{})
	return tc
}

func (srv *Server) handshakeTimeout() time.Duration {
	if d := srv.Limits.IdleTimeout; d > 0 && d < time.Minute {
		return d
	}
	return time.Minute
}

func (l *limitListener) refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if l.implicit {
		if l.srv.tlsConf == nil {
			return
		}
		tc := tls.Server(c, l.srv.tlsConf)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	fmt.Fprint(c, formatReply(errTooBusy))
}

// liveConn is an accepted connection, known to the server from accept to
// close: Close closes them all and Shutdown waits for them.
type liveConn struct {
	net.Conn
	srv *Server

	mu      sync.Mutex
	closed  bool
	release func() // gives back the connection's slot in srv.conns
}

// onClose sets what runs when the connection closes (at once if it has).
func (c *liveConn) onClose(f func()) {
	c.mu.Lock()
	if !c.closed {
		c.release = f
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	f()
}

func (c *liveConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return err
	}
	c.closed = true
	f := c.release
	c.mu.Unlock()
	if f != nil {
		f()
	}
	c.srv.unregister(c)
	return err
}

// register tracks a new connection; nil once the server is closed.
func (srv *Server) register(c net.Conn) *liveConn {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.state == stateClosed {
		return nil
	}
	lc := &liveConn{Conn: c, srv: srv}
	srv.live[lc] = struct{}{}
	srv.active++
	return lc
}

func (srv *Server) unregister(c *liveConn) {
	srv.mu.Lock()
	delete(srv.live, c)
	srv.mu.Unlock()
	srv.untrack()
}

// untrack ends one tracked thing (an accept loop or a connection).
func (srv *Server) untrack() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.active--; srv.active == 0 && srv.idle != nil {
		close(srv.idle)
		srv.idle = nil
	}
}

// slogPrinter sends go-smtp's own messages to our log.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Debug("smtp", "detail", fmt.Sprintf(format, v...))
}
func (p slogPrinter) Println(v ...any) { p.l.Debug("smtp", "detail", fmt.Sprint(v...)) }
