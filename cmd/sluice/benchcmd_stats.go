package main

// sluice bench: statistics, the report (text and JSON) and the progress line.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// benchHist is a latency histogram in microseconds: exact below 256 µs,
// then 128 buckets per power of two (under 0.8% error), with the exact
// minimum, maximum and sum. Its size does not grow with the run.
type benchHist struct {
	counts        [histBuckets]uint64
	n             uint64
	sum, min, max time.Duration
}

const (
	histSubBits = 8
	histSub     = 1 << histSubBits // 256
	histHalf    = histSub / 2      // 128 buckets per octave above histSub
	histMaxUS   = 1 << 40          // about 12 days
	histBuckets = histSub + (40-histSubBits)*histHalf
)

func histIndex(us uint64) int {
	if us >= histMaxUS {
		us = histMaxUS - 1
	}
	if us < histSub {
		return int(us)
	}
	shift := bits.Len64(us) - histSubBits // >= 1
	top := us >> shift                    // in [histHalf, histSub)
	return histSub + (shift-1)*histHalf + int(top-histHalf)
}

// histUpper is the largest value (µs) of bucket i.
func histUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := (i-histSub)/histHalf + 1
	top := uint64((i-histSub)%histHalf + histHalf)
	return (top+1)<<shift - 1
}

func (h *benchHist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d/time.Microsecond))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

