package screen

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"sluice/relay/dnstest"
	"sluice/relay/resolver"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func msg(login string, rcpts []string, raw string) *Message {
	return &Message{Login: login, EnvelopeFrom: login, Rcpts: rcpts, Raw: []byte(strings.ReplaceAll(raw, "\n", "\r\n")), OurHostname: "mx.sluice.test"}
}

func multipart(filename, ctype string, data []byte) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	lines = append(lines, enc)
	return "From: info@example.test\nTo: bob@remote.test\nSubject: files\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nsee attached\n--b1\nContent-Type: " + ctype + "; name=\"" + filename + "\"\nContent-Disposition: attachment; filename=\"" + filename + "\"\nContent-Transfer-Encoding: base64\n\n" + strings.Join(lines, "\n") + "\n--b1--\n"
}

func zipWith(name string) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create(name)
	w.Write([]byte("payload"))
	zw.Close()
	return b.Bytes()
}

func TestRules(t *testing.T) {
	exe := append([]byte("MZ"), bytes.Repeat([]byte{0x90}, 100)...)
	cases := []struct {
		name    string
		rule    Rule
		m       *Message
		action  Action // Accept = no verdict
		code    int
		enh     [3]int
		mention string
	}{
		{"webform self-send", &WebForm{Mode: "reject"}, msg("info@example.test", []string{"info@example.test"},
			"From: info@example.test\nTo: info@example.test\nReply-To: visitor@gmail.test\nSubject: Contact form\n\nName: x\n"),
			Reject, 550, [3]int{5, 7, 1}, "form@example.test"},
		{"webform via To header with a visitor", &WebForm{Mode: "reject"}, msg("info@example.test", []string{"other@remote.test"},
			"From: Info <INFO@example.test>\nTo: info@example.test\nReply-To: visitor@gmail.test\n\nhi\n"), Reject, 550, [3]int{5, 7, 1}, "visitor@gmail.test"},
		{"Cc to oneself is not a form", &WebForm{Mode: "reject"}, msg("info@example.test", []string{"bob@remote.test", "info@example.test"},
			"From: info@example.test\nTo: bob@remote.test\nCc: info@example.test\n\nhi\n"), Accept, 0, [3]int{}, ""},
		{"webform allow mode", &WebForm{Mode: "allow"}, msg("info@example.test", []string{"info@example.test"},
			"From: info@example.test\nTo: info@example.test\n\nhi\n"), Accept, 0, [3]int{}, ""},
		{"normal mail passes webform", &WebForm{Mode: "reject"}, msg("info@example.test", []string{"bob@remote.test"},
			"From: info@example.test\nTo: bob@remote.test\n\nhi\n"), Accept, 0, [3]int{}, ""},
		{"no From", Headers{}, msg("info@example.test", nil, "To: bob@remote.test\n\nhi\n"), Reject, 550, [3]int{5, 7, 1}, "no From header"},
		{"two From", Headers{}, msg("info@example.test", nil, "From: a@example.test\nFrom: b@example.test\n\nhi\n"), Reject, 550, [3]int{5, 7, 1}, "2 From headers"},
		{"From without address", Headers{}, msg("info@example.test", nil, "From: WordPress\n\nhi\n"), Reject, 550, [3]int{5, 7, 1}, "no valid address"},
		{"8-bit subject without SMTPUTF8", Headers{}, msg("info@example.test", nil, "From: info@example.test\nSubject: Grüße\n\nhi\n"), Reject, 554, [3]int{5, 6, 0}, "header Subject"},
		{"long header line", Headers{}, msg("info@example.test", nil, "From: info@example.test\nX-Long: "+strings.Repeat("a", 1000)+"\n\nhi\n"), Reject, 554, [3]int{5, 6, 0}, "header X-Long"},
		{"multipart without boundary", Headers{}, msg("info@example.test", nil, "From: info@example.test\nContent-Type: multipart/mixed\n\nhi\n"), Reject, 554, [3]int{5, 6, 0}, "without a boundary"},
		{"boundary never closed", Headers{}, msg("info@example.test", nil, "From: info@example.test\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nhi\n"), Reject, 554, [3]int{5, 6, 0}, "closing boundary"},
		{"good multipart", Headers{}, msg("info@example.test", nil, multipart("a.pdf", "application/pdf", []byte("%PDF-1.4 x"))), Accept, 0, [3]int{}, ""},
		{"exe by name", NewAttachments(DefaultBlockedExtensions), msg("info@example.test", nil, multipart("invoice.exe", "application/octet-stream", []byte("x"))), Reject, 552, [3]int{5, 7, 0}, "invoice.exe"},
		{"exe by content", NewAttachments(DefaultBlockedExtensions), msg("info@example.test", nil, multipart("invoice.pdf", "application/pdf", exe)), Reject, 554, [3]int{5, 7, 1}, "Windows program"},
		{"exe inside zip", NewAttachments(DefaultBlockedExtensions), msg("info@example.test", nil, multipart("docs.zip", "application/zip", zipWith("scan.scr"))), Reject, 554, [3]int{5, 7, 1}, "scan.scr"},
		{"harmless zip", NewAttachments(DefaultBlockedExtensions), msg("info@example.test", nil, multipart("docs.zip", "application/zip", zipWith("report.pdf"))), Accept, 0, [3]int{}, ""},
		{"message passed through us already", OwnHops{}, msg("info@example.test", nil, "Received: from x by mx.sluice.test (Sluice) with ESMTPSA id 1\nFrom: info@example.test\nAuto-Submitted: auto-replied\n\nout of office\n"), Hold, 250, [3]int{2, 0, 0}, "already passed through"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := c.rule.Check(context.Background(), c.m)
			if c.action == Accept {
				if v != nil {
					t.Fatalf("unexpected verdict %v", v)
				}
				return
			}
			if v == nil {
				t.Fatal("accepted")
			}
			if v.Action != c.action || v.Code != c.code || v.Enhanced != c.enh || !strings.Contains(v.Message, c.mention) {
				t.Fatalf("got %+v, want action %v %d %v mentioning %q", v, c.action, c.code, c.enh, c.mention)
			}
		})
	}
}

