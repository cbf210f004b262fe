package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"time"

	"sluice/relay"
	"sluice/relay/spool"
	"sluice/screen"
	"sluice/submit/userdb"
)

// adminAPI is the provisioning API of docs/openapi.yaml, on the HTTP
// listener, behind a bearer token ([http] admin_token; off without one).
// Everything under /api/ needs the token: an unknown path or a wrong
// method is answered 404 or 405 only after it.
type adminAPI struct {
	// tokenSum is the SHA-256 of the token at start; when cfg is set, the
	// token of the running configuration is used instead (the same unless
	// a reload is made to apply [http] admin_token).
	tokenSum [32]byte
	cfg      func() *Config
	users    *userdb.File
	quota    *screen.Quota
	susp     suspensionStore // the compromise rule's suspensions
	spool    *spool.Spool
	relay    *relay.Relay
	log      *slog.Logger

	mux *http.ServeMux
}

// adminRoute is one operation of the API; adminRoutes is the list that
// docs/openapi.yaml describes (a test holds the two together).
type adminRoute struct {
	method, path string
	handle       func(a *adminAPI, w http.ResponseWriter, r *http.Request) error
}

var adminRoutes = []adminRoute{
	{"GET", "/api/v1/logins", (*adminAPI).listLogins},
	{"POST", "/api/v1/logins", (*adminAPI).createLogin},
	{"GET", "/api/v1/logins/{login}", (*adminAPI).getLogin},
	{"PATCH", "/api/v1/logins/{login}", (*adminAPI).updateLogin},
	{"DELETE", "/api/v1/logins/{login}", (*adminAPI).deleteLogin},
	{"GET", "/api/v1/logins/{login}/usage", (*adminAPI).loginUsage},
	{"DELETE", "/api/v1/logins/{login}/suspension", (*adminAPI).liftSuspension},
	{"GET", "/api/v1/held", (*adminAPI).listHeld},
	{"POST", "/api/v1/held/{id}/release", (*adminAPI).releaseHeld},
	{"DELETE", "/api/v1/held/{id}", (*adminAPI).deleteHeld},
	{"GET", "/api/v1/suppressions", (*adminAPI).listSuppressions},
	{"DELETE", "/api/v1/suppressions/{rcpt}", (*adminAPI).deleteSuppression},
	{"GET", "/api/v1/queue", (*adminAPI).queueSummary},
}

func (a *adminAPI) register(mux *http.ServeMux) {
	a.mux = http.NewServeMux()
	for _, rt := range adminRoutes {
		a.mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) {
			a.serve(w, r, rt.handle)
		})
	}
	mux.Handle("/api/", http.HandlerFunc(a.ServeHTTP))
}