// quantile is the nearest-rank q-quantile (0 < q <= 1), clamped to the
// exact minimum and maximum.
func (h *benchHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			v := time.Duration(histUpper(i))*time.Microsecond + time.Microsecond - 1
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// replyKey groups outcomes: class (accepted, deferred, rejected, error),
// stage, code and enhanced code; errors by their kind.
type replyKey struct {
	class, stage string
	code         int
	enh, kind    string
}

type replyCount struct {
	n    int64
	text string // the first reply text or error seen
}

type benchStats struct {
	mu                           sync.Mutex
	connect, auth, data, message benchHist
	replies                      map[replyKey]*replyCount
	partial                      map[replyKey]*replyCount // refused recipients of sent messages
	nAcc, nDef, nRej, nErr       int64
	nRcptRefused                 int64
	opened, failed, open         int64
}

func newBenchStats() *benchStats {
	return &benchStats{replies: map[replyKey]*replyCount{}, partial: map[replyKey]*replyCount{}}
}

func (s *benchStats) connected(d time.Duration) {
	s.mu.Lock()
	s.connect.add(d)
	s.mu.Unlock()
}

func (s *benchStats) authenticated(d time.Duration) {
	s.mu.Lock()
	s.auth.add(d)
	s.mu.Unlock()
}

func (s *benchStats) ready() {
	s.mu.Lock()
	s.opened++
	s.open++
	s.mu.Unlock()
}

func (s *benchStats) closed() {
	s.mu.Lock()
	s.open--
	s.mu.Unlock()
}

func (s *benchStats) connFailed() {
	s.mu.Lock()
	s.failed++
	s.mu.Unlock()
}

func (s *benchStats) endOfData(d time.Duration) {
	s.mu.Lock()
	s.data.add(d)
	s.mu.Unlock()
}

func (s *benchStats) accepted(rep *benchReply, msg time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.message.add(msg)
	s.nAcc++
	k := replyKey{class: "accepted", stage: "eod", code: rep.code, enh: rep.enh}
	if rc := s.replies[k]; rc != nil {
		rc.n++
	} else {
		s.replies[k] = &replyCount{n: 1} // no text: it holds the queue id
	}
}

func failKey(f *benchFail) (replyKey, string) {
	if f.rep == nil {
		err := f.err
		if err == nil {
			err = errors.New("no reply")
		}
		return replyKey{class: "error", stage: f.stage, kind: errKind(err)}, err.Error()
	}
	class := "error"
	switch f.rep.code / 100 {
	case 4:
		class = "deferred"
	case 5:
		class = "rejected"
	}
	return replyKey{class: class, stage: f.stage, code: f.rep.code, enh: f.rep.enh}, f.rep.text
}

// fail records a message that was not accepted.
func (s *benchStats) fail(f *benchFail) {
	k, text := failKey(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch k.class {
	case "deferred":
		s.nDef++
	case "rejected":
		s.nRej++
	default:
		s.nErr++
	}
	if rc := s.replies[k]; rc != nil {
		rc.n++
	} else {
		s.replies[k] = &replyCount{n: 1, text: text}
	}
}

// rcptRefused records a refused recipient of a message sent to others.
func (s *benchStats) rcptRefused(f *benchFail) {
	k, text := failKey(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nRcptRefused++
	if rc := s.partial[k]; rc != nil {
		rc.n++
	} else {
		s.partial[k] = &replyCount{n: 1, text: text}
	}
}

// errKind names a transport error without the addresses in it.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case strings.HasPrefix(err.Error(), "TLS handshake"):
		return "TLS handshake"
	case strings.HasPrefix(err.Error(), "malformed reply"):
		return "malformed reply"
	}
	return "other"
}

// benchReport is what a run prints; --json prints it as it is.
type benchReport struct {
	Addr              string           `json:"addr"`
	TLS               string           `json:"tls"`
	Concurrency       int              `json:"concurrency"`
	MessagesLimit     int              `json:"messages_limit"`   // 0: none
	DurationLimit     float64          `json:"duration_limit_s"` // 0: none
	Size              int              `json:"size"`
	Recipients        int              `json:"recipients"`
	Reuse             int              `json:"reuse"`
	Rate              float64          `json:"rate"` // messages started per second; 0: no limit
	Logins            int              `json:"logins"`
	Interrupted       bool             `json:"interrupted"`
	Elapsed           float64          `json:"elapsed_s"`
	ClientCPU         float64          `json:"client_cpu_s"` // CPU time of sluice bench itself during the run
	Sent              int64            `json:"sent"`         // accepted + deferred + rejected + errors
	Accepted          int64            `json:"accepted"`
	Deferred          int64            `json:"deferred"`
	Rejected          int64            `json:"rejected"`
	Errors            int64            `json:"errors"`
	RecipientsRefused int64            `json:"recipients_refused"` // of messages accepted for others
	MsgsPerSecond     float64          `json:"msgs_per_s"`         // accepted per second
	Connections       benchConnReport  `json:"connections"`
	Replies           []benchReplyLine `json:"replies"`
	RecipientReplies  []benchReplyLine `json:"recipient_replies,omitempty"`
	Latency           benchLatencies   `json:"latency_ms"`
}

type benchConnReport struct {
	Opened int64 `json:"opened"` // ready to send (after AUTH)
	Failed int64 `json:"failed"` // failed at connect, TLS, EHLO or AUTH
}

type benchReplyLine struct {
	Class    string `json:"class"` // accepted, deferred, rejected, error
	Stage    string `json:"stage"` // connect, auth, mail, rcpt, data, eod
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"`
	Kind     string `json:"kind,omitempty"` // errors: timeout, connection refused, ...
	Count    int64  `json:"count"`
	Text     string `json:"text,omitempty"` // the first reply text or error
}

type benchLatencies struct {
	Connect benchLatency `json:"connect"`
	Auth    benchLatency `json:"auth"`
	Data    benchLatency `json:"data"`
	Message benchLatency `json:"message"`
}

type benchLatency struct {
	N    uint64  `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (h *benchHist) latency() benchLatency {
	if h.n == 0 {
		return benchLatency{}
	}
	return benchLatency{N: h.n, Mean: ms(h.sum / time.Duration(h.n)), P50: ms(h.quantile(0.50)),
		P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)), Max: ms(h.max)}
}

var classOrder = map[string]int{"accepted": 0, "deferred": 1, "rejected": 2, "error": 3}

func replyLines(m map[replyKey]*replyCount) []benchReplyLine {
	out := make([]benchReplyLine, 0, len(m))
	for k, rc := range m {
		out = append(out, benchReplyLine{Class: k.class, Stage: k.stage, Code: k.code, Enhanced: k.enh,
			Kind: k.kind, Count: rc.n, Text: rc.text})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Class != b.Class {
			return classOrder[a.Class] < classOrder[b.Class]
		}
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return fmt.Sprint(a.Stage, a.Code, a.Enhanced, a.Kind) < fmt.Sprint(b.Stage, b.Code, b.Enhanced, b.Kind)
	})
	return out
}

func (s *benchStats) report(o *benchOptions, elapsed time.Duration, interrupted bool) *benchReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &benchReport{
		Addr: o.addr, TLS: o.tlsMode, Concurrency: o.concurrency, MessagesLimit: o.messages,
		DurationLimit: o.duration.Seconds(), Size: o.size, Recipients: o.recipients, Reuse: o.reuse, Rate: o.rate,
		Logins: len(o.creds), Interrupted: interrupted, Elapsed: elapsed.Seconds(),
		Accepted: s.nAcc, Deferred: s.nDef, Rejected: s.nRej, Errors: s.nErr,
		RecipientsRefused: s.nRcptRefused,
		Connections:       benchConnReport{Opened: s.opened, Failed: s.failed},
		Replies:           replyLines(s.replies),
		Latency: benchLatencies{Connect: s.connect.latency(), Auth: s.auth.latency(),
			Data: s.data.latency(), Message: s.message.latency()},
	}
	if len(s.partial) > 0 {
		r.RecipientReplies = replyLines(s.partial)
	}
	r.Sent = r.Accepted + r.Deferred + r.Rejected + r.Errors
	if elapsed > 0 {
		r.MsgsPerSecond = float64(r.Accepted) / elapsed.Seconds()
	}
	return r
}

func writeBenchJSON(w io.Writer, r *benchReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func writeBenchText(w io.Writer, r *benchReport) {
	limit := []string{}
	if r.MessagesLimit > 0 {
		limit = append(limit, fmt.Sprintf("%d messages", r.MessagesLimit))
	}
	if r.DurationLimit > 0 {
		limit = append(limit, fmt.Sprintf("%gs", r.DurationLimit))
	}
	reuse := "all on one connection"
	if r.Reuse > 0 {
		reuse = fmt.Sprintf("%d per connection", r.Reuse)
	}
	rate := ""
	if r.Rate > 0 {
		rate = fmt.Sprintf(", at most %g msgs/s", r.Rate)
	}
	fmt.Fprintf(w, "sluice bench %s (%s): %d connections, %s, %d-byte bodies, %d recipient(s), %s%s, %d login(s)\n",
		r.Addr, r.TLS, r.Concurrency, strings.Join(limit, " or "), r.Size, r.Recipients, reuse, rate, r.Logins)
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: messages in flight were finished")
	}
	fmt.Fprintf(w, "\n%d messages in %.2fs: %d accepted, %d deferred (4xx), %d rejected (5xx), %d errors\n",
		r.Sent, r.Elapsed, r.Accepted, r.Deferred, r.Rejected, r.Errors)
	fmt.Fprintf(w, "%.1f msgs/s accepted; %d connections opened, %d failed\n", r.MsgsPerSecond, r.Connections.Opened, r.Connections.Failed)
	if r.Sent > 0 {
		fmt.Fprintf(w, "this client used %.2fs of CPU (%.3f ms a message)\n", r.ClientCPU, r.ClientCPU*1000/float64(r.Sent))
	}
	if r.RecipientsRefused > 0 {
		fmt.Fprintf(w, "%d recipients refused in messages accepted for the others\n", r.RecipientsRefused)
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	printReplies := func(title string, lines []benchReplyLine) {
		fmt.Fprintf(tw, "\n%s\tstage\treply\tcount\t\n", title)
		for _, l := range lines {
			code := l.Kind
			if l.Code != 0 {
				code = strings.TrimSpace(fmt.Sprintf("%d %s", l.Code, l.Enhanced))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", l.Class, l.Stage, code, l.Count, truncate(l.Text, 110))
		}
	}
	if len(r.Replies) > 0 {
		printReplies("outcome", r.Replies)
	}
	if len(r.RecipientReplies) > 0 {
		printReplies("recipient", r.RecipientReplies)
	}
	tw.Flush()

	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nlatency (ms)\tn\tmean\tp50\tp90\tp99\tmax\t\n")
	for _, row := range []struct {
		name string
		l    benchLatency
	}{{"connect", r.Latency.Connect}, {"auth", r.Latency.Auth}, {"data", r.Latency.Data}, {"message", r.Latency.Message}} {
		l := row.l
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", row.name, l.N, l.Mean, l.P50, l.P90, l.P99, l.Max)
	}
	tw.Flush()
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startBenchProgress updates one line on stderr every second when stderr is
// a terminal. The returned function stops it and clears the line.
func startBenchProgress(r *benchRun, stderr io.Writer, start time.Time) func() {
	if !isTerminal(stderr) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				fmt.Fprint(stderr, "\r\x1b[K")
				return
			case now := <-t.C:
				s := r.st
				s.mu.Lock()
				acc, def, rej, errs, open := s.nAcc, s.nDef, s.nRej, s.nErr, s.open
				p50, p99 := s.data.quantile(0.5), s.data.quantile(0.99)
				s.mu.Unlock()
				fmt.Fprintf(stderr, "\r\x1b[K%4.0fs  accepted %d  deferred %d  rejected %d  errors %d  %d msgs/s  %d connections  data p50 %.1fms p99 %.1fms",
					now.Sub(start).Seconds(), acc, def, rej, errs, acc-last, open, ms(p50), ms(p99))
				last = acc
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
