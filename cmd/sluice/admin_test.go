package main

// Tests of the admin API (admin.go, docs/openapi.yaml) against the real
// "sluice serve": every documented call, made the way a hosting panel
// makes it, with its effect checked where a user sees it (an SMTP login
// right after a change, the spool, the next hop). Every answer is checked
// against docs/openapi.yaml (status documented, body of the documented
// shape), and at the end every documented status must have been seen.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/screen/redistest"
)

const admToken = "adm-token-0123456789abcdefghijklmnop"

// ---------------------------------------------------------------- the server

// admServer is "sluice serve" with the admin API on, delivering to a sink.
type admServer struct {
	*sluiceServer
	base string
	sink *whSink
	spec *admSpec
}

// admStart starts a server; authKeys go into [auth], extra at the end.
func admStart(t *testing.T, authKeys, extra string, users ...testUser) *admServer {
	t.Helper()
	sink := whStartSink(t)
	httpAddr := freeAddr(t)
	cfg := authKeys + fmt.Sprintf("\n[http]\nlisten = %q\nadmin_token = %q\n", httpAddr, admToken) + sink.relayTOML() + extra
	s := &admServer{sluiceServer: startServerWith(t, cfg, users...), base: "http://" + httpAddr, sink: sink, spec: admLoadSpec(t)}
	opsWaitStatus(t, s.base+"/healthz", 200)
	return s
}

// admResp is one answer.
type admResp struct {
	status int
	header http.Header
	raw    []byte
}

func (r admResp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.raw)) }

// json decodes the body into v, failing the test when it is not JSON.
func (r admResp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.raw, v); err != nil {
		t.Fatalf("answer %s is not JSON for %T: %v", r, v, err)
	}
}

// errorText is the "error" of a JSON error answer, checked to be one line.
func (r admResp) errorText(t testing.TB) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.json(t, &e)
	if e.Error == "" || strings.Contains(e.Error, "\n") || bytes.Count(bytes.TrimSpace(r.raw), []byte("\n")) != 0 {
		t.Errorf("error answer %s is not one line of JSON with an error", r)
	}
	return e.Error
}

// do makes a request with the given Authorization header ("" for none)
// and checks the answer against the document.
func (s *admServer) do(t testing.TB, method, path, authorization, body string) admResp {
	t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := opsHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	r := admResp{status: resp.StatusCode, header: resp.Header, raw: raw}
	for _, e := range s.spec.check(method, path, r.status, r.header, raw) {
		t.Errorf("docs/openapi.yaml: %s", e)
	}
	return r
}

// call makes an authorized request and fails unless the status is want.
func (s *admServer) call(t testing.TB, want int, method, path, body string) admResp {
	t.Helper()
	r := s.do(t, method, path, "Bearer "+admToken, body)
	if r.status != want {
		t.Fatalf("%s %s %s: %s, want %d", method, path, body, r, want)
	}
	return r
}

// wantLog waits for a log line with every one of parts.
func (s *admServer) wantLog(t testing.TB, parts ...string) {
	t.Helper()
	opsWait(t, opsTimeout, "a log line with "+strings.Join(parts, " "), func() (bool, string) {
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true, ""
			}
		}
		return false, "not logged"
	})
}

var (
	admHold  = testUser{addr: "hold@adm.test", password: "hold-secret-pw-1", grants: []string{"@adm.test"}}
	admBurst = testUser{addr: "burst@adm.test", password: "burst-secret-pw-1", grants: []string{"@adm.test"}}
)

const admScreenTOML = `
[screen]
new_recipients_per_hour = 3

[screen.overrides."hold@adm.test"]
attachments = "hold"
`

// ---------------------------------------------------------------- the tests

