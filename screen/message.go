package screen

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Message is what the content rules see: the envelope, the login, and the
// message as the client sent it (CRLF line endings, checked by submit).
// The header is split and the MIME tree walked once, on first use, and
// shared by every rule; a Message is used by one goroutine at a time.
type Message struct {
	Login        string
	EnvelopeFrom string
	Rcpts        []string
	Raw          []byte
	SMTPUTF8     bool
	// OurHostname is this gateway's name, to recognise its own Received
	// fields in a message that comes back (autoresponder loops).
	OurHostname string

	parsed  bool
	header  []field
	bodyOff int

	walked   bool // Parts has walked the MIME tree
	parts    []Part
	partsErr error

	// commit, when set, is a quota commit to send with the counting
	// rules' batch (Pipeline.ScreenAndCommit).
	commit *batchCommit

	ovKeys []string // see overrideKeys; nil until asked
}

// overrideKeys are the names an override may be set under for this
// message, in the order they apply: the login, its domain, and the header
// From's domain when there is one From. Worked out once a message (the
// pipeline asks for each rule).
func (m *Message) overrideKeys() []string {
	if m.ovKeys == nil {
		m.ovKeys = []string{strings.ToLower(m.Login), domainOf(m.Login)}
		if froms := m.Addresses("From"); len(froms) == 1 {
			m.ovKeys = append(m.ovKeys, domainOf(froms[0]))
		}
	}
	return m.ovKeys
}

// batchCommit is a quota commit riding on the counting rules' round trip.
type batchCommit struct {
	rdb      redis.UniversalClient
	call     scriptCall
	answered func(res []int64) // given the call's answer
	done     bool              // charged
}

type field struct {
	name, value string // value unfolded, raw (not decoded)
	rawLen      int    // longest physical line of the field
}

func (m *Message) parse() {
	if m.parsed {
		return
	}
	m.parsed = true
	m.header, m.bodyOff = splitFields(m.Raw)
}

// splitFields splits the header section into unfolded fields. A folded
// field's value is built in one buffer, so that a field of many
// continuation lines costs time in proportion to its size, not its square.
func splitFields(raw []byte) ([]field, int) {
	var fs []field
	var fold []byte // the last field's value while its continuation lines are read
	folding := false
	endFold := func() {
		if folding {
			fs[len(fs)-1].value = string(fold)
			fold, folding = fold[:0], false
		}
	}
	pos := 0
	for pos < len(raw) {
		end := bytes.Index(raw[pos:], []byte("\r\n"))
		next := len(raw)
		line := raw[pos:]
		if end >= 0 {
			line = raw[pos : pos+end]
			next = pos + end + 2
		}
		if len(line) == 0 {
			endFold()
			return fs, next
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fs) > 0 {
			f := &fs[len(fs)-1]
			if !folding {
				fold, folding = append(fold[:0], f.value...), true
			}
			fold = append(append(fold, ' '), bytes.TrimLeft(line, " \t")...)
			f.rawLen = max(f.rawLen, len(line))
		} else if i := bytes.IndexByte(line, ':'); i > 0 {
			endFold()
			fs = append(fs, field{name: string(line[:i]), value: strings.TrimLeft(string(line[i+1:]), " \t"), rawLen: len(line)})
		}
		pos = next
	}
	endFold()
	return fs, len(raw)
}

// Header returns the values of every field called name.
func (m *Message) Header(name string) []string {
	m.parse()
	var out []string
	for _, f := range m.header {
		if strings.EqualFold(f.name, name) {
			out = append(out, f.value)
		}
	}
	return out
}

// Body is the message body (after the blank line).
func (m *Message) Body() []byte {
	m.parse()
	return m.Raw[m.bodyOff:]
}

var addrParser = mail.AddressParser{WordDecoder: wordDecoder}

// Addresses returns the addresses of the header fields called name,
// lower-cased; fields that do not parse give nothing.
func (m *Message) Addresses(name string) []string {
	var out []string
	for _, v := range m.Header(name) {
		list, err := addrParser.ParseList(v)
		if err != nil {
			continue
		}
		for _, a := range list {
			out = append(out, strings.ToLower(a.Address))
		}
	}
	return out
}

// Part is one leaf of the MIME tree, decoded.
type Part struct {
	ContentType string // lower-case media type
	Filename    string
	Body        []byte // transfer-decoded
}

// maxParts and maxDepth bound the MIME walk against hostile nesting.
const (
	maxParts = 200
	maxDepth = 8
)

// mimeError reports a broken MIME structure; the message names the problem.
type mimeError struct{ what string }

func (e *mimeError) Error() string { return e.what }

// Parts returns the leaves of the MIME tree, decoded. The tree is walked
// once per message; every rule gets the same parts, which it must not
// change.
func (m *Message) Parts() ([]Part, error) {
	if !m.walked {
		m.parse()
		m.walked = true
		m.partsErr = walk(m.headerMap(), m.Body(), 0, &m.parts)
	}
	return m.parts, m.partsErr
}

func (m *Message) headerMap() map[string]string {
	h := map[string]string{}
	for _, f := range m.header {
		k := strings.ToLower(f.name)
		if _, ok := h[k]; !ok {
			h[k] = f.value
		}
	}
	return h
}

