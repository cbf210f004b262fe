// Package explain reads an SMTP reply, one of Sluice's own or a remote
// server's pasted from a bounce, and says in plain words what it means and
// what the sender or the administrator should do about it.
//
// The classification works on the reply code, the enhanced status code
// (RFC 3463) and the wording the large receivers use. Specific text wins
// over the enhanced code, and the enhanced code wins over the basic code:
// "550 5.7.1" alone says little, "550-5.7.1 ... S3140 ... block list" says
// a lot. The DSN writer and the delivery log of the relay use the same
// result, so a bounce tells the person what to do.
package explain

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Category is the kind of problem a reply reports.
type Category string

// The categories. Their values appear in logs and metrics; do not rename them.
const (
	Accepted       Category = "accepted"        // 2xx/3xx: not a refusal
	Authentication Category = "authentication"  // SPF, DKIM, DMARC, reverse DNS of the sending server
	BlockList      Category = "blocklist"       // sending IP or a linked domain on a block list, poor reputation
	Spam           Category = "spam"            // content judged spam or dangerous
	UnknownMailbox Category = "mailbox-unknown" // no such recipient or domain, or a disabled mailbox
	MailboxFull    Category = "mailbox-full"    // recipient over quota
	RateLimited    Category = "rate-limited"    // too much too fast, greylisting, too many recipients
	TooBig         Category = "too-big"         // message size
	Policy         Category = "policy"          // relay denied, loops, local rules
	TLSRequired    Category = "tls-required"    // encryption needed or the TLS setup failed
	TempFailure    Category = "temporary"       // busy, internal error, network trouble
	Login          Category = "login"           // SMTP AUTH required, refused, locked out or disabled
	Sender         Category = "sender"          // the sender address is refused (not owned, invalid)
	Malformed      Category = "malformed"       // message format or SMTP syntax broken
	Unknown        Category = "unknown"         // none of the above recognised
)

// Categories lists every category, in the order above (for help texts and
// documentation).
var Categories = []Category{Accepted, Authentication, BlockList, Spam, UnknownMailbox, MailboxFull, RateLimited,
	TooBig, Policy, TLSRequired, TempFailure, Login, Sender, Malformed, Unknown}

// Explanation is what a reply means.
type Explanation struct {
	Code      int      `json:"code"`      // the three-digit reply code, 0 if none was found
	Enhanced  string   `json:"enhanced"`  // the enhanced status code such as "5.7.1", or ""
	Permanent bool     `json:"permanent"` // a 5xx reply (or, without a code, a 5.x.x enhanced code)
	Category  Category `json:"category"`
	Meaning   string   `json:"meaning"` // what happened, one or two sentences
	Action    string   `json:"action"`  // what to do about it, one or two sentences
}

// String is the text for the terminal: category and codes, meaning, action.
func (e Explanation) String() string {
	var codes []string
	if e.Code != 0 {
		codes = append(codes, strconv.Itoa(e.Code))
	}
	if e.Enhanced != "" {
		codes = append(codes, e.Enhanced)
	}
	kind := "temporary"
	switch {
	case e.Category == Accepted:
		kind = "success"
	case e.Permanent:
		kind = "permanent"
	case e.Code == 0 && e.Enhanced == "":
		kind = "no reply code"
	}
	head := string(e.Category)
	if len(codes) > 0 {
		head += " (" + strings.Join(codes, " ") + ", " + kind + ")"
	} else {
		head += " (" + kind + ")"
	}
	return fmt.Sprintf("kind:    %s\nmeaning: %s\nto do:   %s", head, e.Meaning, e.Action)
}

// maxInput bounds the work on absurd input; real replies are far shorter.
const maxInput = 16 << 10

// Explain classifies one reply. It accepts multi-line replies
// ("550-5.7.1 ...\n550 5.7.1 ..."), replies pasted on one line, and replies
// behind a prefix such as "host mx.example.com[192.0.2.1] said:" or
// "Remote server returned '...'". It never fails: a reply it cannot read is
// category Unknown with advice to paste the whole line.
func Explain(reply string) Explanation {
	if len(reply) > maxInput {
		reply = reply[:maxInput]
	}
	t := parse(reply)
	e := Explanation{Code: t.code, Enhanced: t.enh, Permanent: t.permanent()}
	cat, adv := classify(t)
	e.Category, e.Meaning, e.Action = cat, adv.meaning, adv.action
	if t.has("gave up after") && t.has("retries") {
		// The relay's own summary of an expired message: the last reply says
		// why, but there will be no further attempt.
		e.Meaning = "Sluice kept retrying until its time limit and gave up. " + e.Meaning
		e.Action += " Sluice no longer retries this message; send it again once the cause is fixed."
	} else if !e.Permanent && t.code >= 400 && t.code < 500 && retriedToNoAvail[cat] {
		e.Action += " The refusal is temporary, but it keeps coming back until the cause is fixed, however often a mail server (or Sluice's relay) retries."
	}
	return e
}