// TestAdminAPI runs every call of the API against one server, then the
// calls that need a different one (read-only backends, the quota store
// down), and checks that every status the document lists was seen.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	s := admStart(t, "", admScreenTOML, alice, admHold, admBurst)
	t.Run("token", func(t *testing.T) { admTestToken(t, s) })
	t.Run("bad-requests", func(t *testing.T) { admTestBadRequests(t, s) })
	t.Run("logins", func(t *testing.T) { admTestLogins(t, s) })
	t.Run("held-and-queue", func(t *testing.T) { admTestHeld(t, s) })
	t.Run("suppressions", func(t *testing.T) { admTestSuppressions(t, s) })
	t.Run("suspended", func(t *testing.T) { admTestSuspended(t, s) })
	t.Run("suspension-lift", func(t *testing.T) { shsTestAdminLift(t, s) })
	t.Run("read-only-backend", admTestReadOnly)
	t.Run("read-only-backend-suspension", shsTestAdminReadOnly)
	storeDown := false
	t.Run("quota-store-down", func(t *testing.T) { storeDown = admTestStoreDown(t) })
	if t.Failed() {
		return
	}
	d := s.spec
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, op := range d.operations() {
		method, path, _ := strings.Cut(op, " ")
		_, o := d.find(method, path)
		for status := range admMap(o["responses"]) {
			key := op + " " + status
			if d.seen[key] {
				continue
			}
			if status == "503" && !storeDown {
				continue // needs redis-server, which this machine lacks
			}
			t.Errorf("docs/openapi.yaml lists %s, which no test saw the server answer", key)
		}
	}
}

// admBadAuth are Authorization headers that must all be refused.
var admBadAuth = []struct{ name, header string }{
	{"missing", ""},
	{"empty-bearer", "Bearer "},
	{"wrong-same-length", "Bearer " + strings.Repeat("x", len(admToken))},
	{"shorter", "Bearer adm-token"},
	{"correct-prefix", "Bearer " + admToken[:len(admToken)-1]},
	{"correct-plus-one", "Bearer " + admToken + "x"},
	{"much-longer", "Bearer " + strings.Repeat(admToken, 40)},
	{"basic-scheme", "Basic " + admToken},
	{"no-scheme", admToken},
	{"token-as-scheme", admToken + " " + admToken},
}

func admTestToken(t *testing.T, s *admServer) {
	paths := map[string]string{"{login}": "alice@example.test", "{id}": "0123456789ABCDEF", "{rcpt}": "x@remote.test"}
	ops := append(s.spec.operations(), "GET /api/v1/nothing-here", "PUT /api/v1/logins", "GET /api/")
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		for k, v := range paths {
			path = strings.ReplaceAll(path, k, v)
		}
		for _, b := range admBadAuth {
			t.Run(strings.ReplaceAll(op, "/", "_")+"/"+b.name, func(t *testing.T) {
				body := ""
				if method == "POST" || method == "PATCH" {
					body = `{"address":"new@example.test","password":"new-secret-pw-1"}`
				}
				r := s.do(t, method, path, b.header, body)
				if r.status != http.StatusUnauthorized {
					t.Fatalf("%s %s with Authorization %q: %s, want 401", method, path, b.header, r)
				}
				if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer ") {
					t.Errorf("401 without a WWW-Authenticate: Bearer header (got %q)", wa)
				}
				if msg := r.errorText(t); !strings.Contains(msg, "bearer token") {
					t.Errorf("401 says %q, want it to name the bearer token", msg)
				}
			})
		}
	}
	// Nothing was changed by the refused calls.
	var logins []loginJSON
	s.call(t, 200, "GET", "/api/v1/logins", "").json(t, &logins)
	if len(logins) != 3 {
		t.Errorf("after refused calls there are %d logins, want the 3 the test made: %+v", len(logins), logins)
	}
	if strings.Contains(s.stderr.String(), "admin api change") {
		t.Errorf("a refused call was logged as a change:\n%s", s.stderr.String())
	}
	s.wantLog(t, "admin api: refused", "remote=127.0.0.1:")

	// The scheme is case-insensitive (RFC 7235); unknown paths and wrong
	// methods are told apart only with the token.
	if r := s.do(t, "GET", "/api/v1/queue", "bearer "+admToken, ""); r.status != 200 {
		t.Errorf("lower-case scheme: %s, want 200", r)
	}
	r := s.call(t, 404, "GET", "/api/v1/nothing-here", "")
	if msg := r.errorText(t); !strings.Contains(msg, "openapi.yaml") {
		t.Errorf("404 for an unknown path says %q", msg)
	}
	r = s.call(t, 405, "PUT", "/api/v1/logins", "")
	if allow := r.header.Get("Allow"); allow != "GET, POST" {
		t.Errorf("405 Allow %q, want \"GET, POST\"", allow)
	}
	r.errorText(t)
}

