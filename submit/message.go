package submit

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
)

// maxLine is the longest line RFC 5322 2.1.1 allows, without its CRLF.
const maxLine = 998

// checkLineEndings walks the message once and refuses bare CR, bare LF, NUL
// and lines over 998 characters. A bare LF or CR is how SMTP smuggling hides
// a second message ("\n.\n", "\r.\r"); refusing every bare line ending
// refuses each of those variants with one reply. A long line in the header
// section is named by its field (the client's plugin folds header fields,
// its encoder body lines: the fix differs).
func checkLineEndings(msg []byte) error {
	inHeader := true
	field := 0 // start of the header field the current line belongs to
	for start := 0; start < len(msg); {
		// One line at a time, its ends found by search: the first of a
		// bare CR, a NUL, a bare LF or the 999th character is refused,
		// as a walk byte by byte would find it.
		lf := bytes.IndexByte(msg[start:], '\n')
		end, next := len(msg), len(msg) // end: where the line's text ends
		if lf >= 0 {
			end, next = start+lf, start+lf+1
			if end > start && msg[end-1] == '\r' {
				end-- // the CRLF
			}
		}
		line := msg[start:end]
		if inHeader {
			switch {
			case len(line) > 0 && (line[0] == ' ' || line[0] == '\t'):
			case len(line) > 0 && line[0] == '\r', len(line) == 0 && lf >= 0 && end < start+lf:
				inHeader = false // the blank line ends the header
			default:
				field = start
			}
		}
		first, err := len(line), error(nil) // the first fault in the line
		if lf >= 0 && end == start+lf {
			err = errBareLineEnding // the line ends in a bare LF
		} else if lf < 0 && len(line) > 0 && line[len(line)-1] == '\r' {
			first, err = len(line)-1, errBareLineEnding // a CR ends the message
		}
		if i := bytes.IndexByte(line, '\r'); i >= 0 && i < first {
			first, err = i, errBareLineEnding
		}
		if i := bytes.IndexByte(line[:first], 0); i >= 0 {
			first, err = i, errNUL
		}
		if first > maxLine {
			if name := fieldName(msg[field:]); inHeader && name != "" {
				return errLongHeaderLine(name)
			}
			return errLongLine
		}
		if err != nil {
			return err
		}
		start = next
	}
	return nil
}

// fieldName returns the name of the header field that line starts, or ""
// if it does not start one.
func fieldName(line []byte) string {
	colon := bytes.IndexByte(line[:min(len(line), 78)], ':')
	if colon <= 0 || !validFieldName(line[:colon]) {
		return ""
	}
	return string(line[:colon])
}

// headerField is one field of the header section, as slices of the
// message: nothing is copied until a rule asks for a field's value.
type headerField struct {
	name  []byte // as written
	value []byte // after the colon, up to the field's last CRLF (folds included)
}

// text is the field's value unfolded: its lines joined by one space, the
// leading white space of each trimmed.
func (f headerField) text() string {
	first, rest, folded := bytes.Cut(f.value, crlf)
	if !folded {
		return string(bytes.TrimLeft(first, " \t"))
	}
	var b strings.Builder
	b.Grow(len(f.value))
	b.Write(bytes.TrimLeft(first, " \t"))
	for folded {
		first, rest, folded = bytes.Cut(rest, crlf)
		b.WriteByte(' ')
		b.Write(bytes.TrimLeft(first, " \t"))
	}
	return b.String()
}

var crlf = []byte("\r\n")

// splitHeader returns the fields of the header section and the offset of
// the body (after the blank line). The message has been checked by
// checkLineEndings, so every line ends in CRLF.
func splitHeader(msg []byte) (headers, int, error) {
	fields := make(headers, 0, 16)
	for pos, lineNo := 0, 1; pos < len(msg); lineNo++ {
		line, next := msg[pos:], len(msg)
		if end := bytes.Index(line, crlf); end >= 0 {
			line, next = line[:end], pos+end+2
		}
		switch {
		case len(line) == 0:
			return fields, next, nil
		case line[0] == ' ' || line[0] == '\t':
			if len(fields) == 0 {
				return nil, 0, reply(554, ecMediaBad, "the message starts with a folded line, not a header field; put From, To and Subject first")
			}
			// The field's value ends at the CRLF before this line: take
			// that CRLF and this line in (value is a slice of msg).
			f := &fields[len(fields)-1]
			f.value = f.value[:len(f.value)+len(crlf)+len(line)]
		default:
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 || !validFieldName(line[:colon]) {
				if lineNo == 1 {
					return nil, 0, errNoHeader
				}
				return nil, 0, reply(554, ecMediaBad,
					"header line %d is not of the form \"Name: value\"; fix the script or plugin that builds the message, or put a blank line before the body", lineNo)
			}
			fields = append(fields, headerField{name: line[:colon], value: line[colon+1:]})
		}
		pos = next
	}
	// Header only, no body.
	return fields, len(msg), nil
}

