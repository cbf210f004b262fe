package submit_test

// End-to-end tests of the content screen in the in-process gateway: the
// pipeline is built as cmd/sluice's newPipeline builds it, and messages go
// through the real SMTP session (STARTTLS, AUTH, DATA). The link rule asks
// a real DNS server on loopback (relay/dnstest) through relay/resolver, as
// the binary does. Cases for false positives and misses found earlier fail
// with that finding; see cmd/sluice/screen_test.go.

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sluice/relay/dnstest"
	"sluice/relay/resolver"
	"sluice/screen"
	"sluice/submit"
	"sluice/submit/userdb"
)

// scrSettings are the [screen] keys the tests vary; zero values are the
// defaults of cmd/sluice/config.go.
type scrSettings struct {
	webform      string
	webformLimit int
	loopRepeats  int
	domainZones  []string
	ipZones      []string
	budget       time.Duration
	resolver     screen.HostResolver
	overrides    map[string]screen.ActionOverrides
}

// scrPipeline builds the rules in the order and with the defaults of
// cmd/sluice's newPipeline, with in-memory stores.
func scrPipeline(c scrSettings) *screen.Pipeline {
	if c.webform == "" {
		c.webform = "reject"
	}
	if c.webformLimit == 0 {
		c.webformLimit = 10
	}
	if c.loopRepeats == 0 {
		c.loopRepeats = 20
	}
	if c.budget == 0 {
		c.budget = 1500 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hourly := screen.NewMemoryStore(screen.StoreConfig{Window: time.Hour, Hold: time.Minute})
	repeats := screen.NewMemoryStore(screen.StoreConfig{Window: 10 * time.Minute, Hold: time.Minute})
	daily := screen.NewMemoryStore(screen.StoreConfig{Window: 24 * time.Hour, Hold: time.Minute})
	p := &screen.Pipeline{Log: log, Overrides: map[string]screen.ActionOverrides{}}
	p.Rules = []screen.Rule{
		screen.Headers{},
		screen.OwnHops{},
		&screen.WebForm{Mode: c.webform, Limit: c.webformLimit, Store: hourly, Log: log},
		screen.NewAttachments(screen.DefaultBlockedExtensions),
		&screen.Links{DomainZones: c.domainZones, IPZones: c.ipZones, Resolver: c.resolver, Budget: c.budget, MaxLookups: 50, Log: log},
		&screen.Repeats{Repeats: c.loopRepeats, Store: repeats, Log: log},
		&screen.Compromise{NewRecipientsPerHour: 1000, VolumeMultiple: 10, MinVolume: 200,
			History: daily, Hourly: hourly, Daily: daily, Contact: "postmaster@mx.sluice.test", Log: log},
	}
	for who, o := range c.overrides {
		p.Overrides[strings.ToLower(who)] = o
	}
	return p
}

// withScreen sets the gateway's content screen and limits fit for real
// messages (the harness keeps 64 KB and 5 recipients otherwise).
func withScreen(p *screen.Pipeline) gatewayOption {
	return func(s *submit.Server) {
		s.Screen = p
		s.Limits.MaxMessageSize = 1 << 20
		s.Limits.MaxRecipients = 20
	}
}

// withLogin adds a login (password testPassword) before the gateway starts.
func withLogin(t testing.TB, addr string, grants ...string) gatewayOption {
	return func(s *submit.Server) { addUser(t, s.Auth.(*userdb.File), addr, testPassword, grants, false) }
}

// scrBlocklistDNS is a DNS server on loopback with a domain block list
// (dbl.sluice.test) and an IP block list (zen.sluice.test).
func scrBlocklistDNS(t testing.TB) *dnstest.Server {
	d := dnstest.Start(t, "127.0.0.1:0")
	d.Add(t,
		"listed.test.dbl.sluice.test. 300 IN A 127.0.1.2",
		"listed.test.dbl.sluice.test. 300 IN TXT \"listed for phishing\"",
		"refusing.test.dbl.sluice.test. 300 IN A 127.255.255.254", // the list's "query refused" code
		"99.2.0.192.zen.sluice.test. 300 IN A 127.0.0.2",
	)
	return d
}

var scrQueuedRe = regexp.MustCompile(`queued as ([0-9A-HJKMNP-TV-Z]{16})$`)

// scrSend runs one transaction like client.send, but dot-stuffs the
// message and can ask for SMTPUTF8.
func scrSend(c *client, from string, to []string, msg []byte, utf8 bool) response {
	c.t.Helper()
	params := ""
	if utf8 {
		params = " BODY=8BITMIME SMTPUTF8"
	}
	if r := c.cmd("MAIL FROM:<%s>%s", from, params); r.code != 250 {
		return r
	}
	for _, rc := range to {
		if r := c.cmd("RCPT TO:<%s>", rc); r.code != 250 {
			return r
		}
	}
	if r := c.cmd("DATA"); r.code != 354 {
		return r
	}
	stuffed := bytes.ReplaceAll(msg, []byte("\r\n."), []byte("\r\n.."))
	if bytes.HasPrefix(stuffed, []byte(".")) {
		stuffed = append([]byte("."), stuffed...)
	}
	c.raw(string(stuffed))
	c.raw(".\r\n")
	return c.read()
}

func scrCRLF(s string) []byte {
	return []byte(strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n"))
}

// scrKnown fails a case that once showed a false positive or a miss, with
// what was found then and what came back now.
func scrKnown(t testing.TB, finding string, got response) {
	t.Helper()
	t.Fatalf("regression: %s\ngot: %v", finding, got)
}

// scrCase is one message and the reply it must get.
type scrCase struct {
	name    string
	login   string // default info@example.test
	from    string // envelope; default the login
	rcpts   []string
	msg     string // "\n" line endings
	raw     []byte // instead of msg, as it is (CRLF)
	utf8    bool
	code    int
	enh     string
	mention []string
	hold    string // for 250: Envelope.Hold must contain it ("" = not held)
	known   string
}

func (sc scrCase) run(t *testing.T, g *gateway) {
	t.Helper()
	login := sc.login
	if login == "" {
		login = "info@example.test"
	}
	from := sc.from
	if from == "" {
		from = login
	}
	msg := sc.raw
	if msg == nil {
		msg = scrCRLF(sc.msg)
	}
	c := g.login(t, login)
	before := len(queued(g, t))
	r := scrSend(c, from, sc.rcpts, msg, sc.utf8)
	c.cmd("QUIT")
	scrCheck(t, g, sc, r, msg, before)
}

// scrCheck judges reply r to sc's message msg; before is the spool's size
// before it was sent.
func scrCheck(t *testing.T, g *gateway, sc scrCase, r response, msg []byte, before int) {
	t.Helper()
	ok := r.code == sc.code && r.enhanced == sc.enh
	for _, m := range sc.mention {
		ok = ok && strings.Contains(r.text, m)
	}
	if !ok {
		if sc.known != "" {
			scrKnown(t, sc.known, r)
		}
		t.Fatalf("reply %v\nwant %d %s naming %q", r, sc.code, sc.enh, sc.mention)
	}
	if sc.code != 250 {
		if after := len(queued(g, t)); after != before {
			t.Fatalf("refused message (%v) is in the spool: %d -> %d messages", r, before, after)
		}
		return
	}
	m := scrQueuedRe.FindStringSubmatch(r.text)
	if m == nil {
		t.Fatalf("250 without a queue id: %v", r)
	}
	env, spooled, err := g.spool.Read(m[1])
	if err != nil {
		t.Fatalf("spool.Read(%s): %v", m[1], err)
	}
	if !bytes.HasSuffix(spooled, msg) {
		t.Errorf("spool %s does not end with the message as sent", m[1])
	}
	switch {
	case sc.hold == "" && env.Hold != "":
		t.Errorf("spool %s is held (%q), want it queued for delivery", m[1], env.Hold)
	case sc.hold != "" && !strings.Contains(env.Hold, sc.hold):
		t.Errorf("spool %s: Envelope.Hold = %q, want it to contain %q", m[1], env.Hold, sc.hold)
	}
}

// scrLinkMessage is a newsletter-like multipart/alternative message whose
// text and HTML parts carry link (the HTML quoted-printable, with a soft
// line break inside the URL, as newsletter tools write it).
func scrLinkMessage(subject, link string) string {
	qp := strings.ReplaceAll(link, "=", "=3D")
	if len(qp) > 12 {
		qp = qp[:12] + "=\n" + qp[12:] // soft line break inside the host name
	}
	return "From: Example News <news@example.test>\nTo: reader@remote.test\nSubject: " + subject + "\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/alternative; boundary=\"lnk\"\n\n" +
		"--lnk\nContent-Type: text/plain; charset=utf-8\n\nRead more: " + link + "\nAbout us: https://www.example.org/about\n" +
		"--lnk\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
		"<p><a href=3D\"" + qp + "\">Read more</a> | <a href=3D\"https://www.example.org/about\">About us</a></p>\n" +
		"--lnk--\n"
}

// scrHTMLOnly is a message with one base64 HTML part that links to link.
func scrHTMLOnly(subject, link string) string {
	html := "<html><body><p>Your account needs attention: <a href=\"" + link + "\">verify</a>.</p></body></html>"
	return "From: info@example.test\nTo: reader@remote.test\nSubject: " + subject + "\nMIME-Version: 1.0\n" +
		"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" + scrBase64([]byte(html)) + "\n"
}

// scrBase64 is b in base64, in lines of 76 characters.
func scrBase64(b []byte) string {
	enc := base64.StdEncoding.EncodeToString(b)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	return strings.Join(append(lines, enc), "\n")
}

// TestScreenLinksThroughDNSBlocklists: links in text and HTML parts (plain,
// quoted-printable, base64; host names, www., IP literals) are looked up in
// the block lists served by a loopback DNS server; a listed one refuses the
// message with 554 5.7.1 naming the link and the list. Clean links, a
// list's error answer (127.255.255.254) and a list that never answers do
// not refuse mail.
func TestScreenLinksThroughDNSBlocklists(t *testing.T) {
	d := scrBlocklistDNS(t)
	g := startGateway(t, withScreen(scrPipeline(scrSettings{
		domainZones: []string{"dbl.sluice.test"}, ipZones: []string{"zen.sluice.test"},
		resolver: resolver.New(d.Addr),
	})))
	cases := []scrCase{
		{name: "listed-domain-in-text-and-html", from: "news@example.test", rcpts: []string{"reader@remote.test"},
			msg:  scrLinkMessage("Offers", "https://listed.test/promo?id=1"),
			code: 554, enh: "5.7.1", mention: []string{"listed.test", "dbl.sluice.test"}},
		{name: "listed-www-host-qp-html-only", from: "news@example.test", rcpts: []string{"reader@remote.test"},
			msg: "From: news@example.test\nTo: reader@remote.test\nSubject: Offers 2\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
				"<p><a href=3D\"https://www.lis=\nted.test/deal\">Deal</a></p>\n",
			code: 554, enh: "5.7.1", mention: []string{"www.listed.test", "dbl.sluice.test"}},
		{name: "listed-domain-in-base64-html", rcpts: []string{"reader@remote.test"},
			msg:  scrHTMLOnly("Account notice", "http://listed.test/verify"),
			code: 554, enh: "5.7.1", mention: []string{"listed.test", "dbl.sluice.test"}},
		{name: "listed-IP-literal", rcpts: []string{"reader@remote.test"},
			msg:  "From: info@example.test\nTo: reader@remote.test\nSubject: Login\n\nPlease log in at http://192.0.2.99:8080/login today.\n",
			code: 554, enh: "5.7.1", mention: []string{"IP address 192.0.2.99", "zen.sluice.test"}},
		{name: "clean-links-pass", from: "news@example.test", rcpts: []string{"reader@remote.test"},
			msg:  scrLinkMessage("Clean", "https://docs.example.net/guide"),
			code: 250, enh: "2.0.0"},
		{name: "unlisted-IP-literal-passes", rcpts: []string{"reader@remote.test"},
			msg:  "From: info@example.test\nTo: reader@remote.test\nSubject: Router\n\nThe router is at http://192.0.2.1/ on the office network.\n",
			code: 250, enh: "2.0.0"},
		{name: "list-error-code-is-not-a-listing", rcpts: []string{"reader@remote.test"},
			msg:  "From: info@example.test\nTo: reader@remote.test\nSubject: Partner\n\nOur partner: https://refusing.test/\n",
			code: 250, enh: "2.0.0"},
		{name: "link-in-pdf-attachment-not-looked-up", rcpts: []string{"reader@remote.test"},
			msg: "From: info@example.test\nTo: reader@remote.test\nSubject: Report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"p\"\n\n--p\nContent-Type: text/plain\n\nSee the report.\n" +
				"--p\nContent-Type: application/pdf; name=\"r.pdf\"\nContent-Disposition: attachment; filename=\"r.pdf\"\n\n%PDF-1.4 https://listed.test/ inside binary data\n--p--\n",
			code: 250, enh: "2.0.0"},
		// URIBL/DBL lists registered domains; a link to a host under a
		// listed domain is looked up only as the full host name.
		{name: "subdomain-of-listed-domain", from: "news@example.test", rcpts: []string{"reader@remote.test"},
			msg:  scrLinkMessage("Offers 3", "https://click.listed.test/track"),
			code: 554, enh: "5.7.1", mention: []string{"listed.test", "dbl.sluice.test"},
			known: "miss: a link to click.listed.test passes although listed.test is on the domain list: only \"www.\" is stripped and the full host is queried (click.listed.test.dbl.sluice.test); the lookup should also query the registered domain (and, for DBL-style lists, the parent names up to it)"},
		// A phishing classic: the host after the user-info part is the
		// real one; the extractor stops at "@" and looks up the decoy.
		{name: "listed-host-behind-userinfo", rcpts: []string{"reader@remote.test"},
			msg:  "From: info@example.test\nTo: reader@remote.test\nSubject: Invoice\n\nPay here: https://www.example.org@listed.test/pay\n",
			code: 554, enh: "5.7.1", mention: []string{"listed.test", "dbl.sluice.test"},
			known: "miss: in https://www.example.org@listed.test/pay the host is listed.test, but the URL pattern stops at \"@\" and looks up www.example.org; skip a user-info part (anything up to the last \"@\" before the first \"/\") before taking the host"},
		// MaxLookups (50) is spent on the hosts in order of appearance:
		// 50 links to distinct harmless subdomains first hide a listed one.
		{name: "listed-link-after-50-other-hosts", from: "news@example.test", rcpts: []string{"reader@remote.test"},
			msg: func() string {
				var b strings.Builder
				b.WriteString("From: news@example.test\nTo: reader@remote.test\nSubject: Catalogue\n\n")
				for i := 1; i <= 50; i++ {
					fmt.Fprintf(&b, "Item %d: https://item%d.example.org/\n", i, i)
				}
				b.WriteString("Order: https://listed.test/order\n")
				return b.String()
			}(),
			code: 554, enh: "5.7.1", mention: []string{"listed.test", "dbl.sluice.test"},
			known: "miss: a listed link after 50 links to other hosts (item1..50.example.org) is never looked up, because the first MaxLookups queries are spent in order of appearance; reduce hosts to their registered domain before counting (item*.example.org is one query) and do not let the order decide which links are skipped"},
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, g) })
	}
}