func admTestBadRequests(t *testing.T, s *admServer) {
	for _, c := range []struct {
		name, method, path, body string
		mention                  string
	}{
		{"syntax", "POST", "/api/v1/logins", `{"address": "a@adm.test",`, "ends in the middle"},
		{"not-json", "POST", "/api/v1/logins", `address=a@adm.test`, "not valid JSON"},
		{"empty", "POST", "/api/v1/logins", ``, "empty"},
		{"array", "POST", "/api/v1/logins", `[]`, "must be a JSON object"},
		{"unknown-field", "POST", "/api/v1/logins", `{"adress":"a@adm.test","password":"a-secret-pw-1"}`, `unknown field "adress"`},
		{"quota-string", "POST", "/api/v1/logins", `{"address":"a@adm.test","password":"a-secret-pw-1","quota":"ten"}`, `"quota" must be a whole number`},
		{"quota-fraction", "PATCH", "/api/v1/logins/alice@example.test", `{"quota":1.5}`, `"quota" must be a whole number`},
		{"quota-negative", "PATCH", "/api/v1/logins/alice@example.test", `{"quota":-1}`, "quota must be 0"},
		{"grants-string", "POST", "/api/v1/logins", `{"address":"a@adm.test","password":"a-secret-pw-1","grants":"@adm.test"}`, `"grants" must be an array of strings`},
		{"disabled-string", "PATCH", "/api/v1/logins/alice@example.test", `{"disabled":"yes"}`, `"disabled" must be true or false`},
		{"two-objects", "PATCH", "/api/v1/logins/alice@example.test", `{"disabled":false}{"disabled":true}`, "more after the JSON object"},
		{"bad-address", "POST", "/api/v1/logins", `{"address":"not an address","password":"a-secret-pw-1"}`, "not a mailbox address"},
		{"no-password", "POST", "/api/v1/logins", `{"address":"a@adm.test"}`, "password is required"},
		{"short-password", "POST", "/api/v1/logins", `{"address":"a@adm.test","password":"short"}`, "8 to 1024"},
		{"bad-grant", "POST", "/api/v1/logins", `{"address":"a@adm.test","password":"a-secret-pw-1","grants":["@nodot"]}`, "@nodot"},
		{"address-change", "PATCH", "/api/v1/logins/alice@example.test", `{"address":"bob@example.test"}`, "cannot be changed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.call(t, 400, c.method, c.path, c.body)
			if msg := r.errorText(t); !strings.Contains(msg, c.mention) || strings.Contains(msg, "loginChange") {
				t.Errorf("400 says %q, want it to say %q (and no Go type names)", msg, c.mention)
			}
		})
	}
	// None of them changed anything.
	var u loginJSON
	s.call(t, 200, "GET", "/api/v1/logins/alice@example.test", "").json(t, &u)
	if u.Disabled || u.Quota != nil || len(u.Grants) != 1 {
		t.Errorf("alice after refused changes: %+v", u)
	}
	if r := s.call(t, 404, "GET", "/api/v1/logins/a@adm.test", ""); !strings.Contains(r.errorText(t), "a@adm.test") {
		t.Errorf("404 does not name the login: %s", r)
	}
}

