package main

// Tests of the webhooks ([[webhooks]], events.go, relay/webhook) against
// the real "sluice serve": receivers are real HTTP servers on loopback
// that check each event's signature the way the documentation tells a
// platform to (HMAC-SHA256 over "timestamp." + body), and its body against
// the webhooks of docs/openapi.yaml. Events are made the way users make
// them: a message the screen holds, a burst of new recipients that
// suspends a login, a quota refusal, a hard bounce, a delivery.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const whSecret = "wh-secret-0123456789abcdefghij"

// whGot is one request a receiver saw.
type whGot struct {
	id, typ string
	data    map[string]any
	body    []byte
	header  http.Header
	sigTime int64
	sigOK   bool
	at      time.Time
}

// whReceiver is a platform's webhook endpoint: a net/http server on a
// fixed loopback address that can be stopped (connections refused) and
// started again.
type whReceiver struct {
	t    testing.TB
	addr string

	mu      sync.Mutex
	srv     *http.Server
	got     []whGot
	status  func(n int) int // answer to the n-th request (from 1); nil: 204
	stall   chan struct{}   // when set, the next request waits for it to close
	arrived chan struct{}   // closed when the stalled request is in
}

func whStartReceiver(t testing.TB) *whReceiver {
	t.Helper()
	r := &whReceiver{t: t, addr: freeAddr(t)}
	r.start()
	t.Cleanup(func() {
		r.release()
		r.stop()
	})
	return r
}

func (r *whReceiver) url() string { return "http://" + r.addr + "/hooks/sluice" }

func (r *whReceiver) start() {
	r.t.Helper()
	l, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("receiver listen %s again: %v", r.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve)}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(l)
}

// stop closes the listener: Sluice's connections are refused.
func (r *whReceiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// stallNext makes the next request wait, with its body read, until
// release; arrived is closed when it is in.
func (r *whReceiver) stallNext() (arrived <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stall, r.arrived = make(chan struct{}), make(chan struct{})
	return r.arrived
}

func (r *whReceiver) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stall != nil {
		close(r.stall)
		r.stall = nil
	}
}

func (r *whReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.Method != http.MethodPost || req.URL.Path != "/hooks/sluice" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	g := whGot{body: body, header: req.Header.Clone(), at: time.Now()}
	var ev struct {
		ID   string         `json:"id"`
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	json.Unmarshal(body, &ev)
	g.id, g.typ, g.data = ev.ID, ev.Type, ev.Data
	g.sigTime, g.sigOK = whVerify(req.Header.Get("Sluice-Signature"), body)
	r.mu.Lock()
	stall, arrived := r.stall, r.arrived
	r.stall, r.arrived = nil, nil
	r.got = append(r.got, g)
	n := len(r.got)
	status := r.status
	r.mu.Unlock()
	if stall != nil {
		close(arrived)
		<-stall
	}
	code := http.StatusNoContent
	if status != nil {
		code = status(n)
	}
	w.WriteHeader(code)
}

// whVerify checks a Sluice-Signature header as the documentation says a
// receiver does: t=UNIX,v1=hex(HMAC-SHA256(secret, "UNIX." + body)).
func whVerify(header string, body []byte) (int64, bool) {
	var ts int64
	var sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts, _ = strconv.ParseInt(v, 10, 64)
		case "v1":
			sig = v
		}
	}
	m := hmac.New(sha256.New, []byte(whSecret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return ts, ts > 0 && hmac.Equal([]byte(sig), []byte(hex.EncodeToString(m.Sum(nil))))
}

func (r *whReceiver) requests() []whGot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]whGot(nil), r.got...)
}

// byType counts the requests of each event type.
func (r *whReceiver) byType() map[string]int {
	n := map[string]int{}
	for _, g := range r.requests() {
		n[g.typ]++
	}
	return n
}

// whTOML is one [[webhooks]] table; events nil leaves the key out.
func whTOML(r *whReceiver, events []string) string {
	s := fmt.Sprintf("\n[[webhooks]]\nurl = %q\nsecret = %q\n", r.url(), whSecret)
	if events != nil {
		q := make([]string, len(events))
		for i, e := range events {
			q[i] = strconv.Quote(e)
		}
		s += "events = [" + strings.Join(q, ", ") + "]\n"
	}
	return s
}