func validFieldName(b []byte) bool {
	for _, c := range b {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// get returns the unfolded values of the fields called name.
func (hs headers) get(name string) []string {
	var out []string
	for _, f := range hs {
		if bytes.EqualFold(f.name, []byte(name)) {
			out = append(out, f.text())
		}
	}
	return out
}

// has reports whether there is a field called name.
func (hs headers) has(name string) bool {
	for _, f := range hs {
		if bytes.EqualFold(f.name, []byte(name)) {
			return true
		}
	}
	return false
}

type headers []headerField

var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
	return input, nil
}}}

// checkHeaderSenders applies the sender rules to the header: exactly one
// From, every address in it owned by the login, and Sender owned too.
func checkHeaderSenders(hs headers, login *Login) (fromDomain string, err error) {
	froms := hs.get("From")
	switch {
	case len(froms) == 0:
		return "", reply(550, ecPolicy, "the message has no From header; add From: with your address %s", login.Name)
	case len(froms) > 1:
		return "", reply(550, ecPolicy, "the message has %d From headers; send it with exactly one", len(froms))
	}
	list, err := addrParser.ParseList(froms[0])
	if err != nil || len(list) == 0 {
		return "", reply(550, ecPolicy, "the From header %q has no valid address; set it to your address, e.g. From: Name <%s>", clip(froms[0], 80), login.Name)
	}
	for _, a := range list {
		if !login.Owns(a.Address) {
			return "", reply(550, ecPolicy, "header From %s is not an address of login %s; send from your own address or ask for it to be added to your login", a.Address, login.Name)
		}
	}
	if senders := hs.get("Sender"); len(senders) > 0 {
		if len(senders) > 1 {
			return "", reply(550, ecPolicy, "the message has %d Sender headers; send it with at most one", len(senders))
		}
		a, err := addrParser.Parse(senders[0])
		if err != nil {
			return "", reply(550, ecPolicy, "the Sender header %q has no valid address; remove it or set it to %s", clip(senders[0], 80), login.Name)
		}
		if !login.Owns(a.Address) {
			return "", reply(550, ecPolicy, "header Sender %s is not an address of login %s; remove the Sender header or use your own address", a.Address, login.Name)
		}
	}
	return strings.ToLower(domainOf(list[0].Address)), nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// domainOf returns the part after the last @.
func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// traceHeaders builds what the submission server adds in front of the
// message: a Received field (RFC 5321 4.4) and, when the client left them
// out, Date and Message-ID (RFC 6409 8.2, 8.3).
func traceHeaders(buf *bytes.Buffer, hs headers, t traceInfo) {
	// ESMTPSA (RFC 3848): every session is in TLS and authenticated.
	fmt.Fprintf(buf, "Received: from %s (%s)\r\n\tby %s (Sluice) with ESMTPSA id %s\r\n\t(authenticated as %s; %s);\r\n\t%s\r\n",
		sanitizeToken(t.helo), t.ip, t.hostname, t.id, t.login, t.tlsInfo, t.now.Format(rfc5322Date))
	if !hs.has("Date") {
		fmt.Fprintf(buf, "Date: %s\r\n", t.now.Format(rfc5322Date))
	}
	if !hs.has("Message-ID") {
		fmt.Fprintf(buf, "Message-ID: <%s.%s@%s>\r\n", strings.ToLower(t.id), t.now.UTC().Format("20060102150405"), t.hostname)
	}
}

const rfc5322Date = "Mon, 02 Jan 2006 15:04:05 -0700"

type traceInfo struct {
	helo, ip, hostname, id, login, tlsInfo string
	now                                    time.Time
}

// sanitizeToken keeps a client-supplied HELO name from injecting header
// syntax into the Received field.
func sanitizeToken(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '(' || r == ')' || r == ';' {
			return '_'
		}
		return r
	}, s)
}