// TestScreenLinksListNotAnswering: a block list whose server never answers
// does not refuse mail and does not hold the reply past the budget.
func TestScreenLinksListNotAnswering(t *testing.T) {
	// A UDP socket that reads queries and answers none; TCP is refused.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	budget := 300 * time.Millisecond
	g := startGateway(t, withScreen(scrPipeline(scrSettings{
		domainZones: []string{"dbl.sluice.test"}, ipZones: []string{"zen.sluice.test"},
		resolver: resolver.New(pc.LocalAddr().String()), budget: budget,
	})))
	c := g.login(t, "info@example.test")
	start := time.Now()
	r := scrSend(c, "info@example.test", []string{"reader@remote.test"},
		scrCRLF(scrLinkMessage("Slow list", "https://listed.test/promo")), false)
	took := time.Since(start)
	if r.code != 250 {
		t.Fatalf("reply %v, want 250: a list that does not answer must not refuse mail", r)
	}
	if took > budget+2*time.Second {
		t.Errorf("DATA took %v with a blocklist_budget of %v", took, budget)
	}
}

// TestScreenLinksOverrides: the links rule's action per domain and per
// login (the login's override before its domain's).
func TestScreenLinksOverrides(t *testing.T) {
	d := scrBlocklistDNS(t)
	g := startGateway(t,
		withLogin(t, "shop@example.test", "@example.test"),
		withScreen(scrPipeline(scrSettings{
			domainZones: []string{"dbl.sluice.test"}, resolver: resolver.New(d.Addr),
			overrides: map[string]screen.ActionOverrides{
				"example.test":      {"links": "defer"},
				"info@example.test": {"links": "hold"},
			},
		})))
	scrCase{name: "domain-defers", login: "shop@example.test", rcpts: []string{"reader@remote.test"},
		msg:  scrLinkMessage("Offers", "https://listed.test/a"),
		code: 451, enh: "4.7.1", mention: []string{"listed.test", "dbl.sluice.test"}}.run(t, g)
	scrCase{name: "login-holds", rcpts: []string{"reader@remote.test"},
		msg:  scrLinkMessage("Offers", "https://listed.test/b"),
		code: 250, enh: "2.0.0", hold: "links: the message contains a link to listed.test"}.run(t, g)
}