func admTestLogins(t *testing.T, s *admServer) {
	shop := testUser{addr: "shop@adm.test", password: "shop-secret-pw-1"}
	var u loginJSON
	before := time.Now().Add(-time.Second)
	s.call(t, 201, "POST", "/api/v1/logins", `{"address":"Shop@ADM.test","password":"shop-secret-pw-1","grants":["@adm.test"],"quota":2}`).json(t, &u)
	if u.Address != shop.addr || strings.Join(u.Grants, ",") != "@adm.test" || u.Quota == nil || *u.Quota != 2 || u.Disabled || u.Created.Before(before) {
		t.Errorf("created login: %+v", u)
	}
	s.wantLog(t, `msg="admin api change"`, `what="login created"`, "by=admin_token", "remote=127.0.0.1:", "login=shop@adm.test", "grants=@adm.test", "quota=2")
	if r := s.call(t, 409, "POST", "/api/v1/logins", `{"address":"shop@adm.test","password":"other-secret-pw"}`); !strings.Contains(r.errorText(t), "exists") {
		t.Errorf("409 for a duplicate: %s", r)
	}
	var list []loginJSON
	s.call(t, 200, "GET", "/api/v1/logins", "").json(t, &list)
	if len(list) != 4 || list[3].Address != shop.addr {
		t.Errorf("list after create: %+v", list)
	}

	// The new login works right away, only for what it was granted.
	if r := whSend(t, s.sluiceServer, shop, shop.addr, "ok@remote.test", opsMessage(shop.addr, "ok@remote.test", "shopa")); r.code != 250 {
		t.Fatalf("first message of the new login: %v", r)
	}
	if r := whSend(t, s.sluiceServer, shop, "sales@other.test", "ok@remote.test", opsMessage("sales@other.test", "ok@remote.test", "shopb")); r.stage != "MAIL" || r.code != 553 {
		t.Errorf("sender not granted yet: %v, want 553 at MAIL", r)
	}
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"grants":["@adm.test","sales@other.test"]}`).json(t, &u)
	if r := whSend(t, s.sluiceServer, shop, "sales@other.test", "ok@remote.test", opsMessage("sales@other.test", "ok@remote.test", "shopc")); r.code != 250 {
		t.Errorf("sender granted by PATCH: %v, want 250", r)
	}
	s.wantLog(t, `what="login updated"`, "login=shop@adm.test", `grants="@adm.test sales@other.test"`)

	// Quota 2 is used up: usage says so, and the next recipient waits.
	var usage struct {
		Quota quotaReport `json:"quota"`
		State struct {
			Suspended, Disabled bool
			Reason              string
		} `json:"state"`
	}
	s.call(t, 200, "GET", "/api/v1/logins/shop@adm.test/usage", "").json(t, &usage)
	if usage.Quota.Login != shop.addr || usage.Quota.Limit != 2 || usage.Quota.Used != 2 || usage.Quota.Resets == "" || usage.State.Suspended || usage.State.Disabled {
		t.Errorf("usage after 2 messages with quota 2: %+v", usage)
	}
	if r := whSend(t, s.sluiceServer, shop, shop.addr, "ok@remote.test", opsMessage(shop.addr, "ok@remote.test", "shopd")); r.stage != "RCPT" || r.code != 451 || !strings.HasPrefix(r.text, "4.7.1 ") {
		t.Errorf("third message with quota 2: %v, want 451 4.7.1 at RCPT", r)
	}
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"quota":5}`)
	if r := whSend(t, s.sluiceServer, shop, shop.addr, "ok@remote.test", opsMessage(shop.addr, "ok@remote.test", "shope")); r.code != 250 {
		t.Errorf("after raising the quota to 5: %v, want 250", r)
	}
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"quota":null}`).json(t, &u)
	s.call(t, 200, "GET", "/api/v1/logins/shop@adm.test/usage", "").json(t, &usage)
	if u.Quota != nil || usage.Quota.Limit != 200 || usage.Quota.Used != 3 {
		t.Errorf("quota null: login %+v, usage %+v; want the default 200 with 3 used", u, usage.Quota)
	}
	s.wantLog(t, `what="login updated"`, "login=shop@adm.test", "quota=default")

	// Disable, enable, new password: each applies to the next login.
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"disabled":true,"reason":"unpaid invoice"}`)
	if code := whAuthCode(t, s.sluiceServer, shop); code != 535 {
		t.Errorf("AUTH of a disabled login: %d, want 535", code)
	}
	s.call(t, 200, "GET", "/api/v1/logins/shop@adm.test/usage", "").json(t, &usage)
	if !usage.State.Disabled || usage.State.Suspended || usage.State.Reason != "unpaid invoice" {
		t.Errorf("usage state of a disabled login: %+v", usage.State)
	}
	s.wantLog(t, `what="login updated"`, "disabled=true", `reason="unpaid invoice"`)
	// An operator's reason that begins with "suspended" is not a
	// suspension by the compromise rule.
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"reason":"suspended until the invoice is paid"}`)
	s.call(t, 200, "GET", "/api/v1/logins/shop@adm.test/usage", "").json(t, &usage)
	if !usage.State.Disabled || usage.State.Suspended || usage.State.Reason != "suspended until the invoice is paid" {
		t.Errorf("usage state of a login an operator disabled with a reason that begins with \"suspended\": %+v", usage.State)
	}
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"disabled":false}`).json(t, &u)
	if u.Disabled || u.Reason != "" {
		t.Errorf("enabled login: %+v", u)
	}
	if code := whAuthCode(t, s.sluiceServer, shop); code != 235 {
		t.Errorf("AUTH after enabling: %d, want 235", code)
	}
	s.call(t, 200, "PATCH", "/api/v1/logins/shop@adm.test", `{"password":"shop-new-secret-2"}`)
	if code := whAuthCode(t, s.sluiceServer, shop); code != 535 {
		t.Errorf("AUTH with the old password: %d, want 535", code)
	}
	if code := whAuthCode(t, s.sluiceServer, testUser{addr: shop.addr, password: "shop-new-secret-2"}); code != 235 {
		t.Errorf("AUTH with the new password: %d, want 235", code)
	}
	s.wantLog(t, `what="login updated"`, "password=changed")
	if strings.Contains(s.stderr.String(), "shop-new-secret-2") {
		t.Error("the password appears in the log")
	}

	// Delete: gone for SMTP and for every call.
	if r := s.call(t, 204, "DELETE", "/api/v1/logins/shop@adm.test", ""); len(r.raw) != 0 {
		t.Errorf("204 with a body: %q", r.raw)
	}
	s.wantLog(t, `what="login deleted"`, "login=shop@adm.test")
	if code := whAuthCode(t, s.sluiceServer, testUser{addr: shop.addr, password: "shop-new-secret-2"}); code != 535 {
		t.Errorf("AUTH of a deleted login: %d, want 535", code)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/logins/shop@adm.test", ""},
		{"PATCH", "/api/v1/logins/shop@adm.test", `{"quota":1}`},
		{"DELETE", "/api/v1/logins/shop@adm.test", ""},
		{"GET", "/api/v1/logins/shop@adm.test/usage", ""},
	} {
		if r := s.call(t, 404, c.method, c.path, c.body); !strings.Contains(r.errorText(t), "shop@adm.test") {
			t.Errorf("%s %s after delete: %s", c.method, c.path, r)
		}
	}
}

