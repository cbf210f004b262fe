package dkim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// openTestRing opens a keyring in a directory that does not exist yet, as
// the server does on first start.
func openTestRing(t *testing.T) (*Keyring, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dkim")
	ring, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ring, dir
}

func generate(t *testing.T, ring *Keyring, domain, selector, algo string) []*Key {
	t.Helper()
	keys, err := ring.Generate(domain, selector, algo)
	if err != nil {
		t.Fatalf("Generate(%q, %q, %q): %v", domain, selector, algo, err)
	}
	return keys
}

// states renders every key as "domain/selector/algo=state".
func states(ring *Keyring) string {
	var out []string
	for _, k := range ring.Keys() {
		out = append(out, fmt.Sprintf("%s/%s/%s=%s", k.Domain, k.Selector, k.Algo, k.State))
	}
	return strings.Join(out, " ")
}

// signing renders the keys that sign for domain as "selector/algo".
func signing(ring *Keyring, domain string) string {
	var out []string
	for _, k := range ring.SigningKeys(domain) {
		out = append(out, k.Selector+"/"+k.Algo)
	}
	return strings.Join(out, " ")
}

// TestDKIMGenerateStates: the first key of an algorithm for a domain is
// active at once, later ones pending; "both" makes a pair of selectors;
// names are lower-cased; bad names, algorithms and taken selectors are
// refused without changing anything.
func TestDKIMGenerateStates(t *testing.T) {
	ring, dir := openTestRing(t)
	if got := signing(ring, "example.test"); got != "" {
		t.Fatalf("empty keyring signs with %q", got)
	}

	k := generate(t, ring, "Example.TEST", "S1", RSA)
	if len(k) != 1 || k[0].Domain != "example.test" || k[0].Selector != "s1" || k[0].Algo != RSA || k[0].State != Active {
		t.Fatalf("first RSA key: %+v, want example.test s1 rsa active", k[0])
	}
	if !k[0].Activated.Equal(k[0].Created) || time.Since(k[0].Created) > time.Minute {
		t.Errorf("first key: created %v, activated %v; want activated when created, now", k[0].Created, k[0].Activated)
	}
	if k := generate(t, ring, "example.test", "s2", RSA); k[0].State != Pending || !k[0].Activated.IsZero() {
		t.Errorf("second RSA key: state %s, activated %v; want pending, never activated", k[0].State, k[0].Activated)
	}
	if k := generate(t, ring, "example.test", "e1", Ed25519); k[0].State != Active {
		t.Errorf("first Ed25519 key of a domain with an RSA key: %s, want active", k[0].State)
	}
	pair := generate(t, ring, "example.test", "p1", "both")
	if len(pair) != 2 || pair[0].Selector != "p1-rsa" || pair[0].Algo != RSA || pair[1].Selector != "p1-ed25519" || pair[1].Algo != Ed25519 {
		t.Fatalf("--algo both: %+v %+v, want p1-rsa (rsa) and p1-ed25519 (ed25519)", pair[0], pair[1])
	}
	if pair[0].State != Pending || pair[1].State != Pending {
		t.Errorf("--algo both while both algorithms sign: %s %s, want pending pending", pair[0].State, pair[1].State)
	}
	if other := generate(t, ring, "other.test", "o1", "both"); other[0].State != Active || other[1].State != Active {
		t.Errorf("--algo both for a new domain: %s %s, want active active", other[0].State, other[1].State)
	}
	// RSA first: every verifier understands that one.
	if got := signing(ring, "EXAMPLE.test"); got != "s1/rsa e1/ed25519" {
		t.Errorf("example.test signs with %q, want \"s1/rsa e1/ed25519\"", got)
	}
	if got := signing(ring, "other.test"); got != "o1-rsa/rsa o1-ed25519/ed25519" {
		t.Errorf("other.test signs with %q", got)
	}

	before := states(ring)
	index, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	for _, bad := range []struct{ domain, selector, algo, want string }{
		{"example.test", "s1", RSA, "already has a key with selector s1"},
		{"example.test", "S2", Ed25519, "already has a key with selector s2"},
		{"example.test", "p1", "both", "already has a key with selector p1-rsa"},
		{"example", "x1", RSA, "not a domain name"},
		{"exa mple.test", "x1", RSA, "not a domain name"},
		{"../etc.test", "x1", RSA, "not a domain name"},
		{"example.test", "../x", RSA, "selector"},
		{"example.test", "a.b", RSA, "selector"},
		{"example.test", "-x", RSA, "selector"},
		{"example.test", "x1", "dsa", "use rsa, ed25519 or both"},
	} {
		_, err := ring.Generate(bad.domain, bad.selector, bad.algo)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Generate(%q, %q, %q) = %v, want an error containing %q", bad.domain, bad.selector, bad.algo, err, bad.want)
		}
	}
	if after := states(ring); after != before {
		t.Errorf("refused Generate calls changed the keyring:\n%s\n%s", before, after)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "index.json")); !bytes.Equal(after, index) {
		t.Errorf("refused Generate calls rewrote index.json")
	}

	// Another process (a fresh Open) sees the same keys.
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if states(again) != states(ring) || signing(again, "example.test") != signing(ring, "example.test") {
		t.Errorf("reopened keyring differs:\n%s\n%s", states(again), states(ring))
	}
}

