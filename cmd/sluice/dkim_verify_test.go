package main

// The independent DKIM verifiers the DKIM tests run on what Sluice signed:
// go-msgauth, dkimpy (dkimverify) and opendkim-testmsg.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// ---------------------------------------------------------------- verifiers

// dkimVerifyAll has every verifier accept msg, signed with want, and
// reject it with one body byte or one Subject byte changed.
func dkimVerifyAll(t *testing.T, d *dkimDNS, msg []byte, want []dkimSig) {
	t.Helper()
	dkimCheckTags(t, msg, want)
	if t.Failed() {
		return
	}
	t.Run("go-msgauth", func(t *testing.T) { dkimCheckGoMsgauth(t, d, msg, want) })
	t.Run("dkimpy", func(t *testing.T) { dkimCheckDkimpy(t, d, msg, want) })
	t.Run("opendkim", func(t *testing.T) { dkimCheckOpendkim(t, d, msg, want) })
}

func dkimCheckGoMsgauth(t *testing.T, d *dkimDNS, msg []byte, want []dkimSig) {
	verify := func(m []byte) []*msgdkim.Verification {
		t.Helper()
		vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(m), &msgdkim.VerifyOptions{LookupTXT: d.lookupTXT})
		if err != nil {
			t.Fatalf("go-msgauth: %v", err)
		}
		if len(vs) != len(want) {
			t.Fatalf("go-msgauth found %d signatures, want %d", len(vs), len(want))
		}
		return vs
	}
	for i, v := range verify(msg) {
		if v.Err != nil || v.Domain != want[i].domain {
			t.Errorf("go-msgauth: signature %d (%v): d=%s, %v; want it to verify", i, want[i], v.Domain, v.Err)
		}
	}
	for what, bad := range map[string][]byte{"body": dkimTamperBody(t, msg), "Subject": dkimTamperSubject(t, msg)} {
		for i, v := range verify(bad) {
			if v.Err == nil {
				t.Errorf("go-msgauth: signature %d (%v) verifies with a changed %s", i, want[i], what)
			}
		}
	}
}

