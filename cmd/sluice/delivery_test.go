package main

import (
	"bytes"
	"fmt"
	"io"
	"net/mail"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// dlvReceiver is the next hop of "sluice serve" in [relay] mode =
// "smarthost" (the integration config points [dns] at a dead resolver,
// so MX delivery cannot be used here): a go-smtp server with STARTTLS that
// records the messages it accepted and can stall one DATA.
type dlvReceiver struct {
	addr string

	mu        sync.Mutex
	delivered []dlvMessage
	stallNext bool
	stalled   chan struct{} // closed when the stalled DATA has the message
	release   chan struct{} // closed by the test to end the stall
}

type dlvMessage struct {
	from string
	to   []string
	data []byte
}

func startDlvReceiver(t *testing.T) *dlvReceiver {
	t.Helper()
	r := &dlvReceiver{stalled: make(chan struct{}), release: make(chan struct{})}
	r.addr = startSMTPSink(t, "smarthost.delivery.test", func() smtp.Session { return &dlvSession{r: r} })
	t.Cleanup(r.releaseStall) // before the sink closes
	return r
}

func (r *dlvReceiver) releaseStall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.release:
	default:
		close(r.release)
	}
}

func (r *dlvReceiver) withSubject(t *testing.T, subject string) []dlvMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []dlvMessage
	for _, m := range r.delivered {
		msg, err := mail.ReadMessage(bytes.NewReader(m.data))
		if err == nil && msg.Header.Get("Subject") == subject {
			out = append(out, m)
		}
	}
	return out
}

type dlvSession struct {
	r    *dlvReceiver
	from string
	to   []string
}

func (s *dlvSession) Reset()        { s.from, s.to = "", nil }
func (s *dlvSession) Logout() error { return nil }
func (s *dlvSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *dlvSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *dlvSession) Data(rd io.Reader) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	r := s.r
	r.mu.Lock()
	if r.stallNext {
		// Hold the transaction open with the whole message received and
		// no reply sent: a delivery in progress. It is never counted as
		// delivered (its sender never learns the outcome).
		r.stallNext = false
		r.mu.Unlock()
		close(r.stalled)
		<-r.release
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "abandoned"}
	}
	r.delivered = append(r.delivered, dlvMessage{from: s.from, to: append([]string(nil), s.to...), data: data})
	r.mu.Unlock()
	return nil
}

// TestKill9DuringDelivery: sluice is killed with SIGKILL while the next hop
// holds a delivery open in DATA (message sent, no reply yet). After a
// restart the message is delivered: at least once, possibly twice, never
// lost; and the queue ends empty. With the journal (the default) the
// message was never a queue file: the restart reads it back from the
// journal.
func TestKill9DuringDelivery(t *testing.T) {
	t.Parallel()
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			t.Parallel()
			kill9DuringDelivery(t, journal)
		})
	}
}

