package main

// DKIM end to end: keys made with "sluice dkim keygen", published in a test
// DNS server, messages submitted to a running "sluice serve", and the
// spooled bytes checked by three independent verifiers:
//
//   - dkimpy (Debian python3-dkim) through testdata/dkimverify.py, which
//     checks every signature of the message on its own;
//   - libopendkim through opendkim-testmsg (opendkim-tools), which asks
//     glibc's resolver: the test DNS server listens on 127.0.0.x:53 and the
//     verifier runs in a private mount namespace whose /etc/resolv.conf
//     names that server;
//   - go-msgauth's dkim.Verify with a LookupTXT that asks the test server.
//
// Each verifier must also reject the same message with one byte changed,
// so that none of them can pass by not checking.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"sluice/relay/dnstest"
)

// dkimBob is a second login, of another domain.
var dkimBob = testUser{addr: "bob@other.test", password: "bob-secret-pw", grants: []string{"@other.test"}}

// dkimSignTimeout bounds how long the server may take to start signing with
// a key after a CLI command (it polls the keyring every second).
const dkimSignTimeout = 15 * time.Second

// ---------------------------------------------------------------- DNS

// dkimDNS is the test DNS server with the records the test published.
type dkimDNS struct {
	srv *dnstest.Server
	// resolvConf names srv; empty when srv could not get port 53 (then
	// opendkim-testmsg cannot use it, and noResolv says why).
	resolvConf string
	noResolv   string

	mu        sync.Mutex
	published map[string]string // record name, no trailing dot -> TXT value
}

// dkimNextOctet spreads the test servers of one process over 127.0.0.x.
var dkimNextOctet atomic.Int32

// dkimStartDNS starts a dnstest server on port 53 of a free 127.0.0.x
// address (libopendkim asks glibc's resolver, which only knows port 53),
// or, where port 53 cannot be bound, on a free port of 127.0.0.1.
func dkimStartDNS(t *testing.T) *dkimDNS {
	t.Helper()
	d := &dkimDNS{published: map[string]string{}}
	var lastErr error
	for i := 0; i < 40 && d.srv == nil; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 153+int(dkimNextOctet.Add(1)-1)%80)
		srv, err := dnstest.Listen(ip + ":53")
		if err != nil {
			lastErr = err
			if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
				break // not root: no port 53 anywhere
			}
			continue
		}
		d.srv = srv
		d.resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
		conf := "# written by dkim_test.go\nnameserver " + ip + "\noptions timeout:2 attempts:2\n"
		if err := os.WriteFile(d.resolvConf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if d.srv == nil {
		d.noResolv = fmt.Sprintf("cannot serve DNS on port 53 of 127.0.0.x (%v); opendkim-testmsg resolves only through /etc/resolv.conf", lastErr)
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s; on CI the tests run as root and must bind it", d.noResolv)
		}
		srv, err := dnstest.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		d.srv = srv
	}
	t.Cleanup(d.srv.Close)
	return d
}

// publish puts a key record in DNS the way an operator would: the
// quoted strings of the zone line joined into one value.
func (d *dkimDNS) publish(t *testing.T, rec dkimRecord) {
	t.Helper()
	d.srv.Add(t, rec.name+". 3600 IN TXT \""+rec.value+"\"")
	d.mu.Lock()
	d.published[rec.name] = rec.value
	d.mu.Unlock()
	if got, err := d.lookupTXT(rec.name); err != nil || len(got) != 1 || got[0] != rec.value {
		t.Fatalf("test DNS answers %q for %s (err %v), want the published %q", got, rec.name, err, rec.value)
	}
}

// lookupTXT asks the test server (over the network, as every verifier does).
func (d *dkimDNS) lookupTXT(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.srv.Resolver().LookupTXT(ctx, strings.TrimSuffix(name, "."))
}