// TestScreenRulesInProcess: the other rules and modes through the
// in-process session, held messages judged by spool.Read's Envelope.Hold.
func TestScreenRulesInProcess(t *testing.T) {
	t.Run("webform-reject", func(t *testing.T) {
		g := startGateway(t, withScreen(scrPipeline(scrSettings{})))
		scrCase{rcpts: []string{"info@example.test"},
			msg:  "From: Example <info@example.test>\nTo: info@example.test\nReply-To: Vera <vera@gmail.test>\nSubject: New message from your website\n\nName: Vera\n",
			code: 550, enh: "5.7.1", mention: []string{"form@example.test", "vera@gmail.test"}}.run(t, g)
		// The login owns billing@other.test too: the advice is for the
		// From address's own domain.
		scrCase{from: "billing@other.test", rcpts: []string{"billing@other.test"},
			msg:  "From: billing@other.test\nTo: billing@other.test\nReply-To: vera@gmail.test\nSubject: Form\n\nhi\n",
			code: 550, enh: "5.7.1", mention: []string{"form@other.test"}}.run(t, g)
	})
	t.Run("webform-limit", func(t *testing.T) {
		g := startGateway(t, withScreen(scrPipeline(scrSettings{webform: "limit", webformLimit: 3})))
		for i := 0; i < 4; i++ {
			sc := scrCase{rcpts: []string{"info@example.test"},
				msg:  fmt.Sprintf("From: info@example.test\nTo: info@example.test\nReply-To: v%c@gmail.test\nSubject: Form %c\n\nName: %c\n", 'a'+i, 'a'+i, 'a'+i),
				code: 250, enh: "2.0.0"}
			if i == 3 {
				sc.code, sc.enh, sc.mention = 451, "4.7.1", []string{"limit 3", "form@example.test"}
			}
			sc.run(t, g)
		}
	})
	t.Run("webform-allow", func(t *testing.T) {
		g := startGateway(t, withScreen(scrPipeline(scrSettings{webform: "allow"})))
		scrCase{rcpts: []string{"info@example.test"},
			msg:  "From: info@example.test\nTo: info@example.test\nReply-To: v@gmail.test\nSubject: Form\n\nName: v\n",
			code: 250, enh: "2.0.0"}.run(t, g)
	})
	t.Run("loop-defer-then-hold", func(t *testing.T) {
		g := startGateway(t, withScreen(scrPipeline(scrSettings{loopRepeats: 2})))
		c := g.login(t, "info@example.test")
		for i := 1; i <= 5; i++ {
			msg := scrCRLF(fmt.Sprintf("From: info@example.test\nTo: orders@remote.test\nSubject: Ticket %d updated\n\nTicket %d changed at 12:%02d.\n", 900+i, 900+i, i))
			before := len(queued(g, t))
			r := scrSend(c, "info@example.test", []string{"orders@remote.test"}, msg, false)
			sc := scrCase{code: 250, enh: "2.0.0"}
			switch {
			case i > 4:
				sc.hold = "loop: login info@example.test sent the same message 5 times"
			case i > 2:
				sc.code, sc.enh, sc.mention = 451, "4.7.1", []string{fmt.Sprintf("same message %d times", i)}
			}
			scrCheck(t, g, sc, r, msg, before)
		}
	})
	// An override that turns a hold verdict (mail that came back through
	// this gateway) into a refusal must refuse it in words that fit.
	t.Run("loop-came-back-override-reject", func(t *testing.T) {
		g := startGateway(t, withScreen(scrPipeline(scrSettings{overrides: map[string]screen.ActionOverrides{
			"info@example.test": {"loop": "reject"},
		}})))
		c := g.login(t, "info@example.test")
		r := scrSend(c, "info@example.test", []string{"bob@remote.test"}, scrCRLF(
			"Received: from client.test (127.0.0.1)\n\tby mx.sluice.test (Sluice) with ESMTPSA id 0123456789ABCDEF\n\t(authenticated as info@example.test; TLS1.3);\n\tTue, 14 Oct 2025 09:00:00 +0000\n"+
				"From: info@example.test\nTo: bob@remote.test\nSubject: Auto: out of office\nAuto-Submitted: auto-replied\n\nI am away.\n"), false)
		if r.code != 550 || !strings.Contains(r.text, "already passed through mx.sluice.test") {
			t.Fatalf("reply %v, want 550 naming the loop", r)
		}
		if r.enhanced != "5.7.1" || strings.Contains(r.text, "held for review") {
			scrKnown(t, "bug: a hold verdict turned into reject by an override keeps the hold's enhanced code class ([2,0,0] becomes 5.0.0) and its sentence (\"it is held for review\") although the message is refused; asAction should give the loop rule a policy code (5.7.1 / 4.7.1) and the hold verdicts a sentence without the outcome, or asAction should replace the outcome clause", r)
		}
	})
	t.Run("attachments-and-headers", func(t *testing.T) {
		g := startGateway(t, withScreen(scrPipeline(scrSettings{})))
		attach := func(name, data string) string {
			return "From: info@example.test\nTo: bob@remote.test\nSubject: file\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"a\"\n\n--a\nContent-Type: text/plain\n\nsee file\n--a\n" +
				"Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"" + name + "\"\nContent-Transfer-Encoding: base64\n\n" + scrBase64([]byte(data)) + "\n--a--\n"
		}
		for _, sc := range []scrCase{
			{name: "exe-by-name", rcpts: []string{"bob@remote.test"}, msg: attach("setup.EXE", "x"),
				code: 552, enh: "5.7.0", mention: []string{"setup.EXE", ".exe"}},
			{name: "MZ-content", rcpts: []string{"bob@remote.test"}, msg: attach("photo.jpg", "MZ"+strings.Repeat("\x00", 100)),
				code: 554, enh: "5.7.1", mention: []string{"photo.jpg", "Windows program"}},
			{name: "8bit-Subject", rcpts: []string{"bob@remote.test"}, msg: "From: info@example.test\nTo: bob@remote.test\nSubject: Bestätigung\n\nhi\n",
				code: 554, enh: "5.6.0", mention: []string{"header Subject"}},
			{name: "8bit-Subject-with-SMTPUTF8", rcpts: []string{"bob@remote.test"}, utf8: true, msg: "From: info@example.test\nTo: bob@remote.test\nSubject: Bestätigung\n\nhi\n",
				code: 250, enh: "2.0.0"},
		} {
			t.Run(sc.name, func(t *testing.T) { sc.run(t, g) })
		}
	})
}

