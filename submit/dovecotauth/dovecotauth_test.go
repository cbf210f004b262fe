package dovecotauth

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/submit"
	"sluice/submit/dovecotauth/dovecottest"
	"sluice/submit/userdb"
)

func TestHandshake(t *testing.T) {
	const good = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t2\nCOOKIE\tabc\nDONE\n"
	cases := []struct {
		name, in string
		plain    bool
		err      string // substring of the error; "" for success
	}{
		{"dovecot 2.3", good, true, ""},
		{"no PLAIN", "VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", false, ""},
		{"unknown line after VERSION", "VERSION\t1\t3\nFUTURE\tx\nMECH\tplain\nDONE\n", true, ""},
		{"CRLF", strings.ReplaceAll(good, "\n", "\r\n"), true, ""},
		{"version 2", "VERSION\t2\t0\nDONE\n", false, "want 1.x"},
		{"version without minor", "VERSION\t1\nDONE\n", false, "want 1.x"},
		{"version minor not a number", "VERSION\t1\tx\nDONE\n", false, "malformed VERSION"},
		{"empty VERSION", "VERSION\nDONE\n", false, "want 1.x"},
		{"DONE first", "DONE\n", false, "DONE before VERSION"},
		{"SMTP banner", "220 mail.example.test ESMTP\n", false, "is this a Dovecot auth client socket"},
		{"empty line", "\n", false, "unexpected line"},
		{"MECH without name", "VERSION\t1\t2\nMECH\nDONE\n", false, "MECH line without"},
		{"MECH empty name", "VERSION\t1\t2\nMECH\t\nDONE\n", false, "MECH line without"},
		{"closed before DONE", "VERSION\t1\t2\nMECH\tPLAIN\n", false, "closed the connection"},
		{"no newline", "VERSION\t1\t2", false, "closed the connection"},
		{"nothing", "", false, "closed the connection"},
		{"endless line", "VERSION\t1\t2\nCOOKIE\t" + strings.Repeat("x", maxLine+10) + "\nDONE\n", false, "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mechs, err := readHandshake(bufio.NewReaderSize(strings.NewReader(c.in), 4096))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if mechs["PLAIN"] != c.plain {
				t.Fatalf("PLAIN offered = %v, want %v (mechs %v)", mechs["PLAIN"], c.plain, mechs)
			}
		})
	}
}

func TestParseReply(t *testing.T) {
	cases := []struct {
		name, in string
		result   string
		id       uint64
		params   map[string]string
		err      string
	}{
		{"ok", "OK\t7\tuser=a@example.test", "OK", 7, map[string]string{"user": "a@example.test"}, ""},
		{"fail temp", "FAIL\t3\tuser=a@example.test\ttemp\treason=db down", "FAIL", 3, map[string]string{"user": "a@example.test", "temp": "", "reason": "db down"}, ""},
		{"nologin with escaped reason", "OK\t1\tnologin\treason=closed\x01tnow\x011", "OK", 1, map[string]string{"nologin": "", "reason": "closed\tnow\x01"}, ""},
		{"cont", "CONT\t2\t", "CONT", 2, map[string]string{}, ""},
		{"no id", "OK", "", 0, nil, "without a request id"},
		{"bad id", "OK\tx1", "", 0, nil, "malformed request id"},
		{"negative id", "FAIL\t-1", "", 0, nil, "malformed request id"},
		{"unknown verb", "MAYBE\t1", "", 0, nil, "unexpected answer"},
		{"empty", "", "", 0, nil, "unexpected answer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := parseReply(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Result != c.result || r.ID != c.id || len(r.Params) != len(c.params) {
				t.Fatalf("got %+v, want %s %d %v", r, c.result, c.id, c.params)
			}
			for k, v := range c.params {
				if got, ok := r.Params[k]; !ok || got != v {
					t.Errorf("param %s = %q (present %v), want %q", k, got, ok, v)
				}
			}
		})
	}
}

func TestTabEscape(t *testing.T) {
	for _, s := range []string{"", "plain", "a\tb", "line\nbreak\r", "\x01\x00mixed\t\x01"} {
		if got := tabUnescape(tabEscape(s)); got != s {
			t.Errorf("round trip of %q gave %q", s, got)
		}
		if strings.ContainsAny(tabEscape(s), "\t\n\r\x00") {
			t.Errorf("tabEscape(%q) = %q still has a separator", s, tabEscape(s))
		}
	}
}