// TestDKIMRotation: keygen a new selector (pending, the old key signs),
// activate it (it signs, the old one stays active but no longer signs),
// retire the old one (retired, private key file removed, still listed). A
// second Keyring on the same directory, as in the server process, follows
// through ReloadIfChanged.
func TestDKIMRotation(t *testing.T) {
	cli, dir := openTestRing(t)
	server, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	reload := func() {
		t.Helper()
		if err := server.ReloadIfChanged(); err != nil {
			t.Fatal(err)
		}
	}

	generate(t, cli, "example.test", "s1", "both")
	reload()
	if got := signing(server, "example.test"); got != "s1-rsa/rsa s1-ed25519/ed25519" {
		t.Fatalf("server signs with %q after the first keygen", got)
	}
	generate(t, cli, "example.test", "s2", "both")
	reload()
	if got := signing(server, "example.test"); got != "s1-rsa/rsa s1-ed25519/ed25519" {
		t.Errorf("a pending key changed signing: %q", got)
	}

	// "s2" names the pair keygen --algo both made.
	if err := cli.Activate("example.test", "S2"); err != nil {
		t.Fatal(err)
	}
	reload()
	if got := signing(server, "example.test"); got != "s2-rsa/rsa s2-ed25519/ed25519" {
		t.Errorf("after activate s2 the server signs with %q", got)
	}
	want := "example.test/s1-ed25519/ed25519=active example.test/s1-rsa/rsa=active example.test/s2-ed25519/ed25519=active example.test/s2-rsa/rsa=active"
	if got := states(server); got != want {
		t.Errorf("states after activate:\n%s\nwant\n%s", got, want)
	}

	if err := cli.Retire("example.test", "s1"); err != nil {
		t.Fatal(err)
	}
	reload()
	want = "example.test/s1-ed25519/ed25519=retired example.test/s1-rsa/rsa=retired example.test/s2-ed25519/ed25519=active example.test/s2-rsa/rsa=active"
	if got := states(server); got != want {
		t.Errorf("states after retire:\n%s\nwant\n%s", got, want)
	}
	if got := signing(server, "example.test"); got != "s2-rsa/rsa s2-ed25519/ed25519" {
		t.Errorf("after retire s1 the server signs with %q", got)
	}
	for _, f := range []string{"s1-rsa.rsa.pem", "s1-ed25519.ed25519.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "example.test", f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("retired key file %s still there (stat: %v)", f, err)
		}
	}
	for _, f := range []string{"s2-rsa.rsa.pem", "s2-ed25519.ed25519.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "example.test", f)); err != nil {
			t.Errorf("active key file %s: %v", f, err)
		}
	}
	// A keyring with retired keys (their files gone) still opens.
	if _, err := Open(dir); err != nil {
		t.Errorf("Open after retiring: %v", err)
	}

	// Retiring the signing key leaves the domain unsigned.
	if err := cli.Retire("example.test", "s2-rsa"); err != nil {
		t.Fatal(err)
	}
	reload()
	if got := signing(server, "example.test"); got != "s2-ed25519/ed25519" {
		t.Errorf("after retiring s2-rsa the server signs with %q, want only s2-ed25519", got)
	}

	for _, bad := range []struct{ op, sel string }{
		{"activate", "s1"}, {"retire", "s1"}, // retired: gone for good
		{"activate", "nope"}, {"retire", "nope"},
	} {
		var err error
		if bad.op == "activate" {
			err = cli.Activate("example.test", bad.sel)
		} else {
			err = cli.Retire("example.test", bad.sel)
		}
		if err == nil || !strings.Contains(err.Error(), "no key for example.test with selector "+bad.sel) {
			t.Errorf("%s %s: %v, want \"no key for example.test with selector %s\"", bad.op, bad.sel, err, bad.sel)
		}
	}
	// A selector that was used stays used.
	if _, err := cli.Generate("example.test", "s1-rsa", RSA); err == nil {
		t.Errorf("Generate reused the selector of a retired key")
	}
}

