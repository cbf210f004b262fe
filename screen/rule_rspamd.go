package screen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Rspamd asks an Rspamd scanner (its normal worker's HTTP protocol,
// POST /checkv2) and maps its action onto a verdict: "reject" refuses
// (550 5.7.1), "soft reject" and "greylist" defer (451 4.7.1), "add
// header" and "rewrite subject" mark the message (X-Spam: Yes and
// X-Spam-Score in front of it, before signing; the subject is not
// rewritten, since that would change the client's message) or, with
// AddHeader = "hold", hold it; "no action" accepts. When Rspamd is down or
// slower than Budget, Fallback decides: "accept" (default, logged) or
// "defer".
type Rspamd struct {
	URL       string // e.g. http://127.0.0.1:11333
	Password  string // sent as the Password header when set
	Budget    time.Duration
	Fallback  string
	AddHeader string // "mark" (default) or "hold"
	Client    *http.Client
	Log       *slog.Logger
}

func (r *Rspamd) Name() string { return "rspamd" }

type rspamdReply struct {
	Action        string                             `json:"action"`
	Score         float64                            `json:"score"`
	RequiredScore float64                            `json:"required_score"`
	Symbols       map[string]struct{ Score float64 } `json:"symbols"`
	Messages      map[string]string                  `json:"messages"`
}

func (r *Rspamd) Check(ctx context.Context, m *Message) *Verdict {
	budget := r.Budget
	if budget <= 0 {
		budget = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(r.URL, "/")+"/checkv2", bytes.NewReader(m.Raw))
	if err != nil {
		return r.fallback(err)
	}
	req.Header.Set("User", m.Login)
	req.Header.Set("From", m.EnvelopeFrom)
	for _, rc := range m.Rcpts {
		req.Header.Add("Rcpt", rc)
	}
	if r.Password != "" {
		req.Header.Set("Password", r.Password)
	}
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return r.fallback(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r.fallback(fmt.Errorf("HTTP %d", resp.StatusCode))
	}
	var rep rspamdReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return r.fallback(err)
	}
	top := topSymbols(rep.Symbols, 3)
	if msg := rep.Messages["smtp_message"]; msg != "" {
		top = "scanner says: " + msg
	}
	switch rep.Action {
	case "reject":
		return reject("rspamd", 550, [3]int{5, 7, 1}, fmt.Sprintf(
			"the content scanner judged this message as spam (score %.1f of %.1f; %s); remove what triggers it or ask the administrator to check the message", rep.Score, rep.RequiredScore, top))
	case "soft reject", "greylist":
		return &Verdict{Action: Defer, Code: 451, Enhanced: [3]int{4, 7, 1}, Rule: "rspamd",
			Message: fmt.Sprintf("the content scanner deferred this message (%s, score %.1f; %s); try again later", rep.Action, rep.Score, top)}
	case "add header", "rewrite subject":
		rated := fmt.Sprintf("the content scanner rated this message as probable spam (score %.1f, refused from %.1f; %s)", rep.Score, rep.RequiredScore, top)
		if r.AddHeader == "hold" {
			return &Verdict{Action: Hold, Code: 250, Enhanced: [3]int{2, 0, 0}, Rule: "rspamd", Message: rated + "; it is held for review"}
		}
		return &Verdict{Action: Mark, Code: 250, Enhanced: [3]int{2, 7, 1}, Rule: "rspamd", Message: rated,
			Headers: fmt.Appendf(nil, "X-Spam: Yes\r\nX-Spam-Score: %.2f\r\n", rep.Score)}
	}
	if rep.Action != "no action" {
		r.Log.Info("screen: rspamd suggests an action Sluice does not apply", "login", m.Login, "action", rep.Action, "score", rep.Score, "symbols", top)
	}
	return nil
}

func (r *Rspamd) fallback(err error) *Verdict {
	if r.Fallback == "defer" {
		r.Log.Warn("screen: rspamd unavailable; deferring", "err", err)
		return &Verdict{Action: Defer, Code: 451, Enhanced: [3]int{4, 3, 0}, Rule: "rspamd",
			Message: "temporary failure, try again in a few minutes"}
	}
	r.Log.Warn("screen: rspamd unavailable; accepting unscanned", "err", err)
	return nil
}

func topSymbols(syms map[string]struct{ Score float64 }, n int) string {
	type kv struct {
		k string
		v float64
	}
	var list []kv
	for k, s := range syms {
		if s.Score > 0 {
			list = append(list, kv{k, s.Score})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].v > list[j].v })
	var names []string
	for i := 0; i < len(list) && i < n; i++ {
		names = append(names, list[i].k)
	}
	if len(names) == 0 {
		return "no symbol named"
	}
	return "top signs: " + strings.Join(names, ", ")
}
