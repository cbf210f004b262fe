package relay_test

// Parsing the bounces the relay sends, as a mail client reads them.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------
// Delivery status notifications

// dsnReport is a parsed RFC 3464 report.
type dsnReport struct {
	header     mail.Header
	human      string                 // the text/plain part
	perMessage textproto.MIMEHeader   // first block of message/delivery-status
	recipients []textproto.MIMEHeader // its per-recipient blocks
	original   textproto.MIMEHeader   // the text/rfc822-headers part
}

// parseDSN parses a bounce as a mail client would, failing the test on any
// deviation from the multipart/report structure.
func parseDSN(t testing.TB, data []byte) *dsnReport {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("DSN is not a mail message: %v\n%s", err, data)
	}
	rep := &dsnReport{header: msg.Header}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		t.Fatalf("DSN Content-Type %q (%v), want multipart/report; report-type=delivery-status; boundary=...", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("DSN multipart: %v\n%s", err, data)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, pt)
		switch pt {
		case "text/plain":
			rep.human = string(body)
		case "message/delivery-status":
			blocks := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(body), "\r\n", "\n")), "\n\n")
			for i, b := range blocks {
				h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(strings.ReplaceAll(b, "\n", "\r\n") + "\r\n\r\n"))).ReadMIMEHeader()
				if err != nil {
					t.Fatalf("delivery-status block %d: %v\n%s", i, err, b)
				}
				if i == 0 {
					rep.perMessage = h
				} else {
					rep.recipients = append(rep.recipients, h)
				}
			}
		case "text/rfc822-headers":
			h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(body, "\r\n\r\n"...)))).ReadMIMEHeader()
			if err != nil {
				t.Fatalf("text/rfc822-headers: %v\n%s", err, body)
			}
			rep.original = h
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("DSN parts %v, want text/plain, message/delivery-status, text/rfc822-headers", types)
	}
	return rep
}

// recipient returns the per-recipient block of rcpt (nil if absent).
func (d *dsnReport) recipient(rcpt string) textproto.MIMEHeader {
	for _, r := range d.recipients {
		if strings.EqualFold(r.Get("Final-Recipient"), "rfc822; "+rcpt) {
			return r
		}
	}
	return nil
}

func (d *dsnReport) finalRecipients() []string {
	var out []string
	for _, r := range d.recipients {
		out = append(out, strings.TrimPrefix(r.Get("Final-Recipient"), "rfc822; "))
	}
	return out
}

// words normalises white space, so that text wrapped over lines compares.
func words(s string) string { return strings.Join(strings.Fields(s), " ") }

// checkFailed asserts the per-recipient fields of a failure for rcpt and
// that the human part names it with the reply.
func (d *dsnReport) checkFailed(t testing.TB, rcpt, status, replyContains string) {
	t.Helper()
	r := d.recipient(rcpt)
	if r == nil {
		t.Errorf("DSN has no Final-Recipient for %s (has %v)", rcpt, d.finalRecipients())
		return
	}
	if got := r.Get("Action"); got != "failed" {
		t.Errorf("DSN %s: Action %q, want failed", rcpt, got)
	}
	if got := r.Get("Status"); got != status {
		t.Errorf("DSN %s: Status %q, want %s", rcpt, got, status)
	}
	if got := r.Get("Diagnostic-Code"); !strings.HasPrefix(got, "smtp; ") || !strings.Contains(got, replyContains) {
		t.Errorf("DSN %s: Diagnostic-Code %q, want \"smtp; ...%s...\"", rcpt, got, replyContains)
	}
	if !strings.Contains(d.human, "<"+rcpt+">") || !strings.Contains(words(d.human), replyContains) {
		t.Errorf("DSN text part does not name <%s> with the reply %q:\n%s", rcpt, replyContains, d.human)
	}
}

// dsnsFor returns the bounces a receiver got for sender: null reverse
// path, the sender as the only recipient.
func dsnsFor(r *receiver, sender string) []txn {
	var out []txn
	for _, x := range r.delivered() {
		if x.From == "" && len(x.Rcpts) == 1 && strings.EqualFold(x.Rcpts[0], sender) {
			out = append(out, x)
		}
	}
	return out
}

// subjectOf returns the Subject of a delivered message.
func subjectOf(t testing.TB, data []byte) string {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("delivered message does not parse: %v\n%s", err, data)
	}
	return m.Header.Get("Subject")
}
