// Package screen decides whether an authenticated login may send a message
// now: the hourly quotas (per login and per domain, kept in Redis when
// several instances share them, in memory otherwise) and, as it grows, the
// content rules. Its verdicts carry the SMTP reply the client sees; screen
// knows nothing of the SMTP server's types.
package screen

import (
	"context"
	"fmt"
)

// Action is what a verdict does with a message.
type Action int

// Actions.
const (
	Accept Action = iota
	Reject        // permanent: 5xx
	Defer         // temporary: 4xx
	Hold          // accepted, kept until released
	Mark          // accepted with the verdict in header fields (Verdict.Headers) for the receivers' filters
)

func (a Action) String() string {
	return [...]string{"accept", "reject", "defer", "hold", "mark"}[a]
}

// Verdict is a decision with the reply that explains it. It is an error so
// that a refusal travels up like one; submit's translator turns it into the
// SMTP reply.
type Verdict struct {
	Action   Action
	Code     int
	Enhanced [3]int
	Rule     string // which rule decided, for logs and metrics
	Message  string // the one sentence the client sees (for Mark: the log's)
	// Headers are the header fields (each ending in CRLF) a Mark verdict
	// puts in front of the message, before it is signed.
	Headers []byte
	// effect, when set, is what the verdict does beyond its reply (the
	// compromise rule's suspension). Pipeline.Run applies it unless an
	// override turns the verdict into "allow".
	effect func(ctx context.Context)
}

func (v *Verdict) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s", v.Code, v.Enhanced[0], v.Enhanced[1], v.Enhanced[2], v.Message)
}

// SMTPReply lets the SMTP edge build its reply without knowing this type.
func (v *Verdict) SMTPReply() (int, [3]int, string) { return v.Code, v.Enhanced, v.Message }

// RuleName says which rule decided (for submit's log line; the field Rule
// cannot have a method of the same name).
func (v *Verdict) RuleName() string { return v.Rule }