// recordsFile writes what the test server answers for every published
// name, as JSON for dkimverify.py.
func (d *dkimDNS) recordsFile(t *testing.T) string {
	t.Helper()
	d.mu.Lock()
	names := make([]string, 0, len(d.published))
	for n := range d.published {
		names = append(names, n)
	}
	d.mu.Unlock()
	recs := map[string]string{}
	for _, n := range names {
		txt, err := d.lookupTXT(n)
		if err != nil || len(txt) != 1 {
			t.Fatalf("test DNS: TXT %s: %q, %v", n, txt, err)
		}
		recs[n] = txt[0]
	}
	data, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ---------------------------------------------------------------- CLI

// dkimRecord is one zone line printed by "sluice dkim keygen" or "record".
type dkimRecord struct {
	name  string // selector._domainkey.domain, no trailing dot
	value string // the quoted strings joined
	line  string
}

var (
	dkimZoneLineRe = regexp.MustCompile(`^([a-z0-9._-]+)\. 3600 IN TXT \( ((?:"[^"]*" )+)\)$`)
	dkimQuotedRe   = regexp.MustCompile(`"([^"]*)"`)
	dkimTXTRe      = regexp.MustCompile(`^v=DKIM1; k=(rsa|ed25519); p=([A-Za-z0-9+/]+=*)$`)
)

// dkimZoneLines parses the zone lines of a CLI output and checks their form:
// strings of at most 255 bytes, valid zone-file syntax, a DKIM1 record.
func dkimZoneLines(t *testing.T, out string) []dkimRecord {
	t.Helper()
	var recs []dkimRecord
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, " IN TXT ") {
			continue
		}
		m := dkimZoneLineRe.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("zone line not of the form `NAME. 3600 IN TXT ( \"...\" )`: %q", line)
		}
		var value strings.Builder
		for _, q := range dkimQuotedRe.FindAllStringSubmatch(m[2], -1) {
			if len(q[1]) > 255 {
				t.Errorf("zone line has a string of %d bytes (a TXT string holds 255): %q", len(q[1]), line)
			}
			value.WriteString(q[1])
		}
		rec := dkimRecord{name: m[1], value: value.String(), line: line}
		if !dkimTXTRe.MatchString(rec.value) {
			t.Errorf("record %s = %q, want \"v=DKIM1; k=rsa|ed25519; p=BASE64\"", rec.name, rec.value)
		}
		// What a DNS server loading the line as printed would serve.
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Errorf("zone line does not parse as a zone file record: %v\n%s", err, line)
		} else if txt, ok := rr.(*dns.TXT); !ok || strings.Join(txt.Txt, "") != rec.value {
			t.Errorf("zone line parses to %v, want TXT %q", rr, rec.value)
		}
		recs = append(recs, rec)
	}
	return recs
}

// dkimKeygen runs "sluice dkim keygen" and returns its records, in the
// order printed.
func dkimKeygen(t *testing.T, s *sluiceServer, domain, selector, algo string) []dkimRecord {
	t.Helper()
	r := s.cli("dkim", "keygen", domain, "--selector", selector, "--algo", algo)
	if r.exit != 0 {
		t.Fatalf("sluice dkim keygen %s --selector %s --algo %s:\n%s", domain, selector, algo, r)
	}
	recs := dkimZoneLines(t, r.stdout)
	var want []string
	switch algo {
	case "both":
		want = []string{selector + "-rsa", selector + "-ed25519"}
	default:
		want = []string{selector}
	}
	if len(recs) != len(want) {
		t.Fatalf("keygen --algo %s printed %d zone lines, want %d:\n%s", algo, len(recs), len(want), r.stdout)
	}
	for i, rec := range recs {
		if rec.name != want[i]+"._domainkey."+domain {
			t.Errorf("keygen record %d is for %s, want %s._domainkey.%s", i, rec.name, want[i], domain)
		}
	}
	return recs
}

// dkimListRow is one line of "sluice dkim list".
type dkimListRow struct{ domain, selector, algo, state, signing string }