// admQueue is GET /api/v1/queue.
type admQueue struct {
	Messages, Held, Deferred int
	Pending                  int        `json:"recipients_pending"`
	Oldest                   *time.Time `json:"oldest_received"`
}

func admTestHeld(t *testing.T, s *admServer) {
	// Everything earlier tests sent has left the queue.
	opsWait(t, opsTimeout, "an empty queue", func() (bool, string) {
		var q admQueue
		s.call(t, 200, "GET", "/api/v1/queue", "").json(t, &q)
		return q.Messages == 0 && q.Oldest == nil, fmt.Sprintf("%+v", q)
	})
	var ids []string
	for _, subj := range []string{"held one", "held two"} {
		r := whSend(t, s.sluiceServer, admHold, admHold.addr, "ok@remote.test", whHeldMessage(admHold.addr, subj))
		id, ok := r.queued()
		if !ok {
			t.Fatalf("message for holding: %v, want 250 queued", r)
		}
		ids = append(ids, id)
	}
	deferred := opsMustQueue(t, s.submission, false, alice, "later@remote.test", opsMessage(alice.addr, "later@remote.test", "lat"))
	opsWait(t, opsTimeout, "2 held and 1 deferred in the queue summary", func() (bool, string) {
		var q admQueue
		s.call(t, 200, "GET", "/api/v1/queue", "").json(t, &q)
		return q.Messages == 3 && q.Held == 2 && q.Deferred == 1 && q.Pending == 3 && q.Oldest != nil &&
			time.Since(*q.Oldest) < time.Minute, fmt.Sprintf("%+v", q)
	})

	var held []heldJSON
	s.call(t, 200, "GET", "/api/v1/held", "").json(t, &held)
	if len(held) != 2 {
		t.Fatalf("held list: %+v, want the 2 held messages", held)
	}
	for i, h := range held {
		if h.ID != ids[i] || h.Login != admHold.addr || h.From != admHold.addr || h.Rcpts != 1 || !strings.Contains(h.Reason, "setup.exe") || time.Since(h.Received) > time.Minute {
			t.Errorf("held[%d] = %+v, want %s from %s held for setup.exe", i, h, ids[i], admHold.addr)
		}
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/api/v1/held/" + deferred + "/release", 409},
		{"DELETE", "/api/v1/held/" + deferred, 409},
		{"POST", "/api/v1/held/0000000000000000/release", 404},
		{"DELETE", "/api/v1/held/0000000000000000", 404},
		{"POST", "/api/v1/held/not-an-id/release", 404},
		{"DELETE", "/api/v1/held/0123456789ABCDEF%2Fstate", 404},
	} {
		s.call(t, c.status, c.method, c.path, "").errorText(t)
	}

	// Release one: it is delivered; delete the other: it is gone, unsent.
	var rel struct{ ID, State string }
	s.call(t, 200, "POST", "/api/v1/held/"+strings.ToLower(ids[0])+"/release", "").json(t, &rel)
	if rel.ID != ids[0] || rel.State != "released" {
		t.Errorf("release answer %+v", rel)
	}
	s.wantLog(t, `what="held message released"`, "id="+ids[0], "by=admin_token")
	opsWait(t, opsTimeout, "the released message delivered", func() (bool, string) {
		return s.sink.delivered(ids[0]) == 1, fmt.Sprintf("delivered %d times", s.sink.delivered(ids[0]))
	})
	s.call(t, 204, "DELETE", "/api/v1/held/"+ids[1], "")
	s.wantLog(t, `what="held message deleted"`, "id="+ids[1])
	if _, err := os.Stat(filepath.Join(spoolDir(s.dataDir), ids[1])); !os.IsNotExist(err) {
		t.Errorf("deleted message still in the spool: %v", err)
	}
	s.call(t, 404, "POST", "/api/v1/held/"+ids[1]+"/release", "")
	s.call(t, 200, "GET", "/api/v1/held", "").json(t, &held)
	if len(held) != 0 {
		t.Errorf("held list after release and delete: %+v", held)
	}
	opsWait(t, opsTimeout, "only the deferred message left in the queue", func() (bool, string) {
		var q admQueue
		s.call(t, 200, "GET", "/api/v1/queue", "").json(t, &q)
		return q.Messages == 1 && q.Held == 0 && q.Deferred == 1 && q.Pending == 1, fmt.Sprintf("%+v", q)
	})
	if n := s.sink.delivered(ids[1]); n != 0 {
		t.Errorf("the deleted message reached the next hop %d times", n)
	}
}