// TestDKIMReloadIfChanged: nothing to do while the index is unchanged;
// a keyring opened before any key exists picks up the first one.
func TestDKIMReloadIfChanged(t *testing.T) {
	server, dir := openTestRing(t)
	if err := server.ReloadIfChanged(); err != nil {
		t.Fatalf("no index yet: %v", err)
	}
	cli, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	generate(t, cli, "example.test", "s1", Ed25519)
	if err := server.ReloadIfChanged(); err != nil {
		t.Fatal(err)
	}
	keys := server.SigningKeys("example.test")
	if len(keys) != 1 || keys[0].Signer() == nil {
		t.Fatalf("server keyring after the first keygen: %v", keys)
	}
	if err := server.ReloadIfChanged(); err != nil {
		t.Fatal(err)
	}
	if again := server.SigningKeys("example.test"); len(again) != 1 || again[0] != keys[0] {
		t.Errorf("ReloadIfChanged reloaded an unchanged index")
	}
	// A broken index is an error, and the keys already loaded keep signing.
	if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := server.ReloadIfChanged(); err == nil {
		t.Errorf("ReloadIfChanged accepted a broken index.json")
	}
	if got := signing(server, "example.test"); got != "s1/ed25519" {
		t.Errorf("after a failed reload the keyring signs with %q, want the previous s1/ed25519", got)
	}
}

// TestDKIMFileModes: the keyring directory is 0700, the index and every
// private key 0600, whatever the umask lets through; private keys are
// PKCS#8 PEM of the right type and size.
func TestDKIMFileModes(t *testing.T) {
	ring, dir := openTestRing(t)
	generate(t, ring, "example.test", "s1", "both")
	generate(t, ring, "other.test", "o1", RSA)
	var pems int
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		if strings.HasSuffix(p, ".tmp") {
			t.Errorf("temporary file left behind: %s", p)
		}
		if strings.HasSuffix(p, ".pem") {
			pems++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if pems != 3 {
		t.Errorf("%d PEM files, want 3", pems)
	}

	var index []map[string]any
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(index) != 3 {
		t.Fatalf("index.json lists %d keys, want 3", len(index))
	}
	for _, k := range ring.Keys() {
		if filepath.IsAbs(k.File) || strings.Contains(k.File, "..") {
			t.Errorf("key file %q is not relative to the keyring", k.File)
		}
		raw, err := os.ReadFile(filepath.Join(dir, k.File))
		if err != nil {
			t.Fatal(err)
		}
		b, rest := pem.Decode(raw)
		if b == nil || b.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("%s is not one PKCS#8 PEM block", k.File)
		}
		priv, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", k.File, err)
		}
		switch p := priv.(type) {
		case *rsa.PrivateKey:
			if k.Algo != RSA || p.N.BitLen() != 2048 {
				t.Errorf("%s: RSA key of %d bits for algo %s, want 2048 bits", k.File, p.N.BitLen(), k.Algo)
			}
		case ed25519.PrivateKey:
			if k.Algo != Ed25519 {
				t.Errorf("%s: Ed25519 key for algo %s", k.File, k.Algo)
			}
		default:
			t.Errorf("%s: key of type %T", k.File, priv)
		}
	}
}

var (
	zoneLineRe = regexp.MustCompile(`^([a-z0-9._-]+)\. 3600 IN TXT \( ((?:"[^"]{1,255}" )+)\)$`)
	quotedRe   = regexp.MustCompile(`"([^"]*)"`)
)

