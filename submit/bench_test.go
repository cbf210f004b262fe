package submit_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/relay/spool"
	"sluice/submit"
)

// Accept-path benchmarks: a real gateway on loopback with a real spool in a
// temporary directory and a real user file. benchClients clients each open
// ONE connection, do STARTTLS and AUTH PLAIN once, then send 5 KB messages
// (MAIL, RCPT, DATA) on that connection again and again; b.N messages are
// spread over the clients.
//
// Reported metrics:
//
//	msgs/s  accepted messages per second of wall time (all clients together)
//	p50-ms  median latency from writing the final ".\r\n" to reading the 250
//	p99-ms  99th percentile of the same
//
// Run:
//
//	go test -run '^$' -bench AcceptPath -benchtime 20000x ./submit
const (
	benchClients = 50
	benchMsgSize = 5 << 10
)

func BenchmarkAcceptPath(b *testing.B) { benchAcceptPath(b, true) }

// BenchmarkAcceptPathJournal is the default of sluice serve: the spool's
// journal, one write and fdatasync for each group of messages; each is
// taken out as soon as it is in (as a delivery at once would).
func BenchmarkAcceptPathJournal(b *testing.B) { benchAcceptPath(b, true, benchJournal(b)) }

// BenchmarkAcceptPathFsyncEach turns group commit off: each message costs an
// fsync of its file and an fsync of the queue directory (concurrent
// directory syncs are still shared).
func BenchmarkAcceptPathFsyncEach(b *testing.B) { benchAcceptPath(b, false) }

// benchDiscardLogs keeps the logger from filling the harness's in-memory
// buffer with one line per message.
func benchDiscardLogs(srv *submit.Server) {
	srv.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
}

func benchGroupCommit(on bool) gatewayOption {
	return func(srv *submit.Server) {
		sp, ok := srv.Spool.(*spool.Spool)
		if !ok {
			panic("bench: gateway spool is not a *spool.Spool")
		}
		sp.GroupCommit = on
	}
}

// benchMessage is a valid message of about size bytes: lines of 76
// characters, CRLF endings, no line starting with a dot.
func benchMessage(size int) string {
	var sb strings.Builder
	sb.WriteString("From: Info <info@example.test>\r\n")
	sb.WriteString("To: someone@remote.test\r\n")
	sb.WriteString("Subject: benchmark message\r\n")
	sb.WriteString("Message-ID: <bench@example.test>\r\n")
	sb.WriteString("Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n")
	sb.WriteString("MIME-Version: 1.0\r\n")
	sb.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := strings.Repeat("abcdefghij", 8)[:76] + "\r\n"
	for sb.Len()+len(line) <= size {
		sb.WriteString(line)
	}
	return sb.String()
}

// benchReply reads one (possibly multi-line) reply and returns its code.
// Unlike client.read it returns errors instead of failing the test, so it
// may run on any goroutine.
func benchReply(c *client) (int, string, error) {
	var text []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(text, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, line, fmt.Errorf("short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, line, fmt.Errorf("bad reply line %q", line)
		}
		text = append(text, line)
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(text, "\n"), nil
		}
	}
}

func benchCmd(c *client, want int, cmd string) error {
	if _, err := io.WriteString(c.conn, cmd+"\r\n"); err != nil {
		return err
	}
	code, text, err := benchReply(c)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if code != want {
		return fmt.Errorf("%s: %s", cmd, text)
	}
	return nil
}

// benchSend runs one transaction and returns the latency from writing the
// final ".\r\n" to reading the 250 reply.
func benchSend(c *client, msg string) (time.Duration, error) {
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if err := benchCmd(c, 250, "MAIL FROM:<info@example.test>"); err != nil {
		return 0, err
	}
	if err := benchCmd(c, 250, "RCPT TO:<someone@remote.test>"); err != nil {
		return 0, err
	}
	if err := benchCmd(c, 354, "DATA"); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(c.conn, msg); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := io.WriteString(c.conn, ".\r\n"); err != nil {
		return 0, err
	}
	code, text, err := benchReply(c)
	lat := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("end of DATA: %w", err)
	}
	if code != 250 {
		return 0, fmt.Errorf("end of DATA: %s", text)
	}
	return lat, nil
}

// benchJournal starts the spool's journal.
func benchJournal(b *testing.B) gatewayOption {
	return func(srv *submit.Server) {
		sp := srv.Spool.(*spool.Spool)
		if err := sp.StartJournal(spool.DefaultJournalLimit); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sp.StopJournal() })
		sp.OnEnqueue = func(id string) { sp.Remove(id) }
	}
}

func benchAcceptPath(b *testing.B, groupCommit bool, opts ...gatewayOption) {
	g := startGateway(b, append([]gatewayOption{benchDiscardLogs, benchGroupCommit(groupCommit)}, opts...)...)
	msg := benchMessage(benchMsgSize)

	nClients := min(benchClients, b.N)
	clients := make([]*client, nClients)
	for i := range clients {
		clients[i] = g.login(b, "info@example.test") // STARTTLS + AUTH PLAIN, once
	}
	// Warm each connection with one message so the first measured message
	// does not pay for buffer growth.
	for _, c := range clients {
		if _, err := benchSend(c, msg); err != nil {
			b.Fatal(err)
		}
	}

	lats := make([][]time.Duration, nClients)
	errs := make([]error, nClients)
	var wg sync.WaitGroup
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	begin := time.Now()
	for i, c := range clients {
		n := b.N / nClients
		if i < b.N%nClients {
			n++
		}
		lats[i] = make([]time.Duration, 0, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				lat, err := benchSend(c, msg)
				if err != nil {
					errs[i] = err
					return
				}
				lats[i] = append(lats[i], lat)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	b.StopTimer()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}

	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(len(all)-1))
		return float64(all[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