// whOutbox lists the events waiting in the server's outbox.
func whOutbox(t testing.TB, dataDir string) []map[string]any {
	t.Helper()
	dir := filepath.Join(dataDir, "outbox")
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // sent and removed meanwhile
		}
		var m map[string]any
		if json.Unmarshal(data, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// checkEvent checks what every request must be: signed now, headers that
// name it, and a body of the documented shape.
func whCheckEvent(t testing.TB, spec *admSpec, g whGot) {
	t.Helper()
	if !g.sigOK {
		t.Errorf("%s %s: Sluice-Signature %q does not verify with the secret", g.typ, g.id, g.header.Get("Sluice-Signature"))
	}
	if d := g.at.Sub(time.Unix(g.sigTime, 0)); d < -2*time.Second || d > time.Minute {
		t.Errorf("%s %s: signature time is %v off the time of the request", g.typ, g.id, d)
	}
	if g.header.Get("Sluice-Event") != g.typ || g.header.Get("Sluice-Event-Id") != g.id || g.header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: headers %v", g.typ, g.id, g.header)
	}
	hook := admMap(admMap(spec.root["webhooks"])[g.typ])
	schema := admMap(admMap(admMap(admMap(admMap(hook["post"])["requestBody"])["content"])["application/json"])["schema"])
	if schema == nil {
		t.Errorf("event type %q is not among the webhooks of docs/openapi.yaml", g.typ)
		return
	}
	var v any
	if err := json.Unmarshal(g.body, &v); err != nil {
		t.Errorf("%s: body is not JSON: %v", g.typ, err)
	}
	for _, e := range spec.validate(schema, v, g.typ+" event") {
		t.Errorf("docs/openapi.yaml: %s", e)
	}
}

var (
	whHold  = testUser{addr: "hold@wh.test", password: "hold-secret-pw-2", grants: []string{"@wh.test"}}
	whBurst = testUser{addr: "burst@wh.test", password: "burst-secret-pw-2", grants: []string{"@wh.test"}}
	whQuota = testUser{addr: "quota@q.wh.test", password: "quota-secret-pw-2", grants: []string{"@q.wh.test"}}
)

const whScreenTOML = `
[screen]
new_recipients_per_hour = 3

[screen.overrides."hold@wh.test"]
attachments = "hold"

[quota.domains."q.wh.test"]
per_login = 1
`

// whHeldMessage is a message with an .exe attachment from login, which
// the screen holds for logins with attachments = "hold".
func whHeldMessage(login, subject string) []byte {
	return crlf(screenAttach(login, subject, `filename="setup.exe"`, `application/octet-stream`, []byte("not a program")))
}

// whSendHeld submits a message the screen holds and returns its queue ID.
func whSendHeld(t testing.TB, s *sluiceServer, subject string) string {
	t.Helper()
	return opsMustQueue(t, s.submission, false, whHold, "ok@remote.test", whHeldMessage(whHold.addr, subject))
}

