package main

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestDKIMVerifiesAtTheReceiver: what the receiving server gets, after the
// relay has delivered it (STARTTLS to the next hop, dot-stuffing, the
// relay's own handling of the spooled bytes), still carries signatures
// that dkimpy, opendkim-testmsg and go-msgauth verify, for RSA, Ed25519
// and both. Verifying only the spool would miss anything the delivery
// changes.
func TestDKIMVerifiesAtTheReceiver(t *testing.T) {
	t.Parallel()
	d := dkimStartDNS(t)
	for _, tc := range []struct{ algo, selector string }{
		{"rsa", "rrsa"},
		{"ed25519", "red"},
		{"both", "rdual"},
	} {
		t.Run(tc.algo, func(t *testing.T) {
			t.Parallel()
			sink := ddStartSink(t)
			s := startServerWith(t, sink.relayTOML(), alice)
			recs := dkimKeygen(t, s, "example.test", tc.selector, tc.algo)
			for _, rec := range recs {
				d.publish(t, rec)
			}
			want := dkimSigsOf(recs)
			sink.waitSigning(t, s, alice, want)

			// Lines that begin with a dot (dot-stuffed on the way), a long
			// line, 8-bit text: what delivery could get wrong.
			sent := []byte(fmt.Sprintf("From: Alice <%s>\r\nTo: bob@remote.test\r\nSubject: delivered and verified (%s)\r\n"+
				"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <dd-%s@example.test>\r\nMIME-Version: 1.0\r\n"+
				"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"+
				".a line that starts with a dot\r\n..and one with two\r\n.\r\nnot the end: a line of one dot above\r\n"+
				"Grüße aus Köln\r\n%s\r\n", alice.addr, tc.algo, tc.algo, bytes.Repeat([]byte("x"), 900)))
			id := dkimSubmit(t, s, alice, "bob@remote.test", sent)
			got := sink.wait(t, id)
			if !bytes.HasSuffix(got, sent) {
				t.Fatalf("the receiver did not get the message as sent (after Sluice's own header fields):\n%q", got)
			}
			dkimVerifyAll(t, d, got, want)
		})
	}
}

// ddSink is a receiving server that keeps every message it accepts, by
// the queue ID in Sluice's Received field.
type ddSink struct {
	addr string
	mu   sync.Mutex
	msgs map[string][]byte
}

func ddStartSink(t *testing.T) *ddSink {
	t.Helper()
	k := &ddSink{msgs: map[string][]byte{}}
	k.addr = startSMTPSink(t, "mx.remote.test", func() smtp.Session { return &ddSession{k: k} })
	return k
}

// relayTOML delivers everything to the sink, over STARTTLS.
func (k *ddSink) relayTOML() string { return smarthostTOML(k.addr, "1s") }

// wait returns the message of queue ID id once it has arrived.
func (k *ddSink) wait(t *testing.T, id string) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k.mu.Lock()
		m, ok := k.msgs[id]
		k.mu.Unlock()
		if ok {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s did not reach the receiving server within 30s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSigning submits probes until the receiver gets them signed as want
// (the running server picks new keys up within a second). The probes are
// read at the receiver: the relay may have delivered and removed them from
// the spool before anyone could read them there.
func (k *ddSink) waitSigning(t *testing.T, s *sluiceServer, u testUser, want []dkimSig) {
	t.Helper()
	deadline := time.Now().Add(dkimSignTimeout)
	for n := 1; ; n++ {
		msg := k.wait(t, dkimSubmit(t, s, u, "probe@remote.test", dkimProbe(u.addr, n)))
		var got []dkimSig
		for _, sig := range dkimSignatures(t, msg) {
			got = append(got, dkimSig{sig["d"], sig["s"], sig["a"]})
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the receiver gets %s's messages signed with %v, want %v", dkimSignTimeout, u.addr, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type ddSession struct{ k *ddSink }

func (s *ddSession) Reset()                               {}
func (s *ddSession) Logout() error                        { return nil }
func (s *ddSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *ddSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *ddSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if m := opsReceivedIDRe.FindSubmatch(b); m != nil {
		s.k.mu.Lock()
		s.k.msgs[string(m[1])] = b
		s.k.mu.Unlock()
	}
	return nil
}