// retriedToNoAvail are the categories where a temporary refusal will not go
// away by waiting alone.
var retriedToNoAvail = map[Category]bool{
	Authentication: true, BlockList: true, Spam: true, Policy: true,
	Sender: true, UnknownMailbox: true, Malformed: true, TooBig: true,
}

// text is a reply prepared for matching.
type text struct {
	s                      string // lower case, one line, continuation markers removed, spaces collapsed
	code                   int
	enh                    string
	eClass, eSubj, eDetail int // the enhanced code's parts, eClass 0 when absent
}

// permanent reports a 5xx reply, or a 5.x.x enhanced code when there is no
// basic code.
func (t *text) permanent() bool {
	if t.code != 0 {
		return t.code >= 500 && t.code < 600
	}
	return t.eClass == 5
}

// temporary reports a 4xx reply (or 4.x.x without a basic code).
func (t *text) temporary() bool {
	if t.code != 0 {
		return t.code >= 400 && t.code < 500
	}
	return t.eClass == 4
}

// has reports whether any of subs occurs in the text.
func (t *text) has(subs ...string) bool {
	for _, s := range subs {
		if strings.Contains(t.s, s) {
			return true
		}
	}
	return false
}

// word reports whether any of ws occurs as a whole word (not inside a
// longer run of letters and digits).
func (t *text) word(ws ...string) bool {
	for _, w := range ws {
		for from := 0; from < len(t.s); {
			i := strings.Index(t.s[from:], w)
			if i < 0 {
				break
			}
			i += from
			end := i + len(w)
			if (i == 0 || !isAlnum(t.s[i-1])) && (end == len(t.s) || !isAlnum(t.s[end])) {
				return true
			}
			from = i + 1
		}
	}
	return false
}

// enhIs reports whether the enhanced code's subject and detail are subj.detail
// (any class).
func (t *text) enhIs(subj, detail int) bool {
	return t.eClass != 0 && t.eSubj == subj && t.eDetail == detail
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

var (
	// codeRE finds a reply code at the start or behind a separator or a word
	// that introduces the remote answer ("said:", "returned '", "smtp; ").
	codeRE = regexp.MustCompile(`(?i)(?:^|[:;'"#(\[=<>]|said|replied|returned|response|answer|answered|reply|error|code)\s*([2-5][0-5][0-9])(?:[\s\-):,]|$)`)
	// enhRE is an enhanced status code: class 2, 4 or 5, subject 0-7.
	enhRE   = regexp.MustCompile(`(?:^|[\s#(\[;:"'\-=<])([245])\.([0-7])\.([0-9]{1,3})(?:$|[^0-9.]|\.$|\.[^0-9])`)
	spaceRE = regexp.MustCompile(`\s+`)
)

// parse finds the codes and builds the matching text.
func parse(reply string) *text {
	t := &text{}
	raw := strings.TrimSpace(reply)
	joined := spaceRE.ReplaceAllString(raw, " ")

	if m := codeRE.FindStringSubmatchIndex(joined); m != nil {
		t.code, _ = strconv.Atoi(joined[m[2]:m[3]])
		rest := joined[m[3]:]
		// Prefer the enhanced code right after the basic code.
		if em := enhRE.FindStringSubmatchIndex(rest); em != nil && strings.TrimLeft(rest[:em[2]], " -") == "" {
			t.setEnh(rest, em)
		}
	}
	if t.eClass == 0 {
		if em := enhRE.FindStringSubmatchIndex(joined); em != nil {
			t.setEnh(joined, em)
		}
	}

	// Drop the continuation markers ("550-5.7.1 ", "550 5.7.1 " at the start
	// of each line or embedded in a reply pasted on one line) so that words
	// split across lines match again.
	var b strings.Builder
	for _, line := range strings.Split(strings.ReplaceAll(raw, "\r", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if t.code != 0 {
			c := strconv.Itoa(t.code)
			if strings.HasPrefix(line, c+"-") || strings.HasPrefix(line, c+" ") {
				line = strings.TrimSpace(line[len(c)+1:])
				if t.enh != "" && strings.HasPrefix(line, t.enh) {
					line = strings.TrimSpace(line[len(t.enh):])
				}
			}
		}
		if line != "" {
			b.WriteString(line)
			b.WriteByte(' ')
		}
	}
	s := spaceRE.ReplaceAllString(b.String(), " ")
	if t.code != 0 {
		c := strconv.Itoa(t.code)
		if t.enh != "" {
			s = strings.ReplaceAll(s, " "+c+"-"+t.enh+" ", " ")
			s = strings.ReplaceAll(s, " "+c+" "+t.enh+" ", " ")
		}
		s = strings.ReplaceAll(s, " "+c+"-", " ")
	}
	t.s = strings.ToLower(strings.TrimSpace(s))
	return t
}

func (t *text) setEnh(s string, m []int) {
	t.eClass, _ = strconv.Atoi(s[m[2]:m[3]])
	t.eSubj, _ = strconv.Atoi(s[m[4]:m[5]])
	t.eDetail, _ = strconv.Atoi(s[m[6]:m[7]])
	t.enh = fmt.Sprintf("%d.%d.%d", t.eClass, t.eSubj, t.eDetail)
}