// TestWebhookEvents: three receivers, one for every type, one with the
// default selection (all but message.delivered), one for quota.reached
// only. Each gets each of its events once, signed, documented; none gets a
// type it did not select; quota.reached comes once for many refusals, and
// login.suspended once for a login that trips the rule twice.
func TestWebhookEvents(t *testing.T) {
	t.Parallel()
	all, def, quota := whStartReceiver(t), whStartReceiver(t), whStartReceiver(t)
	sink := whStartSink(t)
	spec := admLoadSpec(t)
	s := startServerWith(t, sink.relayTOML()+whScreenTOML+
		whTOML(all, []string{"message.held", "login.suspended", "quota.reached", "message.bounced", "message.delivered"})+
		whTOML(def, nil)+whTOML(quota, []string{"quota.reached"}),
		alice, whHold, whBurst, whQuota)

	// Held by the screen.
	heldIDs := map[string]bool{whSendHeld(t, s, "held setup"): true}

	// Suspended: 4 first-time recipients against a threshold of 3, then
	// 4 more in the same session; both messages are held.
	c := opsLogin(t, s.submission, false, whBurst)
	for i, batch := range [][]string{{"a1", "a2", "a3", "a4"}, {"b1", "b2", "b3", "b4"}} {
		for j := range batch {
			batch[j] += "@remote.test"
		}
		r, err := c.sendMany(whBurst.addr, batch, opsMessage(whBurst.addr, batch[0], "burst"+opsLetters(i)))
		id, ok := r.queued()
		if err != nil || !ok {
			t.Fatalf("burst message %d: %v %v, want 250 queued (held)", i+1, r, err)
		}
		heldIDs[id] = true
	}
	c.quit()
	if code := whAuthCode(t, s, whBurst); code != 535 {
		t.Errorf("AUTH of the suspended login: %d, want 535", code)
	}

	// Quota: one recipient an hour; the next three are refused.
	deliveredIDs := map[string]bool{opsMustQueue(t, s.submission, false, whQuota, "ok@remote.test", opsMessage(whQuota.addr, "ok@remote.test", "qa")): true}
	for i := range 3 {
		r, err := opsSendOne(s.submission, false, whQuota, "ok@remote.test", opsMessage(whQuota.addr, "ok@remote.test", "qb"+opsLetters(i)))
		if err != nil || r.code != 451 || !strings.HasPrefix(r.text, "4.7.1 ") {
			t.Fatalf("over-quota message %d: %v %v, want 451 4.7.1", i+1, r, err)
		}
	}

	// A hard bounce and a delivery.
	bounced := opsMustQueue(t, s.submission, false, alice, "unknown@remote.test", opsMessage(alice.addr, "unknown@remote.test", "bnc"))
	deliveredIDs[opsMustQueue(t, s.submission, false, alice, "ok@remote.test", opsMessage(alice.addr, "ok@remote.test", "dlv"))] = true

	// Wait until nothing more can come: the spool holds only the held
	// messages (every delivery, the DSN included, is over), the outbox is
	// empty and every receiver has what it should.
	want := map[*whReceiver]map[string]int{
		all:   {"message.held": 3, "login.suspended": 1, "quota.reached": 1, "message.bounced": 1, "message.delivered": 3},
		def:   {"message.held": 3, "login.suspended": 1, "quota.reached": 1, "message.bounced": 1},
		quota: {"quota.reached": 1},
	}
	opsWait(t, opsTimeout, "deliveries over, outbox empty, every receiver served", func() (bool, string) {
		ids := spoolIDs(t, s.dataDir)
		out := whOutbox(t, s.dataDir)
		state := fmt.Sprintf("spool %d, outbox %d", len(ids), len(out))
		done := len(ids) == len(heldIDs) && len(out) == 0
		for r, w := range want {
			n := r.byType()
			state += fmt.Sprintf("; %s got %v", r.addr, n)
			for typ, k := range w {
				done = done && n[typ] >= k
			}
		}
		return done, state
	})

	eventID := map[string]map[string]bool{} // type -> ids across receivers
	for r, w := range want {
		if n := r.byType(); fmt.Sprint(n) != fmt.Sprint(w) {
			t.Errorf("receiver %s got %v, want exactly %v", r.addr, n, w)
		}
		seen := map[string]bool{}
		var delivRcpts []string
		for _, g := range r.requests() {
			whCheckEvent(t, spec, g)
			if seen[g.id] {
				t.Errorf("receiver %s got event %s twice", r.addr, g.id)
			}
			seen[g.id] = true
			if eventID[g.typ] == nil {
				eventID[g.typ] = map[string]bool{}
			}
			eventID[g.typ][g.id] = true
			d := g.data
			switch g.typ {
			case "message.held":
				if !heldIDs[fmt.Sprint(d["queue_id"])] || d["reason"] == "" {
					t.Errorf("message.held %v: not one of the held messages %v", d, heldIDs)
				}
			case "login.suspended":
				if d["login"] != whBurst.addr || !strings.HasPrefix(fmt.Sprint(d["reason"]), "suspended for suspected abuse") || d["disabled_in_sluice"] != true {
					t.Errorf("login.suspended %v", d)
				}
			case "quota.reached":
				next, err := time.Parse(time.RFC3339, fmt.Sprint(d["next_fit"]))
				if d["login"] != whQuota.addr || d["scope"] != "login:"+whQuota.addr || d["limit"] != 1.0 || err != nil || !next.After(time.Now()) {
					t.Errorf("quota.reached %v", d)
				}
			case "message.bounced":
				if d["queue_id"] != bounced || d["rcpt"] != "unknown@remote.test" || d["category"] != "mailbox-unknown" ||
					d["login"] != alice.addr || d["from"] != alice.addr {
					t.Errorf("message.bounced %v, want queue_id %s, rcpt unknown@remote.test, category mailbox-unknown, login and from %s", d, bounced, alice.addr)
				}
			case "message.delivered":
				delivRcpts = append(delivRcpts, fmt.Sprint(d["rcpt"]))
				if d["rcpt"] == "ok@remote.test" && (!deliveredIDs[fmt.Sprint(d["queue_id"])] || d["login"] != d["from"] || d["login"] == "") {
					t.Errorf("message.delivered %v, want one of the queue ids %v with its login and sender", d, deliveredIDs)
				}
			}
		}
		sort.Strings(delivRcpts)
		if r == all && strings.Join(delivRcpts, " ") != "alice@example.test ok@remote.test ok@remote.test" {
			t.Errorf("message.delivered for %v, want the 2 messages to ok@remote.test and the DSN to alice@example.test", delivRcpts)
		}
	}
	// One event, one id, whichever receivers get it.
	for typ, want := range map[string]int{"message.held": 3, "login.suspended": 1, "quota.reached": 1, "message.bounced": 1, "message.delivered": 3} {
		if n := len(eventID[typ]); n != want {
			t.Errorf("%s: %d distinct event ids across receivers, want %d", typ, n, want)
		}
	}
}