// dkimPyResult is one line of testdata/dkimverify.py.
type dkimPyResult struct {
	Index int    `json:"index"`
	D     string `json:"d"`
	S     string `json:"s"`
	A     string `json:"a"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

var (
	dkimPyMu   sync.Mutex
	dkimPyPath string
)

// dkimPython returns a python3 that imports dkimpy (Debian installs it for
// /usr/bin/python3, which need not be the first python3 on PATH) and, for
// ed25519, PyNaCl.
func dkimPython(t *testing.T, ed25519 bool) string {
	t.Helper()
	dkimPyMu.Lock()
	defer dkimPyMu.Unlock()
	try := func(py, code string) bool {
		r := runCommand(t, os.TempDir(), cleanEnv(), "", py, "-c", code)
		return r.exit == 0
	}
	if dkimPyPath == "" {
		candidates := []string{"/usr/bin/python3"}
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append(candidates, p)
		}
		for _, c := range candidates {
			if _, err := os.Stat(c); err == nil && try(c, "import dkim, dkim.util; dkim.DKIM") {
				dkimPyPath = c
				break
			}
		}
	}
	if dkimPyPath == "" {
		missingTool(t, "python3 module dkim (dkimpy)", "python3-dkim")
	}
	if ed25519 && !try(dkimPyPath, "import nacl.signing") {
		missingTool(t, "python3 module nacl (dkimpy needs it for ed25519)", "python3-nacl")
	}
	return dkimPyPath
}

func dkimCheckDkimpy(t *testing.T, d *dkimDNS, msg []byte, want []dkimSig) {
	ed := false
	for _, w := range want {
		ed = ed || w.algo == "ed25519-sha256"
	}
	py := dkimPython(t, ed)
	script, err := filepath.Abs(filepath.Join("testdata", "dkimverify.py"))
	if err != nil {
		t.Fatal(err)
	}
	records := d.recordsFile(t)
	run := func(m []byte) (result, []dkimPyResult) {
		t.Helper()
		r := runCommand(t, "", cleanEnv(), string(m), py, script, records)
		if r.exit == 3 {
			missingTool(t, "python3 module nacl (dkimpy needs it for ed25519)", "python3-nacl")
		}
		var res []dkimPyResult
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var x dkimPyResult
			if err := json.Unmarshal([]byte(l), &x); err != nil {
				t.Fatalf("dkimverify.py output is not JSON lines: %v\n%s", err, r)
			}
			res = append(res, x)
		}
		if len(res) != len(want) {
			t.Fatalf("dkimpy checked %d signatures, want %d:\n%s", len(res), len(want), r)
		}
		return r, res
	}
	r, res := run(msg)
	for i, x := range res {
		got := dkimSig{x.D, x.S, x.A}
		if x.Index != i || got != want[i] || !x.OK {
			t.Errorf("dkimpy: signature %d: %v ok=%v %s; want %v to verify", x.Index, got, x.OK, x.Error, want[i])
		}
	}
	if r.exit != 0 {
		t.Errorf("dkimverify.py: %s", r)
	}
	for what, bad := range map[string][]byte{"body": dkimTamperBody(t, msg), "Subject": dkimTamperSubject(t, msg)} {
		r, res := run(bad)
		if r.exit != 1 {
			t.Errorf("dkimverify.py with a changed %s: exit %d, want 1\n%s", what, r.exit, r)
		}
		for i, x := range res {
			if x.OK {
				t.Errorf("dkimpy: signature %d (%v) verifies with a changed %s", i, want[i], what)
			}
		}
		t.Logf("dkimpy, changed %s: %s", what, strings.TrimSpace(r.stdout))
	}
}

var (
	dkimNSOnce sync.Once
	dkimNSErr  string
)

// dkimCheckOpendkim runs opendkim-testmsg in verify mode: with a good
// signature it prints nothing and exits 0.
func dkimCheckOpendkim(t *testing.T, d *dkimDNS, msg []byte, want []dkimSig) {
	bin := requireTool(t, "opendkim-testmsg", "opendkim-tools")
	requireTool(t, "unshare", "util-linux")
	requireTool(t, "mount", "mount")
	if d.resolvConf == "" {
		// On CI dkimStartDNS has failed the test already.
		t.Skipf("opendkim-testmsg not run: %s", d.noResolv)
	}
	// The verifier gets its own /etc/resolv.conf in a private mount
	// namespace; that needs root (CAP_SYS_ADMIN).
	dkimNSOnce.Do(func() {
		r := runCommand(t, "", cleanEnv(), "", "unshare", "-m", "sh", "-c",
			`mount --bind "$1" /etc/resolv.conf && cat /etc/resolv.conf`, "sh", d.resolvConf)
		if r.exit != 0 || !strings.Contains(r.stdout, "written by dkim_test.go") {
			dkimNSErr = r.String()
		}
	})
	if dkimNSErr != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot give opendkim-testmsg its own /etc/resolv.conf (unshare -m, mount --bind):\n%s", dkimNSErr)
		}
		t.Skipf("cannot give opendkim-testmsg its own /etc/resolv.conf (needs root):\n%s", dkimNSErr)
	}
	tmp := t.TempDir()
	run := func(m []byte) result {
		t.Helper()
		return runCommand(t, "", cleanEnv(), string(m), "unshare", "-m", "sh", "-c",
			`mount --bind "$1" /etc/resolv.conf && exec "$2" -t "$3"`, "sh", d.resolvConf, bin, tmp)
	}
	if r := run(msg); r.exit != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("opendkim-testmsg rejects the message signed with %v:\n%s", want, r)
	}
	// With several signatures libopendkim passes the message when one
	// passes: check each alone too.
	if len(want) > 1 {
		for _, w := range want {
			if r := run(dkimOnlySignature(t, msg, w.algo)); r.exit != 0 || r.stdout != "" || r.stderr != "" {
				t.Errorf("opendkim-testmsg rejects the %v signature on its own:\n%s", w, r)
			}
		}
	}
	type bad struct {
		what string
		msg  []byte
	}
	cases := []bad{{"body", dkimTamperBody(t, msg)}, {"Subject", dkimTamperSubject(t, msg)}}
	if len(want) > 1 {
		for _, w := range want {
			cases = append(cases, bad{"body, " + w.algo + " signature alone", dkimTamperBody(t, dkimOnlySignature(t, msg, w.algo))})
		}
	}
	for _, c := range cases {
		r := run(c.msg)
		if r.exit == 0 || !strings.Contains(r.stderr, "dkim_eom()") {
			t.Errorf("opendkim-testmsg accepts the message with a changed %s (want a dkim_eom() error and a non-zero exit):\n%s", c.what, r)
		}
		t.Logf("opendkim-testmsg, changed %s: exit %d: %s", c.what, r.exit, strings.TrimSpace(r.stderr))
	}
}