func dkimList(t *testing.T, s *sluiceServer) map[string]dkimListRow {
	t.Helper()
	r := s.cli("dkim", "list")
	if r.exit != 0 {
		t.Fatalf("sluice dkim list:\n%s", r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) == 0 || strings.Join(strings.Fields(lines[0]), " ") != "DOMAIN SELECTOR ALGO STATE SIGNING CREATED" {
		t.Fatalf("sluice dkim list: unexpected header:\n%s", r.stdout)
	}
	rows := map[string]dkimListRow{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 6 {
			t.Fatalf("sluice dkim list: line %q does not have 6 columns", l)
		}
		rows[f[0]+"/"+f[1]] = dkimListRow{f[0], f[1], f[2], f[3], f[4]}
	}
	return rows
}

// dkimWantList checks states in "sluice dkim list": want maps
// "domain/selector" to "STATE SIGNING".
func dkimWantList(t *testing.T, s *sluiceServer, want map[string]string) {
	t.Helper()
	rows := dkimList(t, s)
	for k, w := range want {
		row, ok := rows[k]
		if !ok {
			t.Errorf("sluice dkim list has no key %s: %v", k, rows)
			continue
		}
		if got := row.state + " " + row.signing; got != w {
			t.Errorf("sluice dkim list: %s is %q, want %q", k, got, w)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("sluice dkim list shows %d keys, want %d: %v", len(rows), len(want), rows)
	}
}

// ---------------------------------------------------------------- SMTP

// dkimSubmit sends msg over STARTTLS with AUTH PLAIN, the way a program
// would that writes its own message, and returns the queue ID.
func dkimSubmit(t *testing.T, s *sluiceServer, u testUser, to string, msg []byte) string {
	t.Helper()
	c := dialSMTP(t, s.submission)
	defer c.conn.Close()
	code, text := c.cmd("EHLO client.sluice.test")
	checkReply(t, "EHLO", code, text, 250, "")
	c.startTLS()
	code, text = c.cmd("EHLO client.sluice.test")
	checkReply(t, "EHLO after STARTTLS", code, text, 250, "")
	code, text = c.cmd("AUTH PLAIN %s", plainIR(u.addr, u.password))
	checkReply(t, "AUTH PLAIN", code, text, 235, "2.0.0")
	code, text = c.cmd("MAIL FROM:<%s> BODY=8BITMIME", u.addr)
	checkReply(t, "MAIL FROM", code, text, 250, "")
	code, text = c.cmd("RCPT TO:<%s>", to)
	checkReply(t, "RCPT TO", code, text, 250, "")
	code, text = c.cmd("DATA")
	checkReply(t, "DATA", code, text, 354, "")
	w := c.tp.DotWriter()
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	code, text, err := c.tp.ReadResponse(0)
	if err != nil {
		t.Fatalf("reply to the message: %v", err)
	}
	id := queueID(t, fmt.Sprintf("%d %s", code, text))
	c.cmd("QUIT")
	return id
}

// dkimCraftedMessage is what a hand-written mailer might send: a folded To
// and Subject, a signed header line and body lines of exactly 998 octets,
// an 8-bit UTF-8 body, a line starting with a dot, runs of white space and
// trailing blank lines (relaxed canonicalization's business), no
// Message-ID (Sluice adds one in front, inside what it signs).
func dkimCraftedMessage(from, tag string) []byte {
	refs := "References: <"
	refs += strings.Repeat("r", 998-len(refs)-len("@example.test>")) + "@example.test>"
	lines := []string{
		"From: Alice Example <" + from + ">",
		"To: Bob Remote <bob@remote.test>,",
		"\tCarol Remote <carol@remote.test>,",
		"  Dave   Remote <dave@remote.test>",
		"Subject: DKIM " + tag + " =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= with a subject that is long enough",
		"\tto be folded over",
		"   three lines",
		"Date: Tue, 24 Nov 2026 14:35:46 +0000",
		refs,
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 8bit",
		"",
		"Grüße aus Köln — 8-bit UTF-8: ÄÖÜ ß € 日本語 ✓",
		".a line starting with a dot",
		strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 28)[:998],
		strings.Repeat("é", 499), // 998 octets, 499 characters
		"runs   of\tspaces and tabs, and trailing white space \t ",
		"",
		"last line",
		"",
		"",
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// dkimProbe is a short message for polling until the server signs. The
// probes differ in letters (opsLetters), so that the repeat rule, which
// ignores digits, does not take a long poll for a script in a loop.
func dkimProbe(from string, n int) []byte {
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <probe@remote.test>\r\nSubject: dkim probe %s\r\n\r\nprobe %s\r\n", from, opsLetters(n), opsLetters(n)))
}

// ---------------------------------------------------------------- message parsing

// dkimFields splits the header section into its fields, each with its
// continuation lines and CRLFs, and returns the body offset.
func dkimFields(t *testing.T, msg []byte) ([][]byte, int) {
	t.Helper()
	var fields [][]byte
	pos := 0
	for {
		end := bytes.Index(msg[pos:], []byte("\r\n"))
		if end < 0 {
			t.Fatalf("message has no end of header:\n%q", msg)
		}
		line := msg[pos : pos+end+2]
		switch {
		case end == 0:
			return fields, pos + 2
		case line[0] == ' ' || line[0] == '\t':
			if len(fields) == 0 {
				t.Fatalf("message starts with a continuation line: %q", line)
			}
			fields[len(fields)-1] = msg[pos-len(fields[len(fields)-1]) : pos+end+2]
		default:
			fields = append(fields, line)
		}
		pos += end + 2
	}
}

// dkimTags parses the tags of one DKIM-Signature field (whitespace removed
// from values).
func dkimTags(field []byte) map[string]string {
	_, v, _ := bytes.Cut(field, []byte(":"))
	tags := map[string]string{}
	for _, tv := range strings.Split(string(v), ";") {
		k, val, ok := strings.Cut(tv, "=")
		if !ok {
			continue
		}
		tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(val), "")
	}
	return tags
}

func dkimIsSignature(field []byte) bool {
	return len(field) > 15 && strings.EqualFold(string(field[:15]), "DKIM-Signature:")
}

// dkimSignatures returns the tags of every DKIM-Signature, topmost first.
func dkimSignatures(t *testing.T, msg []byte) []map[string]string {
	t.Helper()
	fields, _ := dkimFields(t, msg)
	var sigs []map[string]string
	for _, f := range fields {
		if dkimIsSignature(f) {
			sigs = append(sigs, dkimTags(f))
		}
	}
	return sigs
}

// dkimOnlySignature keeps the DKIM-Signature with a=algo and drops the
// others (they do not sign each other, so what remains still verifies).
func dkimOnlySignature(t *testing.T, msg []byte, algo string) []byte {
	t.Helper()
	fields, body := dkimFields(t, msg)
	var out []byte
	kept := 0
	for _, f := range fields {
		if dkimIsSignature(f) {
			if dkimTags(f)["a"] != algo {
				continue
			}
			kept++
		}
		out = append(out, f...)
	}
	if kept != 1 {
		t.Fatalf("message has %d signatures with a=%s, want 1", kept, algo)
	}
	out = append(out, "\r\n"...)
	return append(out, msg[body:]...)
}

// dkimFlip changes one letter or digit of msg at or after offset from.
func dkimFlip(t *testing.T, msg []byte, from int) []byte {
	t.Helper()
	out := bytes.Clone(msg)
	for i := from; i < len(out); i++ {
		b := out[i]
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' {
			if b == 'x' {
				out[i] = 'y'
			} else {
				out[i] = 'x'
			}
			return out
		}
	}
	t.Fatalf("nothing to change after offset %d", from)
	return nil
}

// dkimTamperBody changes the first letter of the body.
func dkimTamperBody(t *testing.T, msg []byte) []byte {
	t.Helper()
	_, body := dkimFields(t, msg)
	return dkimFlip(t, msg, body)
}

// dkimTamperSubject changes the first letter of the Subject.
func dkimTamperSubject(t *testing.T, msg []byte) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\nSubject:"))
	if i < 0 {
		t.Fatalf("message has no Subject")
	}
	return dkimFlip(t, msg, i+len("\r\nSubject:"))
}