// TestDKIMRecordFormat: TXT is "v=DKIM1; k=ALGO; p=BASE64" with the SPKI
// (RSA) or the raw 32-byte key (Ed25519, RFC 8463); the zone line splits it
// into strings of at most 255 bytes and is valid zone-file syntax.
func TestDKIMRecordFormat(t *testing.T) {
	ring, _ := openTestRing(t)
	keys := generate(t, ring, "example.test", "s1", "both")
	for _, k := range keys {
		if k.Name() != k.Selector+"._domainkey.example.test" {
			t.Errorf("Name() = %q", k.Name())
		}
		prefix := "v=DKIM1; k=" + k.Algo + "; p="
		txt := k.TXT()
		if !strings.HasPrefix(txt, prefix) {
			t.Fatalf("TXT() = %q, want prefix %q", txt, prefix)
		}
		p, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(txt, prefix))
		if err != nil {
			t.Fatalf("p= is not base64: %v", err)
		}
		switch k.Algo {
		case RSA:
			pub, err := x509.ParsePKIXPublicKey(p)
			if err != nil {
				t.Fatalf("RSA p= is not a SubjectPublicKeyInfo: %v", err)
			}
			if !pub.(*rsa.PublicKey).Equal(k.Signer().Public()) {
				t.Errorf("RSA p= is not the public half of the key")
			}
			if len(txt) <= 255 {
				t.Errorf("RSA-2048 record of %d bytes: the split into 255-byte strings is not exercised", len(txt))
			}
		case Ed25519:
			if !bytes.Equal(p, k.Signer().Public().(ed25519.PublicKey)) {
				t.Errorf("Ed25519 p= is not the raw 32-byte public key")
			}
		}

		line := k.ZoneLine()
		m := zoneLineRe.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("ZoneLine() = %q, want NAME. 3600 IN TXT ( \"<=255 bytes\" ... )", line)
		}
		if m[1] != k.Name() {
			t.Errorf("ZoneLine() name %q, want %q", m[1], k.Name())
		}
		var joined strings.Builder
		strs := quotedRe.FindAllStringSubmatch(m[2], -1)
		for i, q := range strs {
			if i < len(strs)-1 && len(q[1]) != 255 {
				t.Errorf("ZoneLine() string %d has %d bytes; all but the last should be full", i, len(q[1]))
			}
			joined.WriteString(q[1])
		}
		if joined.String() != txt {
			t.Errorf("ZoneLine() strings join to %q, want TXT() %q", joined.String(), txt)
		}
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("ZoneLine() is not valid zone-file syntax: %v\n%s", err, line)
		}
		if tr, ok := rr.(*dns.TXT); !ok || strings.Join(tr.Txt, "") != txt || tr.Hdr.Name != k.Name()+"." {
			t.Errorf("ZoneLine() parses to %v, want TXT %s %q", rr, k.Name(), txt)
		}
	}
}

// testPrefix and testMsg are what submit passes to Sign: the trace fields
// Sluice adds, then the client's message.
var (
	testPrefix = []byte("Received: from client.test (127.0.0.1)\r\n\tby mx.sluice.test (Sluice) with ESMTPSA id 06H0VYZRYFDR10D5\r\n\t(authenticated as alice@example.test; TLS 1.3);\r\n\tTue, 24 Nov 2026 14:35:46 +0000\r\nMessage-ID: <06h0vyzryfdr10d5@mx.sluice.test>\r\n")
	testMsg    = []byte("From: Alice <alice@example.test>\r\nTo: Bob <bob@remote.test>,\r\n\tCarol <carol@remote.test>\r\nSubject: a folded\r\n  subject\r\nDate: Tue, 24 Nov 2026 14:35:46 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Grüße — 8-bit body\r\n" + strings.Repeat("y", 998) + "\r\ntrailing  white space \t\r\n\r\n\r\n")
)

// lookupFor answers TXT queries from the keyring's own records, like the
// DNS would once they are published.
func lookupFor(t *testing.T, ring *Keyring) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		for _, k := range ring.Keys() {
			if k.Name() == strings.TrimSuffix(name, ".") && k.State != Retired {
				return []string{k.TXT()}, nil
			}
		}
		t.Logf("LookupTXT %s: no record", name)
		return nil, errors.New("no such record")
	}
}

type wantSig struct{ domain, selector, algo string }