// scripted is a loopback server that answers each connection with a
// fixed handshake and reply, for what a real Dovecot never sends.
func scripted(t *testing.T, answer func(authLine string) string, handshake string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte(handshake))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "AUTH\t") {
						c.Write([]byte(answer(line)))
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

const handshake23 = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tc\nDONE\n"

func TestMalformedServer(t *testing.T) {
	idOf := func(line string) string { return strings.Split(line, "\t")[1] }
	cases := []struct {
		name      string
		handshake string
		answer    func(string) string
		want      error // ErrUnavailable or submit.ErrBadCredentials
		contains  string
	}{
		{"garbage handshake", "HELLO\n", nil, ErrUnavailable, "unexpected line"},
		{"no PLAIN", "VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", nil, ErrUnavailable, "does not offer PLAIN"},
		{"wrong id", handshake23, func(string) string { return "OK\t999\n" }, ErrUnavailable, "answer for request 999"},
		{"garbage answer", handshake23, func(string) string { return "\x00\x01\x02\n" }, ErrUnavailable, "unexpected answer"},
		{"closed without answer", handshake23, func(string) string { return "" }, ErrUnavailable, "closed the connection"},
		{"CONT", handshake23, func(l string) string { return "CONT\t" + idOf(l) + "\t\n" }, ErrUnavailable, "asked for more"},
		{"proxy", handshake23, func(l string) string { return "OK\t" + idOf(l) + "\tnologin\tproxy\thost=127.0.0.2\n" }, ErrUnavailable, "proxy destination"},
		{"temporary failure", handshake23, func(l string) string { return "FAIL\t" + idOf(l) + "\ttemp\treason=passdb down\n" }, ErrUnavailable, "passdb down"},
		{"failure", handshake23, func(l string) string { return "FAIL\t" + idOf(l) + "\n" }, submit.ErrBadCredentials, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			answer := c.answer
			if answer == nil {
				answer = func(string) string { return "" }
			}
			cl := &Client{Addr: scripted(t, answer, c.handshake), Timeout: 3 * time.Second}
			l, err := cl.Authenticate(context.Background(), "a@example.test", "pw")
			if l != nil || !errors.Is(err, c.want) {
				t.Fatalf("got %+v, %v; want %v", l, err, c.want)
			}
			if !strings.Contains(err.Error(), c.contains) {
				t.Fatalf("error %q does not say %q", err, c.contains)
			}
		})
	}
	t.Run("silent server times out", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		quiet := make(chan struct{})
		defer close(quiet)
		go func() {
			c, err := l.Accept()
			if err == nil {
				defer c.Close()
				<-quiet // says nothing until the test ends
			}
		}()
		cl := &Client{Addr: l.Addr().String(), Timeout: 300 * time.Millisecond}
		start := time.Now()
		if _, err := cl.Authenticate(context.Background(), "a@example.test", "pw"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("error %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v with a 300ms timeout", d)
		}
	})
}

