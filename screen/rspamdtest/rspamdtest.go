// Package rspamdtest runs a real Rspamd scanner (Debian's rspamd package)
// for tests: its stock rules, its workers on free loopback ports, its DNS
// pointed at a port where nothing answers (no query leaves the machine),
// the GTUBE test patterns switched on, and one Lua prefilter that answers
// "soft reject" for a marked subject, since no stock rule does so without
// Redis.
//
// Each message pattern below makes the real scanner choose one action:
//
//	GTUBEReject          "reject"
//	GTUBEAddHeader       "add header"
//	GTUBERewriteSubject  "rewrite subject"
//	SoftRejectSubject    "soft reject" with SoftRejectReason (in the Subject)
package rspamdtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The GTUBE patterns (in a message body): with enable_test_patterns the
// scanner answers the action named for each.
const (
	GTUBEReject         = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	GTUBEAddHeader      = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	GTUBERewriteSubject = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

// SoftRejectSubject anywhere in a message's Subject makes the prefilter
// answer "soft reject" with SoftRejectReason as the SMTP message, the way
// Rspamd's greylisting and rate-limit modules do (task:set_pre_result).
const (
	SoftRejectSubject = "sluice-test-soft-reject"
	SoftRejectReason  = "rate limit exceeded for this sender"
)

// softRejectLua is the prefilter behind SoftRejectSubject.
var softRejectLua = fmt.Sprintf(`
rspamd_config:register_symbol({
  name = 'SLUICE_TEST_SOFT_REJECT',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local subj = task:get_subject() or ''
    if subj:find(%q, 1, true) then
      task:set_pre_result('soft reject', %q, 'sluice_test')
    end
  end,
})
`, SoftRejectSubject, SoftRejectReason)

// startTimeout bounds the wait for the scanner's first answer to /ping
// (loading the stock rules takes a few seconds on a slow machine).
const startTimeout = 60 * time.Second

// Start runs rspamd until the test ends and returns the URL of its normal
// worker (for screen.Rspamd.URL). Without the rspamd binary the test is
// skipped, or fails when CI=true (CI installs the package).
func Start(t testing.TB) (url string) {
	t.Helper()
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rspamd not found: install the Debian package rspamd")
		}
		t.Skip("rspamd not installed (apt-get install rspamd)")
	}
	dir, err := os.MkdirTemp("", "sluice-rspamd-")
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "local")
	for _, d := range []string{filepath.Join(local, "override.d"), filepath.Join(dir, "run"), filepath.Join(dir, "db"), filepath.Join(dir, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	normal, controller := freePort(t), freePort(t)
	files := map[string]string{
		filepath.Join(local, "override.d", "worker-normal.inc"):     fmt.Sprintf("bind_socket = %q;\n", normal),
		filepath.Join(local, "override.d", "worker-controller.inc"): fmt.Sprintf("bind_socket = %q;\n", controller),
		filepath.Join(local, "override.d", "worker-proxy.inc"):      "enabled = false;\n",
		filepath.Join(local, "override.d", "options.inc"): "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 0.2s; retransmits = 1; }\n" +
			"enable_test_patterns = true;\n",
		filepath.Join(local, "rspamd.local.lua"): softRejectLua,
	}
	for name, body := range files {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uname, gname := runAs()
	cmd := exec.Command(bin, "-f", "-i", "-u", uname, "-g", gname, "-c", "/etc/rspamd/rspamd.conf",
		"--var=LOCAL_CONFDIR="+local, "--var=RUNDIR="+filepath.Join(dir, "run"),
		"--var=DBDIR="+filepath.Join(dir, "db"), "--var=LOGDIR="+filepath.Join(dir, "log"))
	logPath := filepath.Join(dir, "rspamd.out")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that its workers die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		out.Close()
		os.RemoveAll(dir)
	})
	url = "http://" + normal
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("rspamd exited at start: %s", log)
		default:
		}
		if resp, err := client.Get(url + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("rspamd did not answer /ping within %v: %s", startTimeout, log)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not a wait for an event
	}
}

// runAs is the user and group the workers run as: the test's own (rspamd
// drops to them after start).
func runAs() (uname, gname string) {
	uname, gname = "root", "root"
	if u, err := user.Current(); err == nil {
		uname = u.Username
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			gname = g.Name
		}
	}
	return uname, gname
}

// freePort is a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
