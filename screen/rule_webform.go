package screen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"unicode"

	"github.com/redis/go-redis/v9"
)

// WebForm catches the "from yourself to yourself" contact-form pattern:
// the header From equals a recipient (envelope, To or Cc) with the visitor
// (an address outside the From domain) in Reply-To, or the message goes to
// the From address alone and looks like a form's: a script mailer
// (PHPMailer, WordPress...) or no mail client named at all, or a form
// plugin's body. Receivers and block lists treat such mail as spam; the fix
// is a separate sending address (form@) that forwards.
//
// A note a person sends to themselves from a mail client (Thunderbird,
// Outlook, Apple Mail: a reminder, a file to take home) has From == To too,
// but no visitor and a mail client in User-Agent or X-Mailer; it passes.
type WebForm struct {
	Mode  string // "reject" (default), "limit", "allow"
	Limit int    // limit mode: such messages per login per hour
	Store QuotaStore
	Log   *slog.Logger
}

func (w *WebForm) Name() string { return "webform" }

func (w *WebForm) Check(ctx context.Context, m *Message) *Verdict {
	if w.Mode == "allow" {
		return nil
	}
	froms := m.Addresses("From")
	if len(froms) != 1 {
		return nil
	}
	from := froms[0]
	// The form pattern: the mail goes only to the From address itself
	// (envelope and To), or to it with an outside visitor in Reply-To.
	// A Cc or Bcc to oneself on ordinary mail is not a form.
	fromIsRcpt, onlySelf := false, len(m.Rcpts) > 0
	for _, r := range m.Rcpts {
		if strings.EqualFold(r, from) {
			fromIsRcpt = true
		} else {
			onlySelf = false
		}
	}
	for _, a := range m.Addresses("To") {
		if a == from {
			fromIsRcpt = true
		} else {
			onlySelf = false
		}
	}
	for _, a := range m.Addresses("Cc") {
		fromIsRcpt = fromIsRcpt || a == from
	}
	if !fromIsRcpt {
		return nil
	}
	dom := domainOf(from)
	visitor := ""
	for _, a := range m.Addresses("Reply-To") {
		if domainOf(a) != dom {
			visitor = a
		}
	}
	if visitor == "" && !(onlySelf && formLike(m)) {
		return nil
	}
	local := "form"
	if strings.HasPrefix(from, "form@") {
		local = "webform"
	}
	what := fmt.Sprintf("message from %s to %s", from, from)
	fix := fmt.Sprintf("send form mail from a separate address such as %s@%s with the visitor in Reply-To", local, dom)
	if visitor != "" {
		what = fmt.Sprintf("message from %s to %s with the visitor %s in Reply-To", from, from, visitor)
		fix = fmt.Sprintf("send form mail from a separate address such as %s@%s that forwards to %s", local, dom, from)
	}
	if w.Mode == "limit" && w.Store != nil {
		n, err := w.Store.Count(ctx, domainOf(m.Login), "webform:"+m.Login, nowID(), 1)
		if err != nil {
			w.Log.Warn("screen: webform counter unavailable; allowing", "login", m.Login, "err", err)
			return nil
		}
		if n <= w.Limit {
			return nil
		}
		return &Verdict{Action: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Rule: "webform",
			Message: fmt.Sprintf("login %s has sent %d self-addressed form messages this hour (limit %d); %s", m.Login, n-1, w.Limit, fix)}
	}
	return reject("webform", 550, [3]int{5, 7, 1}, what+" looks like a web-form loop; "+fix)
}

// scriptMailers are what form plugins and scripts put in X-Mailer or
// User-Agent (lower case).
var scriptMailers = []string{"phpmailer", "wordpress", "php/", "php ", "wp mail smtp", "wpmailsmtp", "swiftmailer", "swift mailer",
	"symfony", "laminas", "zend", "codeigniter", "drupal", "joomla", "nodemailer"}

// formSubjects and formBodies are what the form plugins' default templates
// say (Contact Form 7, WPForms, Gravity Forms, Ninja Forms...).
var (
	formSubjects = []string{"contact form", "new entry", "form submission", "new submission", "new message from"}
	formBodies   = []string{"sent from a contact form", "sent via contact form", "sent from the contact form", "submitted via", "form submission", "message body:"}
	formLabels   = []string{"name", "your name", "email", "e-mail", "your email", "message", "your message", "comment or message", "phone", "subject"}
)