func admTestSuppressions(t *testing.T, s *admServer) {
	opsMustQueue(t, s.submission, false, alice, "unknown@remote.test", opsMessage(alice.addr, "unknown@remote.test", "unk"))
	var list []struct {
		SenderDomain string    `json:"sender_domain"`
		Rcpt         string    `json:"rcpt"`
		Reply        string    `json:"reply"`
		Since        time.Time `json:"since"`
		Until        time.Time `json:"until"`
	}
	opsWait(t, opsTimeout, "the hard bounce suppressed", func() (bool, string) {
		s.call(t, 200, "GET", "/api/v1/suppressions", "").json(t, &list)
		return len(list) == 1, fmt.Sprintf("%+v", list)
	})
	if e := list[0]; e.Rcpt != "unknown@remote.test" || e.SenderDomain != "example.test" || !strings.Contains(e.Reply, "5.1.1") || !e.Until.After(e.Since) {
		t.Errorf("suppression %+v", e)
	}
	s.call(t, 404, "DELETE", "/api/v1/suppressions/unknown@remote.test?sender_domain=other.test", "").errorText(t)
	s.call(t, 204, "DELETE", "/api/v1/suppressions/unknown%40remote.test?sender_domain=example.test", "")
	s.wantLog(t, `what="suppression deleted"`, "rcpt=unknown@remote.test", "by=admin_token")
	s.call(t, 200, "GET", "/api/v1/suppressions", "").json(t, &list)
	if len(list) != 0 {
		t.Errorf("suppressions after delete: %+v", list)
	}
	s.call(t, 404, "DELETE", "/api/v1/suppressions/unknown@remote.test", "")
}