func walk(h map[string]string, body []byte, depth int, parts *[]Part) error {
	if depth > maxDepth {
		return &mimeError{"the MIME structure is nested more than 8 levels deep"}
	}
	ct := h["content-type"]
	mediaType, params, err := mime.ParseMediaType(ct)
	if ct == "" {
		mediaType, err = "text/plain", nil
	}
	if err != nil && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "multipart/") {
		// An unparsable Content-Type on a leaf: treat as opaque data.
		mediaType = "application/octet-stream"
		err = nil
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "multipart/") {
		if err != nil || params["boundary"] == "" {
			// Mailers write unquoted boundaries with "=" in them
			// (----=_NextPart_...), which strict parsing refuses.
			if b := looseBoundary(ct); b != "" {
				return walkMultipart(body, b, depth, parts)
			}
			return &mimeError{"the Content-Type header declares a multipart message without a boundary"}
		}
		return walkMultipart(body, params["boundary"], depth, parts)
	}
	if len(*parts) >= maxParts {
		return &mimeError{"the message has more than 200 MIME parts"}
	}
	p := Part{ContentType: mediaType, Filename: filename(h, params)}
	p.Body = decode(h["content-transfer-encoding"], body)
	*parts = append(*parts, p)
	return nil
}

// wordDecoder decodes RFC 2047 encoded words (in addresses and file
// names) and passes the bytes of charsets other than UTF-8 through.
var wordDecoder = &mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}

// filename is the part's file name, decoded (RFC 2231 by ParseMediaType,
// RFC 2047 encoded words, which many clients still use, here).
func filename(h map[string]string, ctParams map[string]string) string {
	name := ctParams["name"]
	if _, p, err := mime.ParseMediaType(h["content-disposition"]); err == nil && p["filename"] != "" {
		name = p["filename"]
	}
	if strings.Contains(name, "=?") {
		if d, err := wordDecoder.DecodeHeader(name); err == nil {
			name = d
		}
	}
	return name
}

func looseBoundary(ct string) string {
	i := strings.Index(asciiLower(ct), "boundary=")
	if i < 0 {
		return ""
	}
	v := ct[i+len("boundary="):]
	if strings.HasPrefix(v, "\"") {
		if j := strings.IndexByte(v[1:], '"'); j >= 0 {
			return v[1 : j+1]
		}
		return ""
	}
	if j := strings.IndexAny(v, "; \t"); j >= 0 {
		v = v[:j]
	}
	return v
}

// asciiLower lowers the ASCII letters of s and keeps every byte where it
// is: strings.ToLower turns invalid UTF-8 into longer replacement runes, so
// an index into its result is not one into s.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func walkMultipart(body []byte, boundary string, depth int, parts *[]Part) error {
	delim := []byte("--" + boundary)
	// The delimiter must start a line.
	idx := 0
	if !bytes.HasPrefix(body, delim) {
		i := bytes.Index(body, append([]byte("\r\n"), delim...))
		if i < 0 {
			return &mimeError{"the MIME boundary declared in Content-Type never appears in the body"}
		}
		idx = i + 2
	}
	closed := false
	for {
		rest := body[idx+len(delim):]
		if bytes.HasPrefix(rest, []byte("--")) {
			closed = true
			break
		}
		lineEnd := bytes.Index(rest, []byte("\r\n"))
		if lineEnd < 0 {
			break
		}
		start := idx + len(delim) + lineEnd + 2
		next := bytes.Index(body[start:], append([]byte("\r\n"), delim...))
		if next < 0 {
			break
		}
		partRaw := body[start : start+next]
		fs, off := splitFields(partRaw)
		ph := map[string]string{}
		for _, f := range fs {
			k := strings.ToLower(f.name)
			if _, ok := ph[k]; !ok {
				ph[k] = f.value
			}
		}
		if err := walk(ph, partRaw[off:], depth+1, parts); err != nil {
			return err
		}
		idx = start + next + 2
	}
	if !closed {
		return &mimeError{"the MIME body has no closing boundary (--" + clip(boundary, 40) + "--): the message was cut off or built by hand"}
	}
	return nil
}

// decode undoes the transfer encoding; what does not decode ends the part
// there. The part's bytes are copied once (into the decoded part) and only
// when it is encoded.
func decode(cte string, body []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		// The decoder skips CR and LF itself; blanks, which some mailers
		// leave at line ends, must go first.
		src := body
		if bytes.ContainsAny(body, " \t") {
			src = make([]byte, 0, len(body))
			for _, c := range body {
				if c != ' ' && c != '\t' {
					src = append(src, c)
				}
			}
		}
		out := make([]byte, base64.StdEncoding.DecodedLen(len(src)))
		n, _ := base64.StdEncoding.Decode(out, src)
		return out[:n]
	case "quoted-printable":
		var out bytes.Buffer
		out.Grow(len(body) + bytes.MinRead) // decoded is never longer
		out.ReadFrom(quotedprintable.NewReader(bytes.NewReader(body)))
		return out.Bytes()
	}
	return body
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