// formLike reports whether a self-addressed message looks built by a form
// or script rather than written in a mail client.
func formLike(m *Message) bool {
	agent := strings.ToLower(strings.Join(append(m.Header("X-Mailer"), m.Header("User-Agent")...), " "))
	if strings.TrimSpace(agent) == "" {
		return true // mail clients name themselves; scripts and plugins often do not
	}
	for _, s := range scriptMailers {
		if strings.Contains(agent, s) {
			return true
		}
	}
	for _, subj := range m.Header("Subject") {
		subj = strings.ToLower(subj)
		for _, s := range formSubjects {
			if strings.Contains(subj, s) {
				return true
			}
		}
	}
	parts, _ := m.Parts()
	for _, p := range parts {
		if !strings.HasPrefix(p.ContentType, "text/") || p.Filename != "" {
			continue
		}
		text := strings.ToLower(string(p.Body[:min(len(p.Body), 64<<10)]))
		for _, s := range formBodies {
			if strings.Contains(text, s) {
				return true
			}
		}
		if p.ContentType == "text/html" {
			text = htmlTagRe.ReplaceAllString(text, "\n")
		}
		if formFieldLines(text) >= 2 {
			return true
		}
	}
	return false
}

var htmlTagRe = regexp.MustCompile(`<[^>]*>`)

// formFieldLines counts the distinct field labels that start a line
// ("Name: ...", "Email", "Your Message"), the shape of a form's fields.
func formFieldLines(text string) int {
	seen := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		for _, l := range formLabels {
			if line == l || strings.HasPrefix(line, l+":") {
				seen[l] = true
			}
		}
	}
	return len(seen)
}

// Repeats catches the loop proper: the same content sent again and again
// by one login within minutes (a form that posts itself, a script gone
// wild). Past Repeats it defers; past twice that it holds the message for
// the operator. It counts, so the pipeline runs it after the content
// rules; OwnHops, the other half of the "loop" rule, runs early.
type Repeats struct {
	Repeats int
	Store   QuotaStore // a store whose window is the repeat window
	Log     *slog.Logger
}

// OwnHops holds mail that already passed through this gateway and came
// back (autoresponder ping-pong, a forward loop). It is the "loop" rule's
// cheap half: no counting, so it runs before the block lists and Rspamd.
type OwnHops struct {
	MaxOurHops int // Received fields of ours before it is a loop (default 1)
}

func (OwnHops) Name() string { return "loop" }

// keep is how many times of one content the Redis store remembers: past
// twice Repeats the rule holds, so more only makes the count it reports
// larger (a runaway form's field stays bounded).
func (r *Repeats) keep() int { return max(2*r.Repeats+1, 100) }

// repeatCounter is a store that keeps a login's content fingerprints
// together (RedisStore), instead of a counter a fingerprint.
type repeatCounter interface {
	CountRepeat(ctx context.Context, tag, login, fp string, keep int) (int, error)
}

func (r *Repeats) Name() string { return "loop" }

func (r *Repeats) Check(ctx context.Context, m *Message) *Verdict {
	if r.Store == nil || r.Repeats <= 0 {
		return nil
	}
	fp := fingerprint(m)
	var n int
	var err error
	if rc, ok := r.Store.(repeatCounter); ok {
		n, err = rc.CountRepeat(ctx, domainOf(m.Login), m.Login, fp, r.keep())
	} else {
		n, err = r.Store.Count(ctx, domainOf(m.Login), "fp:"+m.Login+":"+fp, nowID(), 1)
	}
	return r.judge(m, n, err)
}

// Check holds mail that already passed through this gateway (a loop
// through us), or returns nil.
func (h OwnHops) Check(_ context.Context, m *Message) *Verdict {
	if m.OurHostname == "" {
		return nil
	}
	ours := 0
	for _, v := range m.Header("Received") {
		if strings.Contains(v, "by "+m.OurHostname+" (Sluice)") {
			ours++
		}
	}
	auto := len(m.Header("Auto-Submitted")) > 0 && !strings.EqualFold(strings.TrimSpace(m.Header("Auto-Submitted")[0]), "no")
	if ours >= max(1, h.MaxOurHops) || ours > 0 && auto {
		return &Verdict{Action: Hold, Code: 250, Enhanced: [3]int{2, 0, 0}, Rule: "loop",
			Message: fmt.Sprintf("this message already passed through %s (an autoresponder or forward loop); it is held for review", m.OurHostname)}
	}
	return nil
}