// admTestSuspended: a login the compromise rule suspends reads suspended
// in its usage, its message is held, and enabling it lets it in again.
func admTestSuspended(t *testing.T, s *admServer) {
	id := shsTrip(t, s.sluiceServer, admBurst)
	var usage struct {
		State struct {
			Suspended, Disabled bool
			Reason              string
		} `json:"state"`
	}
	s.call(t, 200, "GET", "/api/v1/logins/burst@adm.test/usage", "").json(t, &usage)
	if !usage.State.Suspended || !usage.State.Disabled || !strings.HasPrefix(usage.State.Reason, "suspended for suspected abuse") {
		t.Errorf("usage state after the compromise rule: %+v", usage.State)
	}
	var held []heldJSON
	s.call(t, 200, "GET", "/api/v1/held", "").json(t, &held)
	if len(held) != 1 || held[0].ID != id || held[0].Rcpts != 4 || !strings.HasPrefix(held[0].Reason, "compromise: ") {
		t.Errorf("held list: %+v, want %s held by the compromise rule", held, id)
	}
	s.call(t, 204, "DELETE", "/api/v1/held/"+id, "")
	s.call(t, 200, "PATCH", "/api/v1/logins/burst@adm.test", `{"disabled":false}`)
	if code := whAuthCode(t, s.sluiceServer, admBurst); code != 235 {
		t.Errorf("AUTH after enabling the suspended login: %d, want 235", code)
	}
}

// admTestReadOnly: with only Dovecot for logins, changes answer 409; reads
// still work; usage answers for any address.
func admTestReadOnly(t *testing.T) {
	s := admStart(t, "backends = [\"dovecot\"]\n[auth.dovecot]\nsocket = \"127.0.0.1:9\"\ngrants = \"none\"\n", "")
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/logins", `{"address":"a@adm.test","password":"a-secret-pw-1"}`},
		{"PATCH", "/api/v1/logins/a@adm.test", `{"quota":1}`},
		{"DELETE", "/api/v1/logins/a@adm.test", ""},
	} {
		if r := s.call(t, 409, c.method, c.path, c.body); !strings.Contains(r.errorText(t), "read-only") {
			t.Errorf("%s %s with a read-only backend: %s", c.method, c.path, r)
		}
	}
	s.call(t, 200, "GET", "/api/v1/logins", "")
	var usage struct {
		Quota quotaReport `json:"quota"`
	}
	s.call(t, 200, "GET", "/api/v1/logins/someone@dovecot.test/usage", "").json(t, &usage)
	if usage.Quota.Login != "someone@dovecot.test" || usage.Quota.Limit != 200 {
		t.Errorf("usage of a Dovecot login: %+v", usage)
	}
}

// admTestStoreDown: with Redis stopped, usage answers 503, not 500. It
// reports whether it ran (redis-server may be missing off CI).
func admTestStoreDown(t *testing.T) bool {
	requireTool(t, "redis-server", "redis-server")
	red := redistest.Start(t)
	s := admStart(t, "", fmt.Sprintf("\n[quota]\nredis_url = %q\n", red.URL()), alice)
	s.call(t, 200, "GET", "/api/v1/logins/alice@example.test/usage", "")
	shsTestAdminRedis(t, s, red)
	red.Stop()
	if r := s.call(t, 503, "GET", "/api/v1/logins/alice@example.test/usage", ""); !strings.Contains(r.errorText(t), "quota store") {
		t.Errorf("503 says %s", r)
	}
	shsTestAdminRedisDown(t, s)
	return true
}