// ServeHTTP checks the token, then routes.
func (a *adminAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		a.log.Warn("admin api: refused, missing or wrong bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin api"`)
		writeJSON(w, http.StatusUnauthorized, apiErrorBody("missing or wrong bearer token; send Authorization: Bearer <[http] admin_token>"))
		return
	}
	if _, pattern := a.mux.Handler(r); pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	if allowed := a.allowedMethods(r); len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, apiErrorBody(fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))))
		return
	}
	writeJSON(w, http.StatusNotFound, apiErrorBody("no API call at "+r.URL.Path+"; the calls are described in docs/openapi.yaml"))
}

func (a *adminAPI) allowedMethods(r *http.Request) []string {
	seen := map[string]bool{}
	var out []string
	for _, rt := range adminRoutes {
		if seen[rt.method] {
			continue
		}
		seen[rt.method] = true
		probe := r.Clone(r.Context())
		probe.Method = rt.method
		if _, pattern := a.mux.Handler(probe); pattern != "" {
			out = append(out, rt.method)
		}
	}
	sort.Strings(out)
	return out
}

// authorized checks the bearer token. Both sides are hashed to SHA-256
// and the digests compared in constant time, so the time taken depends on
// neither the token's length nor how much of a guess is right.
func (a *adminAPI) authorized(r *http.Request) bool {
	want := a.tokenSum
	if a.cfg != nil {
		tok := a.cfg().HTTP.AdminToken
		if tok == "" {
			return false // the API was switched off by a reload
		}
		want = sha256.Sum256([]byte(tok))
	}
	scheme, given, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		given = ""
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(given)))
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	return match && given != ""
}

type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func notFound(format string, a ...any) error {
	return &apiError{http.StatusNotFound, fmt.Sprintf(format, a...)}
}

func conflict(format string, a ...any) error {
	return &apiError{http.StatusConflict, fmt.Sprintf(format, a...)}
}

func apiErrorBody(msg string) map[string]string {
	return map[string]string{"error": strings.ReplaceAll(msg, "\n", " ")}
}

// serve runs one handler and turns its error into the JSON answer.
func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request, h func(*adminAPI, http.ResponseWriter, *http.Request) error) {
	err := h(a, w, r)
	if err == nil {
		return
	}
	var ae *apiError
	if errors.As(err, &ae) {
		writeJSON(w, ae.status, apiErrorBody(ae.msg))
		return
	}
	a.log.Error("admin api", "method", r.Method, "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusInternalServerError, apiErrorBody("internal error; see the server log"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decodeJSON reads one JSON object into v and explains in one line what is
// wrong with a body that does not fit.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var (
		ae  *apiError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case err == nil:
		if _, err := dec.Token(); err != io.EOF {
			return badRequest("the request body has more after the JSON object; send exactly one object")
		}
		return nil
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, io.EOF):
		return badRequest("the request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the request body ends in the middle of the JSON object")
	case errors.As(err, &mbe):
		return badRequest("the request body is larger than 1 MB")
	case errors.As(err, &se):
		return badRequest("the request body is not valid JSON at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &te):
		if te.Field == "" {
			return badRequest("the request body must be a JSON object, not %s", te.Value)
		}
		return badRequest("field %q must be %s, not %s", te.Field, jsonKind(te.Type), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("unknown field %s; the fields are %s", strings.TrimPrefix(err.Error(), "json: unknown field "), jsonFields(v))
	}
	return badRequest("the request body could not be read as JSON for this call; send one JSON object")
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(jsonKind(t.Elem()), "a ") + "s"
	}
	return "a " + t.Kind().String()
}

func jsonFields(v any) string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if n, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); n != "" && n != "-" {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// changed logs a call that changed something: who (the admin token, from
// which address) and what.
func (a *adminAPI) changed(r *http.Request, what string, args ...any) {
	a.log.Info("admin api change", append([]any{"what", what, "by", "admin_token", "remote", r.RemoteAddr}, args...)...)
}

type loginJSON struct {
	Address  string    `json:"address"`
	Grants   []string  `json:"grants"`
	Quota    *int      `json:"quota"`
	Disabled bool      `json:"disabled"`
	Reason   string    `json:"reason,omitempty"`
	Created  time.Time `json:"created"`
}

func toJSON(u *userdb.User) loginJSON {
	g := u.Grants
	if g == nil {
		g = []string{}
	}
	return loginJSON{Address: u.Address, Grants: g, Quota: u.Quota, Disabled: u.Disabled, Reason: u.Reason, Created: u.Created}
}

func (a *adminAPI) fileOnly() error {
	if userFileRole(a.cfg()) != roleLogins {
		return conflict("logins come from a read-only backend (sql or dovecot); change them there (a suspension by Sluice is lifted with DELETE /api/v1/logins/{login}/suspension)")
	}
	return nil
}

func (a *adminAPI) listLogins(w http.ResponseWriter, r *http.Request) error {
	list, err := a.users.List()
	if err != nil {
		return err
	}
	out := make([]loginJSON, 0, len(list))
	for _, u := range list {
		out = append(out, toJSON(u))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *adminAPI) getLogin(w http.ResponseWriter, r *http.Request) error {
	u, err := a.users.Get(r.PathValue("login"))
	if errors.Is(err, userdb.ErrNotFound) {
		return notFound("no login %s", strings.ToLower(r.PathValue("login")))
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJSON(u))
	return nil
}

// optQuota is the quota of a change: absent (keep), null (back to the
// default) or a number.
type optQuota struct {
	set, null bool
	n         int
}

func (q *optQuota) UnmarshalJSON(b []byte) error {
	q.set = true
	if string(b) == "null" {
		q.null = true
		return nil
	}
	if err := json.Unmarshal(b, &q.n); err != nil {
		return badRequest("field \"quota\" must be a whole number of recipients per hour (0: unlimited), or null for the default, not %s", b)
	}
	return nil
}

type loginChange struct {
	Address  string    `json:"address"`
	Password *string   `json:"password"`
	Grants   *[]string `json:"grants"`
	Quota    optQuota  `json:"quota"`
	Disabled *bool     `json:"disabled"`
	Reason   *string   `json:"reason"`
}

func (c *loginChange) apply(u *userdb.User) error {
	if c.Password != nil {
		if n := len(*c.Password); n < minPasswordLen || n > maxPasswordLen {
			return badRequest("password must be %d to %d characters", minPasswordLen, maxPasswordLen)
		}
		h, err := userdb.HashPassword(*c.Password)
		if err != nil {
			return err
		}
		u.Hash = h
	}
	if c.Grants != nil {
		u.Grants = nil
		for _, g := range *c.Grants {
			n, err := userdb.NormaliseGrant(g)
			if err != nil {
				return badRequest("%v", err)
			}
			u.Grants = append(u.Grants, n)
		}
	}
	switch {
	case c.Quota.null:
		u.Quota = nil
	case c.Quota.set:
		if c.Quota.n < 0 {
			return badRequest("quota must be 0 (unlimited) or more; null for the default")
		}
		q := c.Quota.n
		u.Quota = &q
	}
	if c.Disabled != nil {
		// The operator decides now: no longer the rule's suspension.
		u.Disabled, u.Suspended = *c.Disabled, false
		if !u.Disabled {
			u.Reason = ""
		}
	}
	if c.Reason != nil {
		u.Reason = *c.Reason
	}
	return nil
}

// summary is what a change did, for the log (never the password).
func (c *loginChange) summary(u *userdb.User) []any {
	out := []any{"login", u.Address}
	if c.Password != nil {
		out = append(out, "password", "changed")
	}
	if c.Grants != nil {
		out = append(out, "grants", strings.Join(u.Grants, " "))
	}
	if c.Quota.set {
		q := "default"
		if u.Quota != nil {
			q = fmt.Sprint(*u.Quota)
		}
		out = append(out, "quota", q)
	}
	if c.Disabled != nil || c.Reason != nil {
		out = append(out, "disabled", u.Disabled, "reason", u.Reason)
	}
	return out
}

func (a *adminAPI) createLogin(w http.ResponseWriter, r *http.Request) error {
	if err := a.fileOnly(); err != nil {
		return err
	}
	var c loginChange
	if err := decodeJSON(w, r, &c); err != nil {
		return err
	}
	addr := strings.ToLower(strings.TrimSpace(c.Address))
	if err := userdb.CheckAddress(addr); err != nil {
		return badRequest("address: %v", err)
	}
	if c.Password == nil {
		return badRequest("password is required")
	}
	var created *userdb.User
	err := a.users.Update(func(m map[string]*userdb.User) error {
		if m[addr] != nil {
			return conflict("login %s exists already; change it with PATCH /api/v1/logins/%s", addr, addr)
		}
		u := &userdb.User{Address: addr, Created: time.Now().UTC()}
		if err := c.apply(u); err != nil {
			return err
		}
		m[addr] = u
		created = u
		return nil
	})
	if err != nil {
		return err
	}
	a.changed(r, "login created", c.summary(created)...)
	writeJSON(w, http.StatusCreated, toJSON(created))
	return nil
}

func (a *adminAPI) updateLogin(w http.ResponseWriter, r *http.Request) error {
	if err := a.fileOnly(); err != nil {
		return err
	}
	var c loginChange
	if err := decodeJSON(w, r, &c); err != nil {
		return err
	}
	addr := strings.ToLower(r.PathValue("login"))
	if c.Address != "" && !strings.EqualFold(strings.TrimSpace(c.Address), addr) {
		return badRequest("address cannot be changed (it is the login); create the new login and delete this one")
	}
	var updated *userdb.User
	lifted := false
	err := a.users.Update(func(m map[string]*userdb.User) error {
		u := m[addr]
		if u == nil {
			return notFound("no login %s", addr)
		}
		if err := c.apply(u); err != nil {
			return err
		}
		if c.Disabled != nil && !*c.Disabled {
			// Enabling lifts the compromise rule's suspension on every
			// instance too; if the store cannot, nothing is changed.
			var err error
			if lifted, err = a.liftStored(r, addr); err != nil {
				return err
			}
		}
		updated = u
		return nil
	})
	if err != nil {
		return err
	}
	summary := c.summary(updated)
	if lifted {
		summary = append(summary, "suspension", "lifted")
	}
	a.changed(r, "login updated", summary...)
	writeJSON(w, http.StatusOK, toJSON(updated))
	return nil
}

func (a *adminAPI) deleteLogin(w http.ResponseWriter, r *http.Request) error {
	if err := a.fileOnly(); err != nil {
		return err
	}
	addr := strings.ToLower(r.PathValue("login"))
	err := a.users.Update(func(m map[string]*userdb.User) error {
		if m[addr] == nil {
			return notFound("no login %s", addr)
		}
		delete(m, addr)
		return nil
	})
	if err != nil {
		return err
	}
	a.changed(r, "login deleted", "login", addr)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// loginUsage answers for logins of the user file and, when other backends
// are configured, for any address (their logins are not listed here).
func (a *adminAPI) loginUsage(w http.ResponseWriter, r *http.Request) error {
	addr := strings.ToLower(r.PathValue("login"))
	if userdb.CheckAddress(addr) != nil {
		return notFound("no login %s", addr)
	}
	var override *int
	state := map[string]any{"suspended": false, "disabled": false, "reason": ""}
	u, err := a.users.Get(addr)
	switch {
	case err == nil:
		override = u.Quota
		state["suspended"], state["disabled"], state["reason"] = ruleSuspended(u), u.Disabled, u.Reason
	case !errors.Is(err, userdb.ErrNotFound):
		return err
	case backendNames(a.cfg()) == "":
		return notFound("no login %s", addr)
	}
	rep, err := quotaShow(r.Context(), a.quota, a.cfg(), addr, override)
	if err != nil {
		a.log.Error("admin api: quota store", "login", addr, "err", err)
		return &apiError{http.StatusServiceUnavailable, "the quota store did not answer; try again"}
	}
	sus, liftedAt, err := a.susp.State(r.Context(), addr)
	switch {
	case err != nil:
		return a.suspStoreDown(addr, err)
	case liftedElsewhere(u, sus, liftedAt):
		// Lifted on another instance; this user file catches up at the
		// login's next AUTH, which lets it in.
		state["suspended"], state["disabled"], state["reason"] = false, false, ""
	case sus != nil:
		// Suspended by the compromise rule on some instance: the login
		// cannot log in on any, whatever backend holds it.
		if u == nil || !u.Disabled || u.Reason == "" {
			state["reason"] = sus.Reason
		}
		state["suspended"], state["disabled"], state["since"] = true, true, sus.Since.UTC()
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota": rep, "state": state})
	return nil
}

func (a *adminAPI) suspStoreDown(login string, err error) error {
	a.log.Error("admin api: suspension store", "login", login, "err", err)
	return &apiError{http.StatusServiceUnavailable, "the suspension store did not answer; nothing was changed; try again"}
}

// liftStored lifts the login's suspension in the suspension store.
func (a *adminAPI) liftStored(r *http.Request, login string) (bool, error) {
	lifted, err := a.susp.Lift(r.Context(), login)
	if err != nil {
		return false, a.suspStoreDown(login, err)
	}
	return lifted, nil
}

// liftSuspension lifts the compromise rule's suspension of a login of any
// backend: in the suspension store (every instance), and in the user file
// when the login is disabled there for suspected abuse. A login disabled
// by an operator, or in the hosting panel, stays disabled.
func (a *adminAPI) liftSuspension(w http.ResponseWriter, r *http.Request) error {
	addr := strings.ToLower(r.PathValue("login"))
	if userdb.CheckAddress(addr) != nil {
		return notFound("no login %s", addr)
	}
	lifted, err := a.liftStored(r, addr)
	if err != nil {
		return err
	}
	if userFileRole(a.cfg()) != roleNone {
		enabled, err := enableInFile(a.users, addr, false)
		if err != nil {
			return err
		}
		lifted = lifted || enabled
	}
	if !lifted {
		return notFound("login %s is not suspended", addr)
	}
	a.changed(r, "suspension lifted", "login", addr)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type heldJSON struct {
	ID       string    `json:"id"`
	Login    string    `json:"login"`
	From     string    `json:"from"`
	Rcpts    int       `json:"recipients"`
	Received time.Time `json:"received"`
	Reason   string    `json:"reason"`
}

// queued calls fn for each readable message of the queue with its state.
func (a *adminAPI) queued(fn func(id string, env *spool.Envelope, st *spool.State)) error {
	ids, err := a.spool.List()
	if err != nil {
		return err
	}
	for _, id := range ids {
		env, rc, err := a.spool.Open(id)
		if err != nil {
			continue // delivered and removed meanwhile, or not complete
		}
		rc.Close()
		st, err := a.spool.LoadState(id, env)
		if err != nil {
			continue
		}
		fn(id, env, st)
	}
	return nil
}

func (a *adminAPI) listHeld(w http.ResponseWriter, r *http.Request) error {
	out := []heldJSON{}
	err := a.queued(func(id string, env *spool.Envelope, st *spool.State) {
		if st.Held {
			out = append(out, heldJSON{id, env.Login, env.From, len(env.To), env.Received, st.HeldWhy})
		}
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *adminAPI) heldState(id string) (*spool.State, error) {
	env, rc, err := a.spool.Open(id)
	if errors.Is(err, spool.ErrNotFound) {
		return nil, notFound("no message %s in the queue", id)
	}
	if err != nil {
		return nil, err
	}
	rc.Close()
	st, err := a.spool.LoadState(id, env)
	if err != nil {
		return nil, err
	}
	if !st.Held {
		return nil, conflict("message %s is not held", id)
	}
	return st, nil
}

func (a *adminAPI) releaseHeld(w http.ResponseWriter, r *http.Request) error {
	id := strings.ToUpper(r.PathValue("id"))
	st, err := a.heldState(id)
	if err != nil {
		return err
	}
	why := st.HeldWhy
	st.Held, st.HeldWhy, st.NextTry = false, "", time.Now()
	if err := a.spool.SaveState(id, st); err != nil {
		return err
	}
	a.relay.Kick()
	a.changed(r, "held message released", "id", id, "was_held_for", why)
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": "released"})
	return nil
}

func (a *adminAPI) deleteHeld(w http.ResponseWriter, r *http.Request) error {
	id := strings.ToUpper(r.PathValue("id"))
	st, err := a.heldState(id)
	if err != nil {
		return err
	}
	if err := a.spool.Remove(id); err != nil {
		return err
	}
	a.changed(r, "held message deleted", "id", id, "was_held_for", st.HeldWhy)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *adminAPI) listSuppressions(w http.ResponseWriter, r *http.Request) error {
	out := []relay.Suppression{}
	if s := a.relay.Suppressions(); s != nil {
		out = append(out, s.List()...)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *adminAPI) deleteSuppression(w http.ResponseWriter, r *http.Request) error {
	rcpt := strings.ToLower(r.PathValue("rcpt"))
	domain := r.URL.Query().Get("sender_domain")
	s := a.relay.Suppressions()
	if s == nil || s.Delete(domain, rcpt) == 0 {
		if domain != "" {
			return notFound("%s is not suppressed for mail from %s", rcpt, domain)
		}
		return notFound("%s is not suppressed", rcpt)
	}
	a.changed(r, "suppression deleted", "rcpt", rcpt, "sender_domain", domain)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type queueJSON struct {
	Messages  int        `json:"messages"`
	Held      int        `json:"held"`
	Deferred  int        `json:"deferred"`
	Pending   int        `json:"recipients_pending"`
	OldestRcv *time.Time `json:"oldest_received,omitempty"`
}

func (a *adminAPI) queueSummary(w http.ResponseWriter, r *http.Request) error {
	var sum queueJSON
	err := a.queued(func(id string, env *spool.Envelope, st *spool.State) {
		sum.Messages++
		if sum.OldestRcv == nil || env.Received.Before(*sum.OldestRcv) {
			t := env.Received
			sum.OldestRcv = &t
		}
		switch {
		case st.Held:
			sum.Held++
		case st.Attempts > 0:
			sum.Deferred++
		}
		sum.Pending += len(st.Pending())
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}
