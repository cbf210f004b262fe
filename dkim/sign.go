package dkim

import (
	"bytes"
	"crypto"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// headerKeys are the fields signed. Those listed twice are oversigned
// (RFC 6376 8.15): the signature breaks if a second instance is added on
// the way, so nobody can slip in another From or Subject.
var headerKeys = []string{
	"From", "From", "Reply-To", "Reply-To", "Subject", "Subject", "Date", "Date",
	"To", "To", "Cc", "Cc", "Message-ID", "Message-ID",
	"Sender", "In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// markFields are the verdict fields the content screen may put in front
// (Rspamd's "add header"). They are signed when present, each instance
// once, so that no hop can change or drop the verdict; they are not
// oversigned, because receivers' own filters add fields of these names.
var markFields = []string{"X-Spam", "X-Spam-Score"}

// signedKeys is headerKeys plus one entry per instance of a mark field in
// the header (up to the first empty line) of the message made of parts,
// which may span parts (they end on line boundaries). It reads the field
// names in place: a message without mark fields costs no allocation.
func signedKeys(parts [][]byte) []string {
	keys := headerKeys
	for _, p := range parts {
		for len(p) > 0 {
			line := p
			if i := bytes.IndexByte(p, '\n'); i >= 0 {
				line, p = p[:i+1], p[i+1:]
			} else {
				p = nil
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				return keys // end of the header
			}
			c := bytes.IndexByte(line, ':')
			if c <= 0 || line[0] == ' ' || line[0] == '\t' {
				continue // a continuation line, or no field
			}
			name := bytes.TrimRight(line[:c], " \t")
			for _, f := range markFields {
				if len(name) == len(f) && strings.EqualFold(string(name), f) {
					keys = append(keys[:len(keys):len(keys)], f)
				}
			}
		}
	}
	return keys
}

// Signing is the outcome of Sign for the log and metrics.
type Signing struct {
	Domain   string // d= used; empty when unsigned
	Fallback bool   // signed with the fallback domain, not the From domain
	Algos    []string
}

func (s Signing) String() string {
	switch {
	case s.Domain == "":
		return "unsigned"
	case s.Fallback:
		return fmt.Sprintf("signed as fallback %s (%s)", s.Domain, strings.Join(s.Algos, "+"))
	}
	return fmt.Sprintf("signed as %s (%s)", s.Domain, strings.Join(s.Algos, "+"))
}

// Sign returns the DKIM-Signature fields for the message made of parts
// (written in order, never joined), signed with the active keys of
// fromDomain, or of fallback when fromDomain has none and fallback is set.
// A domain without keys and no fallback returns no fields: unsigned.
// Messages must have CRLF line endings (submit refuses anything else).
func (k *Keyring) Sign(fromDomain, fallback string, parts ...[]byte) ([]byte, Signing, error) {
	keys := k.SigningKeys(fromDomain)
	res := Signing{Domain: strings.ToLower(fromDomain)}
	if len(keys) == 0 && fallback != "" {
		keys = k.SigningKeys(fallback)
		res = Signing{Domain: strings.ToLower(fallback), Fallback: true}
	}
	if len(keys) == 0 {
		return nil, Signing{}, nil
	}
	signed := signedKeys(parts)
	signers := make([]*dkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	for _, key := range keys {
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 key.Domain,
			Selector:               key.Selector,
			Signer:                 key.signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             signed,
		})
		if err != nil {
			for _, x := range signers {
				x.Close()
			}
			return nil, Signing{}, fmt.Errorf("dkim: %s: %w", key.Name(), err)
		}
		signers = append(signers, s)
		writers = append(writers, s)
		res.Algos = append(res.Algos, key.Algo)
	}
	w := writers[0]
	if len(writers) > 1 {
		w = io.MultiWriter(writers...)
	}
	var werr error
	for _, p := range parts {
		if _, werr = w.Write(p); werr != nil {
			break
		}
	}
	var out []byte
	for i, s := range signers {
		if err := s.Close(); err != nil && werr == nil {
			werr = fmt.Errorf("dkim: sign with %s: %w", keys[i].Name(), err)
		}
		if werr == nil {
			out = append(out, s.Signature()...)
		}
	}
	if werr != nil {
		return nil, Signing{}, werr
	}
	return out, res, nil
}