// TestDovecot authenticates against a real Dovecot over its unix socket
// and its TCP listener.
func TestDovecot(t *testing.T) {
	dv := dovecottest.Start(t,
		dovecottest.User{Name: "alice@example.test", Password: "alice pw 1"},
		dovecottest.User{Name: "blf@example.test", Password: "bcrypt pw 2", Scheme: "BLF-CRYPT"},
		dovecottest.User{Name: "closed@example.test", Password: "closed pw 3", Extra: "nologin reason=account_closed"},
	)
	users, err := userdb.Open(filepath.Join(t.TempDir(), "users.json"))
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := userdb.HashPassword("unused-password")
	if err := users.Update(func(m map[string]*userdb.User) error {
		m["alice@example.test"] = &userdb.User{Address: "alice@example.test", Hash: hash, Grants: []string{"@alias.test"}}
		m["blf@example.test"] = &userdb.User{Address: "blf@example.test", Hash: hash, Disabled: true, Suspended: true, Reason: "suspended for suspected abuse: test"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{dv.Socket, dv.Addr} {
		cl := &Client{Addr: addr, Grants: FileGrants(users), Timeout: 5 * time.Second}
		t.Run(filepath.Base(addr), func(t *testing.T) {
			cases := []struct {
				name, user, pass string
				want             error
				disabled         string // substring of the reason
				owns             string
			}{
				{"right password", "alice@example.test", "alice pw 1", nil, "", "x@alias.test"},
				{"upper-case login", "Alice@Example.TEST", "alice pw 1", nil, "", "x@alias.test"},
				{"bcrypt hash, suspended in the user file", "blf@example.test", "bcrypt pw 2", nil, "suspended for suspected abuse", "blf@example.test"},
				{"wrong password", "alice@example.test", "alice pw 2", submit.ErrBadCredentials, "", ""},
				{"suspended, wrong password", "blf@example.test", "bcrypt pw 3", submit.ErrBadCredentials, "", ""},
				{"unknown user", "nobody@example.test", "alice pw 1", submit.ErrBadCredentials, "", ""},
				{"password with tab", "alice@example.test", "alice\tpw 1", submit.ErrBadCredentials, "", ""},
				{"nologin", "closed@example.test", "closed pw 3", nil, "account_closed", "closed@example.test"},
				{"nologin, wrong password", "closed@example.test", "closed pw 4", submit.ErrBadCredentials, "", ""},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					l, err := cl.Authenticate(context.Background(), c.user, c.pass)
					if c.want != nil {
						if !errors.Is(err, c.want) || l != nil {
							t.Fatalf("got %+v, %v; want %v", l, err, c.want)
						}
						return
					}
					if err != nil {
						t.Fatalf("error %v\n%s", err, dv.Log())
					}
					if l.Name != strings.ToLower(c.user) || l.Disabled != (c.disabled != "") {
						t.Fatalf("login %+v, want name %s disabled %v", l, strings.ToLower(c.user), c.disabled != "")
					}
					if !strings.Contains(l.DisabledReason, c.disabled) {
						t.Errorf("reason %q, want one with %q", l.DisabledReason, c.disabled)
					}
					if c.owns != "" && !l.Owns(c.owns) {
						t.Errorf("login %+v does not own %s", l, c.owns)
					}
					if l.Owns("someone@elsewhere.test") {
						t.Errorf("login %+v owns a foreign address", l)
					}
				})
			}
		})
	}
	t.Run("stopped and restarted", func(t *testing.T) {
		dv.Stop()
		for _, addr := range []string{dv.Socket, dv.Addr} {
			cl := &Client{Addr: addr, Timeout: 2 * time.Second}
			if l, err := cl.Authenticate(context.Background(), "alice@example.test", "alice pw 1"); !errors.Is(err, ErrUnavailable) || l != nil {
				t.Fatalf("%s with Dovecot stopped: %+v, %v; want ErrUnavailable", addr, l, err)
			}
			if _, err := cl.Authenticate(context.Background(), "alice@example.test", "wrong"); errors.Is(err, submit.ErrBadCredentials) {
				t.Fatalf("%s with Dovecot stopped: a wrong password is reported as wrong", addr)
			}
		}
		dv.Start()
		for _, addr := range []string{dv.Socket, dv.Addr} {
			cl := &Client{Addr: addr}
			if _, err := cl.Authenticate(context.Background(), "alice@example.test", "alice pw 1"); err != nil {
				t.Fatalf("%s after restart: %v", addr, err)
			}
		}
	})
}

// FuzzServerLines feeds arbitrary server output to the handshake and
// reply parsers: they may refuse it, never panic or accept a handshake
// without VERSION.
func FuzzServerLines(f *testing.F) {
	f.Add(handshake23, "OK\t1\tuser=a@example.test")
	f.Add("VERSION\t1\nDONE\n", "FAIL\t1\ttemp")
	f.Add("\x01\n\t\tDONE\n", "CONT\t\t")
	f.Fuzz(func(t *testing.T, handshake, reply string) {
		mechs, err := readHandshake(bufio.NewReaderSize(strings.NewReader(handshake), 4096))
		if err == nil && !strings.Contains(handshake, "VERSION\t1\t") {
			t.Fatalf("handshake without VERSION 1 accepted: %q -> %v", handshake, mechs)
		}
		if r, err := parseReply(reply); err == nil && r.Result != "OK" && r.Result != "FAIL" && r.Result != "CONT" {
			t.Fatalf("reply %q parsed as %q", reply, r.Result)
		}
		tabUnescape(reply)
	})
}