// verifyAll checks that msg carries exactly the want signatures and that
// go-msgauth verifies every one against the keyring's records.
func verifyAll(t *testing.T, ring *Keyring, msg []byte, want []wantSig) {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: lookupFor(t, ring)})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(want) {
		t.Fatalf("%d signatures, want %d", len(vs), len(want))
	}
	fields := sigFields(msg)
	for i, v := range vs {
		if v.Err != nil {
			t.Errorf("signature %d (%v) does not verify: %v", i, want[i], v.Err)
		}
		f := fields[i]
		got := wantSig{tag(f, "d"), tag(f, "s"), tag(f, "a")}
		if got != want[i] || v.Domain != want[i].domain {
			t.Errorf("signature %d: %v (verified d=%s), want %v", i, got, v.Domain, want[i])
		}
		if tag(f, "c") != "relaxed/relaxed" {
			t.Errorf("signature %d: c=%s, want relaxed/relaxed", i, tag(f, "c"))
		}
		h := ":" + strings.ToLower(tag(f, "h")) + ":"
		for _, need := range []string{"from:from", "subject:subject", "to:to", "date:date", "message-id:message-id", "mime-version", "content-type"} {
			if !strings.Contains(h, ":"+need+":") {
				t.Errorf("signature %d: h= does not sign %s: %s", i, need, tag(f, "h"))
			}
		}
	}
}

// sigFields returns the unfolded DKIM-Signature values, topmost first.
func sigFields(msg []byte) []string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	unfolded := regexp.MustCompile(`\r\n[ \t]`).ReplaceAll(head, []byte(" "))
	var out []string
	for _, l := range strings.Split(string(unfolded), "\r\n") {
		if name, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(name, "DKIM-Signature") {
			out = append(out, v)
		}
	}
	return out
}

func tag(field, name string) string {
	for _, tv := range strings.Split(field, ";") {
		if k, v, ok := strings.Cut(tv, "="); ok && strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

func rejectsAll(t *testing.T, ring *Keyring, msg []byte, what string) {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: lookupFor(t, ring)})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatalf("%s: no signatures", what)
	}
	for i, v := range vs {
		if v.Err == nil {
			t.Errorf("%s: signature %d still verifies", what, i)
		}
	}
}