// judge is the verdict on n copies of m's content within the window (err:
// the counter failed, which lets the message through).
func (r *Repeats) judge(m *Message, n int, err error) *Verdict {
	if err != nil {
		r.Log.Warn("screen: repeat counter unavailable; allowing", "login", m.Login, "err", err)
		return nil
	}
	switch {
	case n > 2*r.Repeats:
		return &Verdict{Action: Hold, Code: 250, Enhanced: [3]int{2, 0, 0}, Rule: "loop",
			Message: fmt.Sprintf("login %s sent the same message %d times within minutes; it is held for review", m.Login, n)}
	case n > r.Repeats:
		return &Verdict{Action: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Rule: "loop",
			Message: fmt.Sprintf("login %s sent the same message %d times within minutes, which looks like a form or script in a loop; fix the loop, the next copies will be held", m.Login, n)}
	}
	return nil
}

// batch implements batcher: the repeat count, for a Redis store. Past
// Repeats the loop's verdict ends the screening unless it is allowed, so
// the batch stops there too.
func (r *Repeats) batch(m *Message, decisive bool) (redis.UniversalClient, []scriptCall, bool) {
	st, ok := r.Store.(*RedisStore)
	if !ok || r.Repeats <= 0 {
		return nil, nil, false
	}
	c := st.repeatCall(domainOf(m.Login), m.Login, fingerprint(m), r.keep())
	if decisive {
		c.stop = r.Repeats
	}
	return st.rdb, []scriptCall{c}, true
}

// judgeBatch implements batcher.
func (r *Repeats) judgeBatch(_ context.Context, m *Message, res [][]int64, err error) *Verdict {
	n := 0
	if err == nil {
		n, err = countResult(res[0])
	}
	return r.judge(m, n, err)
}

// fpLower maps each byte to what the fingerprint keeps of it: fpSpace for
// white space, fpSkip for a digit, else the byte lowered (as a Latin-1
// letter).
var fpLower = func() (t [256]uint16) {
	for c := range t {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			t[c] = fpSpace
		case c >= '0' && c <= '9':
			t[c] = fpSkip
		default:
			t[c] = uint16(unicode.ToLower(rune(c)))
		}
	}
	return t
}()

// fpSpace and fpSkip are outside the byte range that lowered bytes take.
const (
	fpSpace = 0x100
	fpSkip  = 0x101
)

// fingerprint hashes the normalised subject and body: case, whitespace and
// digits (counters, dates) are ignored, so trivially varied copies match.
func fingerprint(m *Message) string {
	h := sha256.New()
	buf := make([]byte, 0, 4096)
	norm := func(s []byte) {
		// A run of white space is one space, and none before the first
		// word (started: a word was kept, maybe already hashed).
		space, started := false, false
		buf = buf[:0]
		for _, c := range s {
			l := fpLower[c]
			switch l {
			case fpSpace:
				space = true
				continue
			case fpSkip:
				continue
			}
			if space && started {
				buf = append(buf, ' ')
			}
			space, started = false, true
			buf = append(buf, byte(l))
			if len(buf) >= cap(buf)-1 {
				h.Write(buf)
				buf = buf[:0]
			}
		}
		h.Write(buf)
	}
	// The same text to different people (a newsletter sent one by one,
	// order confirmations) is not a loop: the recipients are part of it.
	rcpts := append([]string(nil), m.Rcpts...)
	sort.Strings(rcpts)
	for _, r := range rcpts {
		h.Write([]byte(strings.ToLower(r)))
		h.Write([]byte{1})
	}
	for _, s := range m.Header("Subject") {
		norm([]byte(s))
	}
	h.Write([]byte{0})
	norm(m.Body())
	return hex.EncodeToString(h.Sum(nil)[:10])
}
