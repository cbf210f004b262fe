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
	"strings"
	"time"

	"sluice/relay"
	"sluice/relay/spool"
	"sluice/screen"
	"sluice/submit/userdb"
)

// adminAPI is the provisioning API of docs/openapi.yaml, on the HTTP
// listener, behind a bearer token ([http] admin_token; off without one).
type adminAPI struct {
	tokenSum [32]byte
	cfg      func() *Config
	users    *userdb.File
	quota    *screen.Quota
	spool    *spool.Spool
	relay    *relay.Relay
	log      *slog.Logger
}

func (a *adminAPI) register(mux *http.ServeMux) {
	h := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, a.auth(f))
	}
	h("GET /api/v1/logins", a.listLogins)
	h("POST /api/v1/logins", a.createLogin)
	h("GET /api/v1/logins/{login}", a.getLogin)
	h("PATCH /api/v1/logins/{login}", a.updateLogin)
	h("DELETE /api/v1/logins/{login}", a.deleteLogin)
	h("GET /api/v1/logins/{login}/usage", a.loginUsage)
	h("GET /api/v1/held", a.listHeld)
	h("POST /api/v1/held/{id}/release", a.releaseHeld)
	h("DELETE /api/v1/held/{id}", a.deleteHeld)
	h("GET /api/v1/suppressions", a.listSuppressions)
	h("DELETE /api/v1/suppressions/{rcpt}", a.deleteSuppression)
	h("GET /api/v1/queue", a.queueSummary)
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

// auth checks the bearer token in constant time (both sides hashed, so
// neither the content nor the length leaks through timing).
func (a *adminAPI) auth(f func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		given := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(given))
		if subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		if err := f(w, r); err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				writeJSON(w, ae.status, map[string]string{"error": ae.msg})
				return
			}
			a.log.Error("admin api", "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error; see the server log"})
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("the request body is not valid JSON for this call: %v", err)
	}
	return nil
}

func (a *adminAPI) changed(r *http.Request, what string, args ...any) {
	a.log.Info("admin api change", append([]any{"what", what, "by", "admin token", "from", r.RemoteAddr}, args...)...)
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
	if !fileBackendConfigured(a.cfg()) {
		return &apiError{http.StatusConflict, "logins come from a read-only backend (sql or dovecot); change them there"}
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
		return notFound("no login %s", r.PathValue("login"))
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJSON(u))
	return nil
}

type loginChange struct {
	Address  string    `json:"address"`
	Password *string   `json:"password"`
	Grants   *[]string `json:"grants"`
	Quota    *int      `json:"quota"`
	Disabled *bool     `json:"disabled"`
	Reason   *string   `json:"reason"`
}