// ---------------------------------------------------------------- signing

// dkimSig is a signature the test expects, in header order.
type dkimSig struct{ domain, selector, algo string }

func (w dkimSig) String() string { return w.algo + " d=" + w.domain + " s=" + w.selector }

// dkimSigsOf builds the expected signatures of keygen records, in the
// order the server signs (RSA first).
func dkimSigsOf(recs []dkimRecord) []dkimSig {
	var sigs []dkimSig
	for _, r := range recs {
		sel, domain, _ := strings.Cut(r.name, "._domainkey.")
		algo := "rsa-sha256"
		if strings.Contains(r.value, "k=ed25519;") {
			algo = "ed25519-sha256"
		}
		sigs = append(sigs, dkimSig{domain, sel, algo})
	}
	sort.SliceStable(sigs, func(i, j int) bool { return sigs[i].algo > sigs[j].algo })
	return sigs
}

// dkimCheckTags checks the DKIM-Signature fields of a spooled message:
// which keys signed, and the settings Sluice signs with.
func dkimCheckTags(t *testing.T, msg []byte, want []dkimSig) {
	t.Helper()
	sigs := dkimSignatures(t, msg)
	if len(sigs) != len(want) {
		t.Fatalf("message has %d DKIM-Signature fields, want %d (%v):\n%s", len(sigs), len(want), want, dkimHead(msg))
	}
	if !bytes.HasPrefix(msg, []byte("DKIM-Signature: ")) {
		t.Errorf("spooled message does not start with its DKIM-Signature:\n%s", dkimHead(msg))
	}
	for i, sig := range sigs {
		w := want[i]
		got := dkimSig{sig["d"], sig["s"], sig["a"]}
		if got != w {
			t.Errorf("DKIM-Signature %d: %v, want %v", i, got, w)
		}
		if sig["v"] != "1" || sig["c"] != "relaxed/relaxed" || sig["bh"] == "" || sig["b"] == "" {
			t.Errorf("DKIM-Signature %d: v=%q c=%q bh=%q b=%q, want v=1 c=relaxed/relaxed and a body hash and signature",
				i, sig["v"], sig["c"], sig["bh"], sig["b"])
		}
		h := strings.ToLower(sig["h"])
		for _, need := range []string{"from:from", "subject:subject", "to:to", "date:date", "message-id:message-id", "content-transfer-encoding"} {
			if !strings.Contains(":"+h+":", ":"+need+":") {
				t.Errorf("DKIM-Signature %d: h=%s does not sign %s", i, sig["h"], need)
			}
		}
	}
}

