package screen

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Headers refuses the badly built messages that plugins and scripts
// produce: a From that is missing, doubled or without a valid address,
// 8-bit header bytes without SMTPUTF8 (or invalid UTF-8 even with it),
// header lines over 998 characters, and broken MIME structure.
type Headers struct{}

func (Headers) Name() string { return "headers" }

func (Headers) Check(_ context.Context, m *Message) *Verdict {
	m.parse()
	bad := func(format string, a ...any) *Verdict {
		return reject("headers", 554, [3]int{5, 6, 0}, fmt.Sprintf(format, a...))
	}
	froms := m.Header("From")
	switch {
	case len(froms) == 0:
		return reject("headers", 550, [3]int{5, 7, 1}, "the message has no From header; the plugin or script that builds it must set From to your address")
	case len(froms) > 1:
		return reject("headers", 550, [3]int{5, 7, 1}, fmt.Sprintf("the message has %d From headers; the plugin or script that builds it must set exactly one", len(froms)))
	}
	if list, err := addrParser.ParseList(froms[0]); err != nil || len(list) == 0 {
		return reject("headers", 550, [3]int{5, 7, 1}, fmt.Sprintf("the From header %q has no valid address; set it to an address like Name <you@example.com>", clip(froms[0], 60)))
	}
	for _, f := range m.header {
		if f.rawLen > 998 {
			return bad("header %s has a line longer than 998 characters; the plugin must fold long headers", f.name)
		}
		for i := 0; i < len(f.value); i++ {
			if f.value[i] >= 0x80 {
				if !m.SMTPUTF8 {
					return bad("header %s contains unencoded 8-bit characters; encode it (RFC 2047, e.g. =?UTF-8?B?...?=) or let the client use SMTPUTF8", f.name)
				}
				if !utf8.ValidString(f.value) {
					return bad("header %s is not valid UTF-8; fix the character set of the plugin or script", f.name)
				}
				break
			}
		}
	}
	if _, err := m.Parts(); err != nil {
		var me *mimeError
		if errors.As(err, &me) {
			return bad("%s; fix the plugin or script that builds the message", me.what)
		}
	}
	return nil
}
