package main

// One instance without Redis and a login backend Sluice cannot write
// (Dovecot): the compromise rule's suspension is kept in
// data_dir/suspended.json, refuses the login, survives kill -9, and
// `sluice user enable` lifts it (saying that the backend stays
// read-only).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/submit/dovecotauth/dovecottest"
)

func TestSuspensionOfDovecotLoginSurvivesRestart(t *testing.T) {
	t.Parallel()
	mbox := testUser{addr: "blog@dove.test", password: "blog dove pw 1"}
	dv := dovecottest.Start(t, dovecottest.User{Name: mbox.addr, Password: mbox.password})
	recv := whStartReceiver(t)
	cfg := fmt.Sprintf("backends = [\"dovecot\"]\n\n[auth.dovecot]\nsocket = %q\ngrants = \"none\"\ntimeout = \"3s\"\n", dv.Socket) +
		fmt.Sprintf("\n[screen]\nnew_recipients_per_hour = 3\nvolume_multiple = 0.0\nabuse_contact = %q\n", shsContact) +
		whTOML(recv, []string{"login.suspended"})
	s := startServerWith(t, cfg)
	if code, text := shsAuth(t, s.submission, false, mbox); code != 235 {
		t.Fatalf("AUTH of the Dovecot login: %d %s", code, text)
	}
	shsTrip(t, s, mbox)
	const why = "suspended for suspected abuse: 4 first-time recipients within an hour (threshold 3)"
	shsWantSuspended(t, s, "single", mbox, why)
	if strings.Contains(s.stderr.String(), "could not suspend login") {
		t.Errorf("the suspension of a Dovecot login was not recorded:\n%s", s.stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(s.dataDir, "suspended.json"))
	if err != nil || !strings.Contains(string(raw), `"login": "`+mbox.addr+`"`) {
		t.Fatalf("data_dir/suspended.json: %v\n%s", err, raw)
	}
	opsWait(t, opsTimeout, "the login.suspended event", func() (bool, string) {
		return recv.byType()["login.suspended"] == 1 && len(whOutbox(t, s.dataDir)) == 0, fmt.Sprint(recv.byType())
	})
	if g := recv.requests()[0]; g.data["login"] != mbox.addr || g.data["disabled_in_sluice"] != true {
		t.Errorf("login.suspended for a Dovecot login: %v, want disabled_in_sluice true", g.data)
	}

	u := hdUserShow(t, s, mbox.addr)
	if u["backend"] == "" || !strings.HasPrefix(u["backend"], "dovecot") || u["state"] != "suspended" || u["reason"] != why || u["since"] == "" {
		t.Errorf("sluice user show of the suspended Dovecot login: %v", u)
	}

	s.kill9()
	s.restart()
	shsWantSuspended(t, s, "after kill -9", mbox, why)

	r := s.cli("user", "enable", mbox.addr)
	if r.exit != 0 || !strings.Contains(r.stdout, "suspension of login "+mbox.addr+" lifted in "+filepath.Join(s.dataDir, "suspended.json")) ||
		!strings.Contains(r.stdout, "the dovecot backend is read-only for Sluice: enable only lifted Sluice's suspension") {
		t.Fatalf("sluice user enable of a Dovecot login:\n%s", r)
	}
	if code, text := shsAuth(t, s.submission, false, mbox); code != 235 {
		t.Errorf("AUTH after enable: %d %s, want 235", code, text)
	}
	// Nothing left to lift: enable and show say so, in one line, exit 1.
	for _, sub := range []string{"enable", "show"} {
		r := s.cli("user", sub, mbox.addr)
		if r.exit != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "no suspension of "+mbox.addr) || !strings.Contains(r.stderr, "which Sluice only reads") {
			t.Errorf("sluice user %s of a Dovecot login not suspended:\n%s", sub, r)
		}
	}
	// And the lift survives a restart too.
	s.kill9()
	s.restart()
	if code, text := shsAuth(t, s.submission, false, mbox); code != 235 {
		t.Errorf("AUTH after enable and kill -9: %d %s, want 235", code, text)
	}
}