// TestWebhookRetryAndRestart: a receiver that answers 500, or refuses
// connections, gets the event once it is back; events pending when Sluice
// is killed (-9) are sent after the restart, each once; an event whose
// answer was lost in the kill comes again with the same id (at least
// once, as docs/openapi.yaml says).
func TestWebhookRetryAndRestart(t *testing.T) {
	t.Parallel()
	r := whStartReceiver(t)
	sink := whStartSink(t)
	s := startServerWith(t, sink.relayTOML()+whScreenTOML+whTOML(r, []string{"message.held"}), whHold)
	// drained waits for the outbox to empty and the receiver to have seen
	// wantRequests requests, and returns how many requests carried each
	// queue ID's event, and their event ids.
	drained := func(t *testing.T, what string, wantRequests int) (map[string]int, map[string][]string) {
		t.Helper()
		opsWait(t, opsTimeout, what, func() (bool, string) {
			out := whOutbox(t, s.dataDir)
			return len(out) == 0 && len(r.requests()) == wantRequests, fmt.Sprintf("outbox %v; %d requests", out, len(r.requests()))
		})
		n, ids := map[string]int{}, map[string][]string{}
		for _, g := range r.requests() {
			q := fmt.Sprint(g.data["queue_id"])
			n[q]++
			ids[q] = append(ids[q], g.id)
		}
		return n, ids
	}

	t.Run("500-then-ok", func(t *testing.T) {
		r.mu.Lock()
		r.status = func(n int) int {
			if n == 1 {
				return http.StatusInternalServerError
			}
			return http.StatusNoContent
		}
		r.mu.Unlock()
		a := whSendHeld(t, s, "retry after 500")
		n, ids := drained(t, "the event sent again after the 500", 2)
		reqs := r.requests()
		if n[a] != 2 || ids[a][0] != ids[a][1] || string(reqs[0].body) != string(reqs[1].body) {
			t.Errorf("requests for %s: %d with ids %v, want the 500 and one retry of the same event", a, n[a], ids[a])
		}
		if d := reqs[1].at.Sub(reqs[0].at); d < 4*time.Second {
			t.Errorf("retry %v after the 500, want the documented 5 s backoff", d)
		}
		for _, g := range reqs {
			whCheckEvent(t, admLoadSpec(t), g)
		}
	})

	t.Run("refused-then-up", func(t *testing.T) {
		r.stop()
		b := whSendHeld(t, s, "retry after refusal")
		opsWait(t, opsTimeout, "a refused try recorded in the outbox", func() (bool, string) {
			out := whOutbox(t, s.dataDir)
			return len(out) == 1 && out[0]["attempts"].(float64) >= 1 && strings.Contains(fmt.Sprint(out[0]["last_error"]), "refused"), fmt.Sprintf("%v", out)
		})
		r.start()
		if n, _ := drained(t, "the event sent once the receiver is up", 3); n[b] != 1 {
			t.Errorf("event of %s received %d times, want once", b, n[b])
		}
	})

	t.Run("kill-9-with-events-pending", func(t *testing.T) {
		r.stop()
		var cs []string
		for i := range 3 {
			cs = append(cs, whSendHeld(t, s, "pending "+opsLetters(i)))
		}
		if out := whOutbox(t, s.dataDir); len(out) != 3 {
			t.Fatalf("outbox after 3 held messages: %d events, want 3 on disk before the 250", len(out))
		}
		s.kill9()
		s.restart()
		r.start()
		n, _ := drained(t, "the 3 pending events sent after the restart", 6)
		for _, c := range cs {
			if n[c] != 1 {
				t.Errorf("event of %s received %d times after the restart, want once", c, n[c])
			}
		}
	})

	t.Run("kill-9-before-the-answer", func(t *testing.T) {
		arrived := r.stallNext()
		d := whSendHeld(t, s, "answer lost")
		select {
		case <-arrived:
		case <-time.After(opsTimeout):
			t.Fatal("the event did not reach the receiver")
		}
		s.kill9() // the receiver has the event; Sluice never hears the answer
		r.release()
		s.restart()
		n, ids := drained(t, "the event sent again after the restart", 8)
		if n[d] != 2 || ids[d][0] != ids[d][1] {
			t.Errorf("event of %s: %d requests with ids %v, want it again with the same id", d, n[d], ids[d])
		}
	})
}

