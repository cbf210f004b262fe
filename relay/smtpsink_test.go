package relay_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// requireSmtpSink returns the path of Postfix's smtp-sink. It is skipped
// when missing, except on CI (CI=true) where it must be installed.
func requireSmtpSink(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("smtp-sink"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("smtp-sink is not installed; on CI it must be: apt-get install postfix")
	}
	t.Skip("smtp-sink is not installed (apt-get install postfix)")
	return ""
}

// startSmtpSink runs smtp-sink on ip at a free port, dumping each message
// into its own file under dir, and returns the port.
func startSmtpSink(t testing.TB, ip, dir string, extra ...string) int {
	t.Helper()
	bin := requireSmtpSink(t)
	for try := 0; try < 5; try++ {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		var args []string
		if os.Geteuid() == 0 {
			args = append(args, "-u", "root") // required when run as root
		}
		args = append(args, extra...)
		args = append(args, "-h", "sink.postfix.test", "-d", filepath.Join(dir, "%M."), fmt.Sprintf("%s:%d", ip, port), "100")
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		deadline := time.Now().Add(waitTimeout)
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", ip, port), time.Second)
			if err == nil {
				c.Close()
				t.Cleanup(stop)
				return port
			}
			select {
			case <-exited:
			case <-time.After(10 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
				stop()
				t.Fatalf("smtp-sink not listening after %v: %s", waitTimeout, stderr.String())
			}
			break
		}
		t.Logf("smtp-sink exited at start (port taken?): %s", stderr.String())
	}
	t.Fatal("smtp-sink did not start")
	return 0
}

// sinkDump is one message file written by smtp-sink -d.
type sinkDump struct {
	mailArgs string
	rcpts    []string
	helo     string
	message  string // header and body as smtp-sink received them
}

func readSinkDumps(t testing.TB, dir string) []sinkDump {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	var out []sinkDump
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var d sinkDump
		lines := strings.Split(string(raw), "\n")
		i := 0
		for ; i < len(lines); i++ {
			l := strings.TrimRight(lines[i], "\r")
			switch {
			case strings.HasPrefix(l, "X-Mail-Args: "):
				d.mailArgs = strings.TrimPrefix(l, "X-Mail-Args: ")
			case strings.HasPrefix(l, "X-Rcpt-Args: "):
				d.rcpts = append(d.rcpts, strings.TrimPrefix(l, "X-Rcpt-Args: "))
			case strings.HasPrefix(l, "X-Helo-Args: "):
				d.helo = strings.TrimPrefix(l, "X-Helo-Args: ")
			}
			if strings.HasPrefix(l, "Received: ") {
				i += 3 // smtp-sink's own three-line Received field ends its part
				break
			}
		}
		if i < len(lines) {
			d.message = strings.Join(lines[i:], "\n")
		}
		out = append(out, d)
	}
	return out
}

// Delivery to Postfix's smtp-sink, an independent SMTP implementation:
// envelope, HELO name and the exact message text (dot-stuffed lines
// included) arrive as sent, both when the sink offers PIPELINING (the
// relay sends MAIL, RCPT and DATA as one group and writes the message
// itself) and when it does not (smtp-sink -p: one command at a time,
// through go-smtp's client).
func TestDeliveryToPostfixSmtpSink(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{{"pipelining", nil}, {"no pipelining", []string{"-p"}}} {
		t.Run(tc.name, func(t *testing.T) { deliverToSmtpSink(t, tc.flags...) })
	}
}

func deliverToSmtpSink(t *testing.T, flags ...string) {
	h := newHarness(t)
	dumps := t.TempDir()
	h.port = startSmtpSink(t, "127.0.0.5", dumps, flags...)
	h.dns.Add(t, "sink.test. 300 IN MX 10 mx.sink.test.", "mx.sink.test. 300 IN A 127.0.0.5")
	h.start(nil)

	body := "First line.\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast line before the end\r\n"
	id := h.sendBody("alice@sender.test", []string{"one@sink.test", "two@sink.test"}, "postfix sink 4f0a", body)
	h.waitEmpty()
	for _, rc := range []string{"one@sink.test", "two@sink.test"} {
		if o := h.results.of(id, rc); !slices.Equal(o, []string{"delivered"}) {
			t.Errorf("%s: outcomes %v, want [delivered]", rc, o)
		}
	}

	var got []sinkDump
	eventually(t, "smtp-sink's dump file", func() bool {
		got = readSinkDumps(t, dumps)
		return len(got) == 1 && strings.Contains(got[0].message, "last line before the end")
	})
	d := got[0]
	if !strings.HasPrefix(d.mailArgs, "<alice@sender.test>") {
		t.Errorf("MAIL arguments %q", d.mailArgs)
	}
	if !slices.Equal(d.rcpts, []string{"<one@sink.test>", "<two@sink.test>"}) {
		t.Errorf("RCPT arguments %q, want both recipients in one transaction", d.rcpts)
	}
	if d.helo != "sluice.test" {
		t.Errorf("EHLO %q, want the configured sluice.test", d.helo)
	}
	msg := strings.ReplaceAll(d.message, "\r\n", "\n")
	for _, want := range []string{"Subject: postfix sink 4f0a\n", "\n.a line that starts with a dot\n", "\n..two dots\n", "\n.\nlast line before the end\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, msg)
		}
	}
}
