package submit

import (
	"bytes"
	"io"
	"net"
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
			s := &session{srv: fuzzServer(), ip: "127.0.0.1"}
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

// scanConn hands out its data in pieces of sizes taken from sizes.
type scanConn struct {
	net.Conn
	data, sizes []byte
	i           int
}

func (c *scanConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)])%16 + 1
		c.i++
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzDataScanner feeds arbitrary DATA content, cut into arbitrary reads,
// through the scanner in front of go-smtp's DATA reader. Whatever the
// cuts, the content must end where RFC 5321 ends it (the first CRLF.CRLF,
// the DATA line's CRLF counting), carry no bare CR any more, report a bare
// CR and the smuggling pattern exactly when the content has them, and hand
// out what follows the end unchanged.
func FuzzDataScanner(f *testing.F) {
	for _, s := range []string{
		"a\r\n.\r\n", ".\r\n", "x\r\n.\rMAIL FROM:<a@b>\r\n.\r\n", "x\r\n.\r.\r\nRSET\r\n", "x\r\r\n.\r\nNOOP\r\n",
		"x\r\n.\r\r\n.\r\n", "\n.\n\r\n.\r\n", "..\r\n..\r\n.\r\n", ".\rX\r\n.\r\n", "no end\r",
	} {
		f.Add([]byte(s), []byte{3, 1, 7})
	}
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		w := &wireConn{Conn: &scanConn{data: append([]byte(nil), in...), sizes: sizes}}
		w.dataNext.Store(true)
		var data, rest []byte
		inData := true
		for j := 0; ; j++ {
			n := 1
			if len(sizes) > 0 {
				n = int(sizes[(j+1)%len(sizes)])%8 + 1
			}
			p := make([]byte, n)
			k, err := w.Read(p)
			if inData {
				data = append(data, p[:k]...)
			} else {
				rest = append(rest, p[:k]...)
			}
			inData = inData && w.inData
			if err != nil {
				break
			}
		}
		end := len(in)
		if i := bytes.Index(append([]byte("\r\n"), in...), []byte("\r\n.\r\n")); i >= 0 {
			end = i + 3
		}
		if inData != (end == len(in) && !bytes.HasSuffix(append([]byte("\r\n"), in...), []byte("\r\n.\r\n"))) {
			t.Fatalf("end of data: scanner still in data %v, reference end %d of %d", inData, end, len(in))
		}
		if len(data) != end || !bytes.Equal(rest, in[end:]) {
			t.Fatalf("content %q / rest %q, want %d bytes / %q", data, rest, end, in[end:])
		}
		var bare, smuggled bool
		for i := 0; i < end; i++ {
			if in[i] != '\r' || i+1 < end && in[i+1] == '\n' {
				if data[i] != in[i] {
					t.Fatalf("byte %d changed: %q -> %q", i, in[i], data[i])
				}
				continue
			}
			bare = true
			if data[i] != '\n' {
				t.Fatalf("bare CR at %d handed out as %q", i, data[i])
			}
			if i >= 1 && in[i-1] == '.' && (i == 1 || i >= 3 && in[i-3] == '\r' && in[i-2] == '\n') {
				smuggled = true
			}
		}
		if gs, gb := w.dataFlags(); gs != smuggled || gb != bare {
			t.Fatalf("flags smuggled=%v bareCR=%v, want %v %v for %q", gs, gb, smuggled, bare, in[:end])
		}
	})
}