func (c *loginChange) apply(u *userdb.User) error {
	if c.Password != nil {
		if len(*c.Password) < 8 || len(*c.Password) > 1024 {
			return badRequest("password must be 8 to 1024 characters")
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
	if c.Quota != nil {
		if *c.Quota < 0 {
			return badRequest("quota must be 0 (unlimited) or more; omit it for the default")
		}
		q := *c.Quota
		u.Quota = &q
	}
	if c.Disabled != nil {
		u.Disabled = *c.Disabled
		if !u.Disabled {
			u.Reason = ""
		}
	}
	if c.Reason != nil {
		u.Reason = *c.Reason
	}
	return nil
}

func (a *adminAPI) createLogin(w http.ResponseWriter, r *http.Request) error {
	if err := a.fileOnly(); err != nil {
		return err
	}
	var c loginChange
	if err := decodeJSON(r, &c); err != nil {
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
			return &apiError{http.StatusConflict, "login " + addr + " exists already; use PATCH"}
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
	a.changed(r, "login created", "login", addr)
	writeJSON(w, http.StatusCreated, toJSON(created))
	return nil
}

func (a *adminAPI) updateLogin(w http.ResponseWriter, r *http.Request) error {
	if err := a.fileOnly(); err != nil {
		return err
	}
	var c loginChange
	if err := decodeJSON(r, &c); err != nil {
		return err
	}
	addr := strings.ToLower(r.PathValue("login"))
	var updated *userdb.User
	err := a.users.Update(func(m map[string]*userdb.User) error {
		u := m[addr]
		if u == nil {
			return notFound("no login %s", addr)
		}
		if err := c.apply(u); err != nil {
			return err
		}
		updated = u
		return nil
	})
	if err != nil {
		return err
	}
	a.changed(r, "login updated", "login", addr, "password", c.Password != nil, "grants", c.Grants != nil, "quota", c.Quota != nil, "disabled", c.Disabled)
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

func (a *adminAPI) loginUsage(w http.ResponseWriter, r *http.Request) error {
	addr := strings.ToLower(r.PathValue("login"))
	var override *int
	state := map[string]any{"suspended": false}
	if u, err := a.users.Get(addr); err == nil {
		override = u.Quota
		state["suspended"] = u.Disabled && strings.HasPrefix(u.Reason, "suspended")
		state["disabled"] = u.Disabled
		state["reason"] = u.Reason
	}
	rep, err := quotaShow(r.Context(), a.quota, a.cfg(), addr, override)
	if err != nil {
		return &apiError{http.StatusServiceUnavailable, "the quota store did not answer; try again"}
	}
	writeJSON(w, http.StatusOK, map[string]any{"quota": rep, "state": state})
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

func (a *adminAPI) listHeld(w http.ResponseWriter, r *http.Request) error {
	ids, err := a.spool.List()
	if err != nil {
		return err
	}
	out := []heldJSON{}
	for _, id := range ids {
		env, rc, err := a.spool.Open(id)
		if err != nil {
			continue
		}
		rc.Close()
		st, _ := a.spool.LoadState(id, env)
		if st != nil && st.Held {
			out = append(out, heldJSON{id, env.Login, env.From, len(env.To), env.Received, st.HeldWhy})
		}
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
		return nil, &apiError{http.StatusConflict, "message " + id + " is not held"}
	}
	return st, nil
}

func (a *adminAPI) releaseHeld(w http.ResponseWriter, r *http.Request) error {
	id := strings.ToUpper(r.PathValue("id"))
	st, err := a.heldState(id)
	if err != nil {
		return err
	}
	st.Held, st.HeldWhy, st.NextTry = false, "", time.Now()
	if err := a.spool.SaveState(id, st); err != nil {
		return err
	}
	a.relay.Kick()
	a.changed(r, "held message released", "id", id)
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": "released"})
	return nil
}

func (a *adminAPI) deleteHeld(w http.ResponseWriter, r *http.Request) error {
	id := strings.ToUpper(r.PathValue("id"))
	if _, err := a.heldState(id); err != nil {
		return err
	}
	if err := a.spool.Remove(id); err != nil {
		return err
	}
	a.changed(r, "held message deleted", "id", id)
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
	rcpt := r.PathValue("rcpt")
	s := a.relay.Suppressions()
	if s == nil || s.Delete(r.URL.Query().Get("sender_domain"), rcpt) == 0 {
		return notFound("%s is not suppressed", rcpt)
	}
	a.changed(r, "suppression deleted", "rcpt", rcpt)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *adminAPI) queueSummary(w http.ResponseWriter, r *http.Request) error {
	ids, err := a.spool.List()
	if err != nil {
		return err
	}
	sum := map[string]any{"messages": 0, "held": 0, "deferred": 0, "recipients_pending": 0}
	var oldest time.Time
	n, held, deferred, pending := 0, 0, 0, 0
	for _, id := range ids {
		env, rc, err := a.spool.Open(id)
		if err != nil {
			continue
		}
		rc.Close()
		st, _ := a.spool.LoadState(id, env)
		n++
		if oldest.IsZero() || env.Received.Before(oldest) {
			oldest = env.Received
		}
		switch {
		case st.Held:
			held++
		case st.Attempts > 0:
			deferred++
		}
		pending += len(st.Pending())
	}
	sum["messages"], sum["held"], sum["deferred"], sum["recipients_pending"] = n, held, deferred, pending
	if !oldest.IsZero() {
		sum["oldest_received"] = oldest
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}