func kill9DuringDelivery(t *testing.T, journal bool) {
	requireTool(t, "swaks", "swaks")
	rx := startDlvReceiver(t)
	rx.mu.Lock()
	rx.stallNext = true
	rx.mu.Unlock()
	extra := smarthostTOML(rx.addr, "50ms")
	if journal {
		extra = withJournal + extra
	}
	s := startServerWith(t, extra, alice)

	const subject = "kill -9 mid-delivery 6d2c"
	const body = "must arrive despite kill -9"
	r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "bob@remote.test", subject, body)
	if r.exit != 0 {
		t.Fatalf("swaks:\n%s", r)
	}
	id := queueID(t, r.stdout)
	var spooled *spooled
	if !journal {
		spooled = readSpooled(t, s.dataDir, id)
	}

	select {
	case <-rx.stalled:
	case <-time.After(20 * time.Second):
		t.Fatalf("no delivery attempt reached DATA within 20s")
	}
	s.kill9()
	if !journal && !slices.Contains(spoolIDs(t, s.dataDir), id) {
		t.Fatalf("message %s is not in the spool after kill -9 in the middle of its delivery", id)
	}
	if journal {
		if segs, _ := filepath.Glob(filepath.Join(s.dataDir, "spool", "journal", "*.wal")); len(segs) == 0 {
			t.Fatalf("no journal segment after kill -9 in the middle of a journaled delivery")
		}
	}
	rx.releaseStall() // the old connection is gone; its transaction never completed
	s.restart()

	opsWait(t, 20*time.Second, "the message at the next hop after the restart", func() (bool, string) {
		return len(rx.withSubject(t, subject)) > 0, "not delivered"
	})
	opsWait(t, 20*time.Second, "an empty queue", func() (bool, string) {
		n := len(spoolIDs(t, s.dataDir))
		return n == 0, fmt.Sprintf("%d messages spooled", n)
	})
	got := rx.withSubject(t, subject)
	if len(got) > 2 {
		t.Errorf("delivered %d times, want once (twice at worst)", len(got))
	}
	m := got[0]
	if m.from != alice.addr || !slices.Equal(m.to, []string{"bob@remote.test"}) {
		t.Errorf("envelope from=%q to=%v, want %s to [bob@remote.test]", m.from, m.to, alice.addr)
	}
	if !strings.Contains(string(m.data), id) {
		t.Errorf("delivered message does not carry its queue id %s in its Received field:\n%s", id, m.data)
	}
	if !bytes.Contains(m.data, []byte(body)) {
		t.Errorf("delivered message lacks its body %q:\n%s", body, m.data)
	}
	if spooled != nil && !bytes.Equal(m.data, spooled.msg) {
		t.Errorf("delivered message differs from the spooled one:\ndelivered:\n%q\nspooled:\n%q", m.data, spooled.msg)
	}
}

// With the journal (the default), messages delivered at their first
// attempt never become queue files; one that is deferred does, with its
// bytes unchanged; and a clean stop leaves no journal segment behind and
// the deferred message in the queue.
func TestJournalDeliveryAndStop(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks", "swaks")
	rx := startDlvReceiver(t)
	s := startServerWith(t, withJournal+smarthostTOML(rx.addr, "1h"), alice)

	for i := 0; i < 5; i++ {
		r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "bob@remote.test", fmt.Sprintf("journaled %d 91ad", i), "delivered from memory")
		if r.exit != 0 {
			t.Fatalf("swaks:\n%s", r)
		}
		if n := len(spoolIDs(t, s.dataDir)); n != 0 {
			t.Fatalf("%d queue files after message %d; journaled messages delivered at once are never files", n, i)
		}
	}
	opsWait(t, 20*time.Second, "5 messages at the next hop", func() (bool, string) {
		n := 0
		for i := 0; i < 5; i++ {
			n += len(rx.withSubject(t, fmt.Sprintf("journaled %d 91ad", i)))
		}
		return n == 5, fmt.Sprintf("%d delivered", n)
	})

	// A deferral (the next hop answers 451 once) makes the message a file.
	rx.mu.Lock()
	rx.stallNext = true
	rx.mu.Unlock()
	r := swaks(t, s.submission, "--tls", "PLAIN", alice, alice.addr, "bob@remote.test", "deferred 91ad", "kept as a file")
	if r.exit != 0 {
		t.Fatalf("swaks:\n%s", r)
	}
	id := queueID(t, r.stdout)
	select {
	case <-rx.stalled:
	case <-time.After(20 * time.Second):
		t.Fatalf("no delivery attempt reached DATA within 20s")
	}
	rx.releaseStall()
	opsWait(t, 20*time.Second, "the deferred message as a queue file", func() (bool, string) {
		return slices.Contains(spoolIDs(t, s.dataDir), id), "not a file yet"
	})
	if sp := readSpooled(t, s.dataDir, id); !bytes.Contains(sp.msg, []byte("kept as a file")) {
		t.Fatalf("queue file of the deferred message lacks its body:\n%s", sp.msg)
	}

	s.stop()
	if segs, _ := filepath.Glob(filepath.Join(s.dataDir, "spool", "journal", "*.wal")); len(segs) != 0 {
		t.Fatalf("journal segments left after a clean stop: %v", segs)
	}
	if !slices.Contains(spoolIDs(t, s.dataDir), id) {
		t.Fatalf("the deferred message %s is not queued after the stop", id)
	}
}