// TestScreenLegitimateMessagesWithBlocklists: the legitimate messages of
// cmd/sluice/testdata/screen/legit pass the default screen with the link
// rule active (their links are to domains the lists do not list).
func TestScreenLegitimateMessagesWithBlocklists(t *testing.T) {
	d := scrBlocklistDNS(t)
	g := startGateway(t, withScreen(scrPipeline(scrSettings{
		domainZones: []string{"dbl.sluice.test"}, ipZones: []string{"zen.sluice.test"},
		resolver: resolver.New(d.Addr),
	})))
	dir := filepath.Join("..", "cmd", "sluice", "testdata", "screen", "legit")
	files, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("%s holds %d messages, want at least 10", dir, len(files))
	}
	addrRe := regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.test`)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".eml"), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			msg := scrCRLF(string(raw))
			head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
			var from string
			var rcpts []string
			for _, line := range strings.Split(strings.ReplaceAll(string(head), "\r\n ", " "), "\r\n") {
				name, value, _ := strings.Cut(line, ":")
				switch strings.ToLower(name) {
				case "from":
					from = addrRe.FindString(value)
				case "to", "cc":
					rcpts = append(rcpts, addrRe.FindAllString(value, -1)...)
				}
			}
			if strings.Contains(f, "newsletter") {
				rcpts = nil
				for i := 1; i <= 12; i++ {
					rcpts = append(rcpts, fmt.Sprintf("subscriber%02d@remote.test", i))
				}
			}
			utf8 := bytes.ContainsFunc(head, func(r rune) bool { return r >= 0x80 })
			scrCase{from: from, rcpts: rcpts, raw: msg, utf8: utf8, code: 250, enh: "2.0.0"}.run(t, g)
		})
	}
}