func TestWebFormLimitModeCountsInStore(t *testing.T) {
	store := NewMemoryStore(StoreConfig{Window: time.Hour, Hold: time.Minute})
	w := &WebForm{Mode: "limit", Limit: 2, Store: store, Log: quiet}
	m := func() *Message {
		return msg("info@example.test", []string{"info@example.test"}, "From: info@example.test\nTo: info@example.test\n\nform\n")
	}
	for i := 0; i < 2; i++ {
		if v := w.Check(context.Background(), m()); v != nil {
			t.Fatalf("message %d: %v", i, v)
		}
	}
	v := w.Check(context.Background(), m())
	if v == nil || v.Action != Defer || v.Code != 451 || !strings.Contains(v.Message, "limit 2") {
		t.Fatalf("third: %+v", v)
	}
}

func TestRepeatedContentDefersThenHolds(t *testing.T) {
	r := &Repeats{Repeats: 3, Store: NewMemoryStore(StoreConfig{Window: 10 * time.Minute, Hold: time.Minute}), Log: quiet}
	var got []Action
	for i := 0; i < 8; i++ {
		// Counters and dates vary; the content is the same.
		m := msg("info@example.test", []string{"bob@remote.test"}, "From: info@example.test\nSubject: Order 100"+string(rune('0'+i))+"\n\nThank you for order #"+string(rune('0'+i))+"\n")
		v := r.Check(context.Background(), m)
		if v == nil {
			got = append(got, Accept)
		} else {
			got = append(got, v.Action)
		}
	}
	want := []Action{Accept, Accept, Accept, Defer, Defer, Defer, Hold, Hold}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("actions %v, want %v", got, want)
		}
	}
}

func TestOverrides(t *testing.T) {
	p := &Pipeline{Rules: []Rule{&WebForm{Mode: "reject"}}, Log: quiet,
		Overrides: map[string]ActionOverrides{"shop.test": {"webform": "allow"}, "info@example.test": {"webform": "hold"}}}
	self := func(login string) *Message {
		return msg(login, []string{login}, "From: "+login+"\nTo: "+login+"\n\nform\n")
	}
	if v := p.Screen(context.Background(), self("info@shop.test")); v != nil {
		t.Fatalf("domain override allow: %v", v)
	}
	if v := p.Screen(context.Background(), self("info@example.test")); v == nil || v.Action != Hold {
		t.Fatalf("login override hold: %+v", v)
	}
	if v := p.Screen(context.Background(), self("sales@example.test")); v == nil || v.Action != Reject {
		t.Fatalf("no override: %+v", v)
	}
	hold, _, err := p.ScreenMessageHeaders(context.Background(), "info@example.test", "mx.test", "info@example.test", []string{"info@example.test"},
		[]byte("From: info@example.test\r\nTo: info@example.test\r\n\r\nform\r\n"), false)
	if err != nil || !strings.HasPrefix(hold, "webform:") {
		t.Fatalf("ScreenMessageHeaders hold: %q %v", hold, err)
	}
}

func TestLinksBlocklists(t *testing.T) {
	dns := dnstest.Start(t, "127.0.0.1:0")
	dns.Add(t, "bad.test.dbl.sluice.test. 60 IN A 127.0.1.2", "4.3.2.1.ipbl.sluice.test. 60 IN A 127.0.0.2")
	l := &Links{DomainZones: []string{"dbl.sluice.test"}, IPZones: []string{"ipbl.sluice.test"}, Resolver: resolver.New(dns.Addr), Budget: 2 * time.Second, Log: quiet}
	qp := "From: info@example.test\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n<a href=3D\"https://bad.test/login\">click</a>\n"
	cases := []struct {
		name, raw, mention string
	}{
		{"listed domain in QP html", qp, "bad.test"},
		{"listed IP literal", "From: info@example.test\n\nsee http://1.2.3.4/x\n", "IP address 1.2.3.4"},
		{"clean link", "From: info@example.test\n\nsee https://good.test/\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := l.Check(context.Background(), msg("info@example.test", nil, c.raw))
			if c.mention == "" {
				if v != nil {
					t.Fatalf("clean link refused: %v", v)
				}
				return
			}
			if v == nil || v.Code != 554 || !strings.Contains(v.Message, c.mention) {
				t.Fatalf("got %+v", v)
			}
		})
	}
}

func FuzzParts(f *testing.F) {
	f.Add([]byte(multipart("a.exe", "application/octet-stream", []byte("MZ"))))
	f.Add([]byte("From: a@b.test\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n"))
	f.Add([]byte("Content-Type: multipart/alternative; boundary=\"\"\r\n\r\nhttp://[::1]:80/ www.x.test"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := &Message{Login: "a@b.test", Raw: raw}
		m.Parts()
		ExtractLinkHosts(m)
		fingerprint(m)
		Headers{}.Check(context.Background(), m)
		NewAttachments(DefaultBlockedExtensions).Check(context.Background(), m)
	})
}