// dkimHead is the header section, for failure messages.
func dkimHead(msg []byte) []byte {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return head
}

// dkimWaitSigning submits probe messages as u until one is signed with
// exactly the want signatures (the server reloads keys within a second),
// and returns its spooled bytes.
func dkimWaitSigning(t *testing.T, s *sluiceServer, u testUser, want []dkimSig) []byte {
	t.Helper()
	deadline := time.Now().Add(dkimSignTimeout)
	var last string
	for n := 1; ; n++ {
		id := dkimSubmit(t, s, u, "probe@remote.test", dkimProbe(u.addr, n))
		msg := readSpooled(t, s.dataDir, id).msg
		var got []dkimSig
		for _, sig := range dkimSignatures(t, msg) {
			got = append(got, dkimSig{sig["d"], sig["s"], sig["a"]})
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return msg
		}
		last = fmt.Sprint(got)
		if time.Now().After(deadline) {
			t.Fatalf("after %v the server signs %s's messages with %s, want %v", dkimSignTimeout, u.addr, last, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- tests

// TestDKIMVerifiers: for RSA, Ed25519 and both, a key made with "sluice dkim
// keygen" and published as printed signs a hand-written message (folded
// headers, 998-octet lines, 8-bit body) and a PHPMailer message, and
// dkimpy, libopendkim and go-msgauth all verify the spooled bytes, every
// signature on its own, and reject them with one byte changed.
func TestDKIMVerifiers(t *testing.T) {
	t.Parallel()
	d := dkimStartDNS(t)
	for _, tc := range []struct{ algo, selector string }{
		{"rsa", "vrsa"},
		{"ed25519", "ved"},
		{"both", "vdual"},
	} {
		t.Run(tc.algo, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, alice)
			recs := dkimKeygen(t, s, "example.test", tc.selector, tc.algo)
			for _, rec := range recs {
				d.publish(t, rec)
			}
			want := dkimSigsOf(recs)
			list := map[string]string{}
			for _, w := range want {
				list[w.domain+"/"+w.selector] = "active yes"
			}
			dkimWantList(t, s, list)
			dkimWaitSigning(t, s, alice, want)

			t.Run("crafted", func(t *testing.T) {
				sent := dkimCraftedMessage(alice.addr, tc.algo)
				id := dkimSubmit(t, s, alice, "bob@remote.test", sent)
				msg := readSpooled(t, s.dataDir, id).msg
				if !bytes.HasSuffix(msg, sent) {
					t.Fatalf("the spooled message does not end with the message as sent (8-bit and long lines untouched):\n%q", msg)
				}
				dkimVerifyAll(t, d, msg, want)
			})

			t.Run("phpmailer", func(t *testing.T) {
				subject := "PHPMailer DKIM " + tc.algo + " Grüße ✓ with a subject long enough that PHPMailer encodes and folds it over lines"
				body := "Grüße aus Köln, 8-bit body from PHPMailer (" + tc.algo + ")\n" +
					strings.Repeat("x", 998) + "\n" + strings.Repeat("ü", 499) + "\n\nend\n"
				pr, r := runPHPMailer(t, s, "tls", s.submission, alice, alice.addr, "dave@remote.test", subject, body)
				if pr.result != "ok" || r.exit != 0 {
					t.Fatalf("PHPMailer send() failed: %s\n%s", pr.errorInfo, r)
				}
				msg := readSpooled(t, s.dataDir, queueID(t, pr.dataReply)).msg
				if !bytes.Contains(msg, []byte("\r\n"+strings.Repeat("x", 998)+"\r\n")) || !bytes.Contains(msg, []byte("Köln")) {
					t.Errorf("PHPMailer did not send the 998-octet line and the 8-bit body as such:\n%s", msg)
				}
				dkimVerifyAll(t, d, msg, want)
			})
		})
	}
}

// TestDKIMUnsignedWithoutKeys: a domain without keys is accepted and
// spooled unsigned, also while the server signs for another domain.
func TestDKIMUnsignedWithoutKeys(t *testing.T) {
	t.Parallel()
	s := startServer(t, alice, dkimBob)
	check := func(when string) {
		t.Helper()
		sent := dkimCraftedMessage(alice.addr, "unsigned")
		id := dkimSubmit(t, s, alice, "bob@remote.test", sent)
		msg := readSpooled(t, s.dataDir, id).msg
		if sigs := dkimSignatures(t, msg); len(sigs) != 0 {
			t.Errorf("%s: message from example.test (no keys) has %d DKIM-Signature fields: %v", when, len(sigs), sigs)
		}
		if !bytes.HasPrefix(msg, []byte("Received: ")) || !bytes.HasSuffix(msg, sent) {
			t.Errorf("%s: unsigned message is not Received + the message as sent:\n%s", when, dkimHead(msg))
		}
	}
	check("no keys at all")

	recs := dkimKeygen(t, s, "other.test", "o1", "ed25519")
	dkimWantList(t, s, map[string]string{"other.test/o1": "active yes"})
	dkimWaitSigning(t, s, dkimBob, dkimSigsOf(recs))
	check("keys for other.test only")
}

// TestDKIMFallbackDomain: with [dkim] fallback_domain, a From domain
// without keys is signed with d= the fallback domain, and that verifies.
func TestDKIMFallbackDomain(t *testing.T) {
	t.Parallel()
	d := dkimStartDNS(t)
	s := startServerWith(t, "\n[dkim]\nfallback_domain = \"relay.test\"\n", alice)
	recs := dkimKeygen(t, s, "relay.test", "f1", "both")
	for _, rec := range recs {
		d.publish(t, rec)
	}
	dkimWantList(t, s, map[string]string{"relay.test/f1-rsa": "active yes", "relay.test/f1-ed25519": "active yes"})
	want := dkimSigsOf(recs)
	if want[0].domain != "relay.test" {
		t.Fatalf("keygen records %v", recs)
	}
	dkimWaitSigning(t, s, alice, want)
	id := dkimSubmit(t, s, alice, "bob@remote.test", dkimCraftedMessage(alice.addr, "fallback"))
	msg := readSpooled(t, s.dataDir, id).msg
	if !bytes.Contains(dkimHead(msg), []byte("\r\nFrom: Alice Example <alice@example.test>\r\n")) {
		t.Errorf("From was changed:\n%s", dkimHead(msg))
	}
	dkimVerifyAll(t, d, msg, want)
}

// TestDKIMRotation: a second key made while one signs is pending and the
// old one keeps signing; "dkim activate" switches signing to it; "dkim
// retire" retires the old one (its private key file removed). Key files
// are 0600 throughout.
func TestDKIMRotation(t *testing.T) {
	t.Parallel()
	d := dkimStartDNS(t)
	s := startServer(t, alice, dkimBob)
	keyDir := filepath.Join(s.dataDir, "dkim")

	old := dkimKeygen(t, s, "example.test", "s1", "rsa")
	d.publish(t, old[0])
	dkimWaitSigning(t, s, alice, dkimSigsOf(old))

	r := s.cli("dkim", "keygen", "example.test", "--selector", "s2", "--algo", "rsa")
	if r.exit != 0 {
		t.Fatalf("keygen s2:\n%s", r)
	}
	if !strings.Contains(r.stdout, "selector s2 (pending)") || !strings.Contains(r.stdout, "sluice dkim activate example.test s2") {
		t.Errorf("keygen of a second key does not say it is pending and how to activate it:\n%s", r.stdout)
	}
	next := dkimZoneLines(t, r.stdout)
	if len(next) != 1 {
		t.Fatalf("keygen s2 printed %d zone lines:\n%s", len(next), r.stdout)
	}
	d.publish(t, next[0])
	dkimWantList(t, s, map[string]string{"example.test/s1": "active yes", "example.test/s2": "pending no"})

	// The server has read the index with s2 in it once it signs for
	// other.test, whose key was made after s2.
	other := dkimKeygen(t, s, "other.test", "o1", "ed25519")
	dkimWaitSigning(t, s, dkimBob, dkimSigsOf(other))
	id := dkimSubmit(t, s, alice, "bob@remote.test", dkimCraftedMessage(alice.addr, "pending"))
	dkimCheckTags(t, readSpooled(t, s.dataDir, id).msg, dkimSigsOf(old))

	r = s.cli("dkim", "activate", "example.test", "s2")
	if r.exit != 0 || !strings.Contains(r.stdout, "example.test selector s2: activated") {
		t.Fatalf("dkim activate:\n%s", r)
	}
	dkimWaitSigning(t, s, alice, dkimSigsOf(next))
	dkimWantList(t, s, map[string]string{"example.test/s1": "active no", "example.test/s2": "active yes", "other.test/o1": "active yes"})

	r = s.cli("dkim", "retire", "example.test", "s1")
	if r.exit != 0 || !strings.Contains(r.stdout, "example.test selector s1: retired") {
		t.Fatalf("dkim retire:\n%s", r)
	}
	dkimWantList(t, s, map[string]string{"example.test/s1": "retired no", "example.test/s2": "active yes", "other.test/o1": "active yes"})
	if _, err := os.Stat(filepath.Join(keyDir, "example.test", "s1.rsa.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the retired key's private key file is still there (stat: %v)", err)
	}
	r = s.cli("dkim", "record", "example.test")
	if r.exit != 0 || strings.TrimSpace(r.stdout) != next[0].line {
		t.Errorf("dkim record example.test after retiring s1: want only the s2 line\n%s\n%s", next[0].line, r)
	}

	// Still s2 after the retirement, and it verifies everywhere.
	dkimWaitSigning(t, s, alice, dkimSigsOf(next))
	id = dkimSubmit(t, s, alice, "bob@remote.test", dkimCraftedMessage(alice.addr, "rotated"))
	dkimVerifyAll(t, d, readSpooled(t, s.dataDir, id).msg, dkimSigsOf(next))

	// Private keys and the index are readable by the server's user only.
	err := filepath.Walk(keyDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
