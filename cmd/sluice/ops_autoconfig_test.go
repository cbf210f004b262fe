package main

// Operating tests, part 3: the mail-client autoconfiguration documents
// (helpers in ops_test.go).

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ---------------------------------------------------------------- 5. autoconfig

// Thunderbird's config-v1.1.xml.
type opsTBConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID          string        `xml:"id,attr"`
		Domains     []string      `xml:"domain"`
		DisplayName string        `xml:"displayName"`
		Incoming    []opsTBServer `xml:"incomingServer"`
		Outgoing    []opsTBServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type opsTBServer struct {
	Type           string   `xml:"type,attr"`
	Hostname       string   `xml:"hostname"`
	Port           int      `xml:"port"`
	SocketType     string   `xml:"socketType"`
	Authentication []string `xml:"authentication"`
	Username       string   `xml:"username"`
}

// Outlook's POX Autodiscover response.
const (
	opsADNS         = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	opsADResponseNS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

type opsAutodiscover struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response *struct {
		XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Account *struct {
			AccountType string        `xml:"AccountType"`
			Action      string        `xml:"Action"`
			Protocols   []opsADServer `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

type opsADServer struct {
	Type         string `xml:"Type"`
	Server       string `xml:"Server"`
	Port         int    `xml:"Port"`
	SSL          string `xml:"SSL"`
	SPA          string `xml:"SPA"`
	AuthRequired string `xml:"AuthRequired"`
	LoginName    string `xml:"LoginName"`
}

// opsPlist parses an XML property list into Go values: map[string]any,
// []any, string, int64, float64, bool. It enforces the structure (one root
// value in <plist version="1.0">, keys and values alternating in a dict).
func opsPlist(data []byte) (any, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var doctype bool
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("no <plist> element: %v", err)
		}
		switch tk := tok.(type) {
		case xml.Directive:
			if strings.HasPrefix(string(tk), "DOCTYPE plist") {
				doctype = true
			}
		case xml.StartElement:
			if tk.Name.Local != "plist" {
				return nil, fmt.Errorf("root element <%s>, want <plist>", tk.Name.Local)
			}
			if !doctype {
				return nil, errors.New("no <!DOCTYPE plist ...> before <plist>")
			}
			version := ""
			for _, a := range tk.Attr {
				if a.Name.Local == "version" {
					version = a.Value
				}
			}
			if version != "1.0" {
				return nil, fmt.Errorf("<plist version=%q>, want 1.0", version)
			}
			v, err := opsPlistValue(d, nil)
			if err != nil {
				return nil, err
			}
			if end, err := opsPlistNext(d); err != nil || end != nil {
				return nil, fmt.Errorf("<plist> holds more than one value (%v %v)", end, err)
			}
			return v, nil
		}
	}
}

// opsPlistNext returns the next start element, or nil at an end element.
func opsPlistNext(d *xml.Decoder) (*xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			return &tk, nil
		case xml.EndElement:
			return nil, nil
		case xml.CharData:
			if len(bytes.TrimSpace(tk)) != 0 {
				return nil, fmt.Errorf("text %q between plist elements", tk)
			}
		}
	}
}

// opsPlistValue reads one value; start is its element when already read.
func opsPlistValue(d *xml.Decoder, start *xml.StartElement) (any, error) {
	if start == nil {
		var err error
		if start, err = opsPlistNext(d); err != nil || start == nil {
			return nil, fmt.Errorf("expected a value: %v", err)
		}
	}
	text := func() (string, error) {
		var s string
		err := d.DecodeElement(&s, start)
		return s, err
	}
	switch start.Name.Local {
	case "dict":
		m := map[string]any{}
		for {
			k, err := opsPlistNext(d)
			if err != nil {
				return nil, err
			}
			if k == nil {
				return m, nil
			}
			if k.Name.Local != "key" {
				return nil, fmt.Errorf("<%s> in a dict where a <key> belongs", k.Name.Local)
			}
			var key string
			if err := d.DecodeElement(&key, k); err != nil {
				return nil, err
			}
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("key %q twice in one dict", key)
			}
			v, err := opsPlistValue(d, nil)
			if err != nil {
				return nil, fmt.Errorf("value of %q: %w", key, err)
			}
			m[key] = v
		}
	case "array":
		var a []any
		for {
			e, err := opsPlistNext(d)
			if err != nil {
				return nil, err
			}
			if e == nil {
				return a, nil
			}
			v, err := opsPlistValue(d, e)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	case "string", "data", "date":
		return text()
	case "integer":
		s, err := text()
		if err != nil {
			return nil, err
		}
		return strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	case "real":
		s, err := text()
		if err != nil {
			return nil, err
		}
		return strconv.ParseFloat(strings.TrimSpace(s), 64)
	case "true", "false":
		if err := d.Skip(); err != nil {
			return nil, err
		}
		return start.Name.Local == "true", nil
	}
	return nil, fmt.Errorf("<%s> is not a plist value element", start.Name.Local)
}

var opsUUIDRe = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

// opsAutoconfigPaths are the autoconfig documents (method, path).
var opsAutoconfigPaths = [][2]string{
	{http.MethodGet, "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test"},
	{http.MethodGet, "/mail/config-v1.1.xml?emailaddress=alice%40example.test"},
	{http.MethodPost, "/autodiscover/autodiscover.xml"},
	{http.MethodPost, "/Autodiscover/Autodiscover.xml"},
	{http.MethodGet, "/apple.mobileconfig?email=alice%40example.test"},
}

func opsAutodiscoverRequest(email string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(email))
	return `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>` + b.String() + `</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
`
}

// TestAutoconfigDocuments: with [http] autoconfig = true each document
// parses and carries what its schema requires and what the server offers
// (465 implicit TLS and 587 STARTTLS on the hostname, the IMAP host for
// incoming mail); an address with XML-special characters comes back intact.
// Switched off with SIGHUP, every document is 404.
func TestAutoconfigDocuments(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	s := startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\nautoconfig = true\nimap_host = \"imap.example.test\"\n", httpAddr), alice)
	base := "http://" + httpAddr
	opsWaitStatus(t, base+"/healthz", 200)

	for _, email := range []string{"alice@example.test", "o'neil&co@example.test"} {
		t.Run(strings.NewReplacer("'", "_", "&", "_", "@", "_").Replace(email), func(t *testing.T) {
			// Thunderbird, at both of its addresses.
			for _, path := range []string{"/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"} {
				h, body := opsGet(t, base+path+"?emailaddress="+url.QueryEscape(email), 200)
				if ct := h.Get("Content-Type"); !strings.Contains(ct, "xml") {
					t.Errorf("%s: Content-Type %q", path, ct)
				}
				var cc opsTBConfig
				if err := xml.Unmarshal([]byte(body), &cc); err != nil {
					t.Fatalf("%s does not parse: %v\n%s", path, err, body)
				}
				p := cc.Provider
				if cc.Version != "1.1" || p.ID != "example.test" || len(p.Domains) != 1 || p.Domains[0] != "example.test" || p.DisplayName == "" {
					t.Errorf("%s: clientConfig version %q, emailProvider id %q, domains %q, displayName %q; want 1.1, example.test, [example.test], non-empty\n%s",
						path, cc.Version, p.ID, p.Domains, p.DisplayName, body)
				}
				want := map[string]bool{"465 SSL": false, "587 STARTTLS": false}
				for _, o := range p.Outgoing {
					key := fmt.Sprintf("%d %s", o.Port, o.SocketType)
					if _, ok := want[key]; !ok {
						t.Errorf("%s: unexpected outgoing server %+v", path, o)
						continue
					}
					want[key] = true
					if o.Type != "smtp" || o.Hostname != "mail.sluice.test" || len(o.Authentication) == 0 || o.Authentication[0] != "password-cleartext" || o.Username != "%EMAILADDRESS%" {
						t.Errorf("%s: outgoing server %+v, want type smtp, hostname mail.sluice.test, password-cleartext, %%EMAILADDRESS%%", path, o)
					}
				}
				for k, seen := range want {
					if !seen {
						t.Errorf("%s: no outgoingServer with port/socketType %s\n%s", path, k, body)
					}
				}
				if len(p.Incoming) != 1 || p.Incoming[0].Type != "imap" || p.Incoming[0].Hostname != "imap.example.test" || p.Incoming[0].Port != 993 || p.Incoming[0].SocketType != "SSL" {
					t.Errorf("%s: incoming servers %+v, want IMAP imap.example.test:993 SSL", path, p.Incoming)
				}
			}

			// Outlook, at both spellings.
			for _, path := range []string{"/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"} {
				code, h, body, err := opsFetch(http.MethodPost, base+path, "text/xml", opsAutodiscoverRequest(email))
				if err != nil || code != 200 {
					t.Fatalf("POST %s: %d %v\n%s", path, code, err, body)
				}
				if ct := h.Get("Content-Type"); !strings.Contains(ct, "xml") {
					t.Errorf("%s: Content-Type %q", path, ct)
				}
				var ad opsAutodiscover
				if err := xml.Unmarshal([]byte(body), &ad); err != nil {
					t.Fatalf("%s does not parse with the Autodiscover namespaces: %v\n%s", path, err, body)
				}
				if ad.Response == nil || ad.Response.Account == nil {
					t.Fatalf("%s: no Autodiscover/Response/Account in the response namespaces\n%s", path, body)
				}
				acc := ad.Response.Account
				if acc.AccountType != "email" || acc.Action != "settings" {
					t.Errorf("%s: AccountType %q, Action %q; want email, settings", path, acc.AccountType, acc.Action)
				}
				var smtpProto, imapProto *opsADServer
				for i := range acc.Protocols {
					switch acc.Protocols[i].Type {
					case "SMTP":
						smtpProto = &acc.Protocols[i]
					case "IMAP":
						imapProto = &acc.Protocols[i]
					}
				}
				if smtpProto == nil {
					t.Fatalf("%s: no Protocol of Type SMTP\n%s", path, body)
				}
				if smtpProto.Server != "mail.sluice.test" || smtpProto.Port != 465 || smtpProto.SSL != "on" || smtpProto.AuthRequired != "on" || smtpProto.LoginName != email {
					t.Errorf("%s: SMTP protocol %+v, want mail.sluice.test 465 SSL on, AuthRequired on, LoginName %s", path, *smtpProto, email)
				}
				if imapProto == nil || imapProto.Server != "imap.example.test" || imapProto.Port != 993 || imapProto.SSL != "on" {
					t.Errorf("%s: IMAP protocol %+v, want imap.example.test 993 SSL on", path, imapProto)
				}
			}

			// Apple.
			h, body := opsGet(t, base+"/apple.mobileconfig?email="+url.QueryEscape(email), 200)
			if ct := h.Get("Content-Type"); ct != "application/x-apple-aspen-config" {
				t.Errorf("mobileconfig: Content-Type %q, want application/x-apple-aspen-config", ct)
			}
			if cd := h.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, ".mobileconfig") {
				t.Errorf("mobileconfig: Content-Disposition %q", cd)
			}
			v, err := opsPlist([]byte(body))
			if err != nil {
				t.Fatalf("mobileconfig is not a valid plist: %v\n%s", err, body)
			}
			prof, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("mobileconfig: the root value is %T, want a dict", v)
			}
			if prof["PayloadType"] != "Configuration" || prof["PayloadVersion"] != int64(1) || prof["PayloadIdentifier"] == nil || prof["PayloadDisplayName"] == nil {
				t.Errorf("mobileconfig profile: PayloadType %v, PayloadVersion %v, PayloadIdentifier %v, PayloadDisplayName %v",
					prof["PayloadType"], prof["PayloadVersion"], prof["PayloadIdentifier"], prof["PayloadDisplayName"])
			}
			profUUID, _ := prof["PayloadUUID"].(string)
			if !opsUUIDRe.MatchString(profUUID) {
				t.Errorf("mobileconfig profile: PayloadUUID %q is not a UUID", prof["PayloadUUID"])
			}
			content, _ := prof["PayloadContent"].([]any)
			if len(content) != 1 {
				t.Fatalf("mobileconfig: PayloadContent %v, want an array of one payload", prof["PayloadContent"])
			}
			mail, _ := content[0].(map[string]any)
			for key, want := range map[string]any{
				"PayloadType":                  "com.apple.mail.managed",
				"PayloadVersion":               int64(1),
				"EmailAddress":                 email,
				"EmailAccountType":             "EmailTypeIMAP",
				"OutgoingMailServerHostName":   "mail.sluice.test",
				"OutgoingMailServerPortNumber": int64(465),
				"OutgoingMailServerUseSSL":     true,
				"OutgoingMailServerUsername":   email,
				"IncomingMailServerHostName":   "imap.example.test",
				"IncomingMailServerPortNumber": int64(993),
				"IncomingMailServerUseSSL":     true,
			} {
				if mail[key] != want {
					t.Errorf("mobileconfig mail payload: %s = %#v, want %#v", key, mail[key], want)
				}
			}
			mailUUID, _ := mail["PayloadUUID"].(string)
			if !opsUUIDRe.MatchString(mailUUID) || mailUUID == profUUID {
				t.Errorf("mobileconfig mail payload: PayloadUUID %q, want a UUID other than the profile's %q", mailUUID, profUUID)
			}
			if id, _ := mail["PayloadIdentifier"].(string); id == "" || id == prof["PayloadIdentifier"] {
				t.Errorf("mobileconfig mail payload: PayloadIdentifier %q, want its own", id)
			}
		})
	}
	if code, _, body, _ := opsFetch(http.MethodGet, base+"/apple.mobileconfig", "", ""); code != 400 {
		t.Errorf("mobileconfig without ?email=: status %d, want 400\n%s", code, body)
	}

	// Off by reload: every document is 404, the rest is still served.
	opsEditConfig(t, s, "autoconfig = true\n", "autoconfig = false\n")
	opsReload(t, s)
	opsAutoconfigAll404(t, base)
	opsGet(t, base+"/healthz", 200)
	opsGet(t, base+"/metrics", 200)
}

// TestAutoconfigOff: without autoconfig (the default) every document is 404
// while /metrics and the health endpoints are served.
func TestAutoconfigOff(t *testing.T) {
	t.Parallel()
	httpAddr := freeAddr(t)
	startServerWith(t, fmt.Sprintf("\n[http]\nlisten = %q\nimap_host = \"imap.example.test\"\n", httpAddr), alice)
	base := "http://" + httpAddr
	opsWaitStatus(t, base+"/healthz", 200)
	opsAutoconfigAll404(t, base)
	opsGet(t, base+"/metrics", 200)
	opsGet(t, base+"/readyz", 200)
}

func opsAutoconfigAll404(t *testing.T, base string) {
	t.Helper()
	for _, p := range opsAutoconfigPaths {
		body := ""
		if p[0] == http.MethodPost {
			body = opsAutodiscoverRequest("alice@example.test")
		}
		code, _, got, err := opsFetch(p[0], base+p[1], "text/xml", body)
		if err != nil || code != 404 {
			t.Errorf("%s %s with autoconfig off: status %d (%v), want 404\n%s", p[0], p[1], code, err, got)
		}
	}
}