// whSend logs in as u on a new STARTTLS connection and sends one message;
// it returns the reply that ended the transaction, or the AUTH reply.
func whSend(t testing.TB, s *sluiceServer, u testUser, from, to string, msg []byte) opsReply {
	t.Helper()
	c, err := opsDial(s.submission, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.quit()
	if code, text, err := c.auth(u.addr, u.password); err != nil || code != 235 {
		return opsReply{"AUTH", code, text}
	}
	r, err := c.send(from, to, msg)
	if err != nil {
		t.Fatalf("sending as %s: %v", u.addr, err)
	}
	return r
}

// whAuthCode is the reply code to AUTH PLAIN for u.
func whAuthCode(t testing.TB, s *sluiceServer, u testUser) int {
	t.Helper()
	code, _ := shsAuth(t, s.submission, false, u)
	return code
}

// whSink is the smarthost of the servers under test (here and in the
// admin API tests). RCPT to unknown@... gets 550 5.1.1 (a hard bounce,
// which Sluice suppresses), to later@... 451 (deferred); the rest is
// accepted and recorded by queue ID.
type whSink struct {
	addr string
	mu   sync.Mutex
	byID map[string]int
	rcpt map[string]int
}

func whStartSink(t testing.TB) *whSink {
	t.Helper()
	k := &whSink{byID: map[string]int{}, rcpt: map[string]int{}}
	k.addr = startSMTPSink(t, "sink.wh.test", func() smtp.Session { return &whSinkSession{k: k} })
	return k
}

// relayTOML delivers through the sink; a deferred message waits an hour.
func (k *whSink) relayTOML() string { return smarthostTOML(k.addr, "1h") }

func (k *whSink) delivered(id string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.byID[id]
}

func (k *whSink) deliveredTo(rcpt string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rcpt[rcpt]
}

type whSinkSession struct {
	k     *whSink
	rcpts []string
}

func (s *whSinkSession) Reset()                               { s.rcpts = nil }
func (s *whSinkSession) Logout() error                        { return nil }
func (s *whSinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *whSinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch strings.SplitN(to, "@", 2)[0] {
	case "unknown":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: to + ": no such mailbox here"}
	case "later":
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy, try later"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *whSinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if m := opsReceivedIDRe.FindSubmatch(b); m != nil {
		s.k.byID[string(m[1])]++
	}
	for _, rc := range s.rcpts {
		s.k.rcpt[rc]++
	}
	return nil
}