// TestDKIMSignVerify: for RSA, Ed25519 and both, the fields Sign returns,
// put in front of the parts, verify; the parts are signed as if joined
// however they are cut; one changed body byte, a changed Subject, or a
// second Subject or From (oversigning) break every signature.
func TestDKIMSignVerify(t *testing.T) {
	for _, tc := range []struct {
		algo string
		want []wantSig
	}{
		{RSA, []wantSig{{"example.test", "s1", "rsa-sha256"}}},
		{Ed25519, []wantSig{{"example.test", "s1", "ed25519-sha256"}}},
		{"both", []wantSig{{"example.test", "s1-rsa", "rsa-sha256"}, {"example.test", "s1-ed25519", "ed25519-sha256"}}},
	} {
		t.Run(tc.algo, func(t *testing.T) {
			ring, _ := openTestRing(t)
			generate(t, ring, "example.test", "s1", tc.algo)
			sigs, res, err := ring.Sign("Example.Test", "", testPrefix, testMsg)
			if err != nil {
				t.Fatal(err)
			}
			wantRes := "signed as example.test (rsa)"
			switch tc.algo {
			case Ed25519:
				wantRes = "signed as example.test (ed25519)"
			case "both":
				wantRes = "signed as example.test (rsa+ed25519)"
			}
			if res.Domain != "example.test" || res.Fallback || res.String() != wantRes {
				t.Errorf("Signing = %+v (%q), want %q", res, res.String(), wantRes)
			}
			if !bytes.HasPrefix(sigs, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(sigs, []byte("\r\n")) ||
				bytes.Count(sigs, []byte("DKIM-Signature: ")) != len(tc.want) {
				t.Fatalf("Sign returned %q, want %d DKIM-Signature fields ending in CRLF", sigs, len(tc.want))
			}
			for _, l := range bytes.Split(sigs, []byte("\r\n")) {
				if len(l) > 998 {
					t.Errorf("a DKIM-Signature line is %d octets long", len(l))
				}
			}
			msg := bytes.Join([][]byte{sigs, testPrefix, testMsg}, nil)
			verifyAll(t, ring, msg, tc.want)

			// Cut anywhere, even inside a CRLF: the same message verifies.
			whole := append(append([]byte(nil), testPrefix...), testMsg...)
			for _, cut := range []int{1, 2, len(testPrefix) - 1, len(testPrefix) + 7, len(whole) - 1} {
				sigs2, _, err := ring.Sign("example.test", "", whole[:cut], whole[cut:])
				if err != nil {
					t.Fatal(err)
				}
				verifyAll(t, ring, append(sigs2, whole...), tc.want)
			}

			body := bytes.LastIndex(msg, []byte("Grüße"))
			flipped := bytes.Clone(msg)
			flipped[body] = 'g'
			rejectsAll(t, ring, flipped, "changed body byte")
			rejectsAll(t, ring, bytes.Replace(msg, []byte("Subject: a folded"), []byte("Subject: a Folded"), 1), "changed Subject")
			rejectsAll(t, ring, append(bytes.Clone(msg[:len(sigs)]), append([]byte("Subject: injected\r\n"), msg[len(sigs):]...)...), "added Subject")
			rejectsAll(t, ring, append(bytes.Clone(msg[:len(sigs)]), append([]byte("From: <mallory@evil.test>\r\n"), msg[len(sigs):]...)...), "added From")
			// Relaxed canonicalization: white space changes are fine.
			verifyAll(t, ring, bytes.Replace(msg, []byte("trailing  white space \t\r\n"), []byte("trailing white space\r\n"), 1), tc.want)
		})
	}
}

// TestDKIMSignDomains: no keys, no signature; keys of another domain do
// not sign; a fallback domain signs when the From domain has no keys, and
// not when it has; retired keys never sign.
func TestDKIMSignDomains(t *testing.T) {
	ring, _ := openTestRing(t)
	sigs, res, err := ring.Sign("example.test", "", testPrefix, testMsg)
	if err != nil || sigs != nil || res.Domain != "" || res.String() != "unsigned" {
		t.Errorf("empty keyring: %q, %+v, %v; want unsigned", sigs, res, err)
	}
	sigs, res, err = ring.Sign("example.test", "relay.test", testPrefix, testMsg)
	if err != nil || sigs != nil || res.String() != "unsigned" {
		t.Errorf("empty keyring with fallback: %q, %+v, %v; want unsigned", sigs, res, err)
	}

	generate(t, ring, "relay.test", "f1", Ed25519)
	if sigs, res, _ := ring.Sign("example.test", "", testPrefix, testMsg); sigs != nil || res.String() != "unsigned" {
		t.Errorf("keys for relay.test only, no fallback: %+v, want unsigned", res)
	}
	sigs, res, err = ring.Sign("example.test", "relay.test", testPrefix, testMsg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Domain != "relay.test" || !res.Fallback || res.String() != "signed as fallback relay.test (ed25519)" {
		t.Errorf("fallback: %+v (%q)", res, res.String())
	}
	verifyAll(t, ring, bytes.Join([][]byte{sigs, testPrefix, testMsg}, nil), []wantSig{{"relay.test", "f1", "ed25519-sha256"}})

	generate(t, ring, "example.test", "s1", RSA)
	sigs, res, err = ring.Sign("example.test", "relay.test", testPrefix, testMsg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Domain != "example.test" || res.Fallback {
		t.Errorf("From domain with keys and a fallback: %+v, want example.test, not fallback", res)
	}
	verifyAll(t, ring, bytes.Join([][]byte{sigs, testPrefix, testMsg}, nil), []wantSig{{"example.test", "s1", "rsa-sha256"}})

	if err := ring.Retire("example.test", "s1"); err != nil {
		t.Fatal(err)
	}
	_, res, _ = ring.Sign("example.test", "relay.test", testPrefix, testMsg)
	if res.Domain != "relay.test" || !res.Fallback {
		t.Errorf("From domain with only a retired key: %+v, want the fallback", res)
	}
	if err := ring.Retire("relay.test", "f1"); err != nil {
		t.Fatal(err)
	}
	if sigs, res, _ := ring.Sign("example.test", "relay.test", testPrefix, testMsg); sigs != nil || res.String() != "unsigned" {
		t.Errorf("only retired keys: %+v, want unsigned", res)
	}
}
