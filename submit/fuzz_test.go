package submit

import (
	"testing"
)

// FuzzCheckMessage feeds arbitrary bytes through everything that parses a
// client's message: the line-ending check, the header splitter and the
// sender rules. None may panic, and a message that passes the line-ending
// check must have only CRLF line ends and no NUL.
func FuzzCheckMessage(f *testing.F) {
	seeds := []string{
		"From: a@example.test\r\nTo: b@example.test\r\n\r\nbody\r\n",
		"From: =?utf-8?q?J=C3=B6rg?= <a@example.test>\r\nSender: a@example.test\r\n\r\n",
		"From: a@example.test, \"x\" <b@example.test>\r\n folded\r\n\r\n",
		"x\n.\nMAIL FROM:<a@b>\r\n",
		"\r\n\r\n",
		"From: <>\r\n\r\n",
		"From: a@example.test\r\nFrom: b@example.test\r\n",
		"\x00\r\r\n\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	login := &Login{Name: "a@example.test", Grants: []string{"@example.test"}}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if err := checkLineEndings(msg); err != nil {
			return
		}
		for i, c := range msg {
			if c == 0 || c == '\n' && (i == 0 || msg[i-1] != '\r') || c == '\r' && (i+1 >= len(msg) || msg[i+1] != '\n') {
				t.Fatalf("checkLineEndings let through byte %d of %q", i, msg)
			}
		}
		hs, body, err := splitHeader(msg)
		if err != nil {
			return
		}
		if body < 0 || body > len(msg) {
			t.Fatalf("body offset %d out of range", body)
		}
		checkHeaderSenders(headers(hs), login)
	})
}

// FuzzSASL drives the PLAIN and LOGIN servers with arbitrary client
// responses; they must never panic and never report success without
// reaching the authenticator.
func FuzzSASL(f *testing.F) {
	f.Add([]byte("\x00user@example.test\x00pw"), []byte("pw"))
	f.Add([]byte(""), []byte(""))
	f.Add([]byte("a\x00b\x00c\x00d"), []byte("\x00"))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		for _, mk := range []func(*session) interface {
			Next([]byte) ([]byte, bool, error)
		}{
			func(s *session) interface {
				Next([]byte) ([]byte, bool, error)
			} {
				return &plainServer{s: s}
			},
			func(s *session) interface {
				Next([]byte) ([]byte, bool, error)
			} {
				return &loginServer{s: s}
			},
		} {
			s := &session{srv: fuzzServer(), ip: "127.0.0.1", tls: true}
			m := mk(s)
			for _, resp := range [][]byte{first, second, first} {
				_, done, err := m.Next(resp)
				if done && err == nil && s.login == nil {
					t.Fatalf("reported success without a login")
				}
				if done || err != nil {
					break
				}
			}
		}
	})
}
