// Package userdb is the file backend of Sluice's logins: a JSON file in the
// data directory holding each login's password hash (argon2id), the sender
// addresses and domains granted to it, its hourly quota and whether it is
// disabled. The running server notices when the file changes (the user
// subcommands rewrite it atomically) and uses the new contents at the next
// login, without a restart.
package userdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"sluice/relay/spool"
	"sluice/submit"
)

// User is one login as stored in the file.
type User struct {
	Address  string   `json:"address"`
	Hash     string   `json:"hash"`
	Grants   []string `json:"grants,omitempty"`
	Quota    *int     `json:"quota,omitempty"`
	Disabled bool     `json:"disabled,omitempty"`
	Reason   string   `json:"reason,omitempty"`
	// Suspended: Disabled by the content screen's compromise rule
	// (Suspend), not by an operator; enabling clears both.
	Suspended bool      `json:"suspended,omitempty"`
	Created   time.Time `json:"created"`
}

type fileFormat struct {
	Users []*User `json:"users"`
}

// ErrNotFound reports a login that is not in the file.
var ErrNotFound = errors.New("no such login")

// ErrExists reports a login that is already in the file.
var ErrExists = errors.New("login exists already")

// File is the user file. Its methods are safe for concurrent use; writers in
// different processes are serialised by a lock file.
type File struct {
	path string

	// CacheTTL is how long a verified password is remembered for its login
	// (see verifiedCache); 0 verifies every time. Set it before use.
	CacheTTL time.Duration
	verified *verifiedCache

	mu      sync.RWMutex
	users   map[string]*User
	stamp   spool.Stamp
	checked time.Time
}

// Open reads the user file at path; a missing file is an empty user list.
func Open(path string) (*File, error) {
	f := &File{path: path, verified: newVerifiedCache()}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

func (f *File) reload() error {
	fi, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) {
		f.mu.Lock()
		f.users = map[string]*User{}
		f.stamp = spool.Stamp{}
		f.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("userdb: %w", err)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("userdb: %w", err)
	}
	var ff fileFormat
	if err := json.Unmarshal(data, &ff); err != nil {
		return fmt.Errorf("userdb: %s is not valid: %w", f.path, err)
	}
	users := make(map[string]*User, len(ff.Users))
	for _, u := range ff.Users {
		users[strings.ToLower(u.Address)] = u
	}
	f.mu.Lock()
	f.users = users
	f.stamp = spool.StampOf(fi)
	f.mu.Unlock()
	return nil
}

// refresh reloads the file when it changed on disk. A stat at most every
// 250 ms keeps it cheap under load.
func (f *File) refresh() error {
	f.mu.RLock()
	fresh := time.Since(f.checked) < 250*time.Millisecond
	stamp := f.stamp
	f.mu.RUnlock()
	if fresh {
		return nil
	}
	f.mu.Lock()
	f.checked = time.Now()
	f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) {
		if stamp != (spool.Stamp{}) {
			return f.reload()
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("userdb: %w", err)
	}
	if spool.StampOf(fi) != stamp {
		return f.reload()
	}
	return nil
}

// Authenticate implements submit.Authenticator.
func (f *File) Authenticate(ctx context.Context, username, password string) (*submit.Login, error) {
	if err := f.refresh(); err != nil {
		return nil, err
	}
	name := strings.ToLower(strings.TrimSpace(username))
	f.mu.RLock()
	u := f.users[name]
	f.mu.RUnlock()
	if u == nil {
		CheckUnknown(password)
		return nil, submit.ErrBadCredentials
	}
	now := time.Now()
	if f.CacheTTL > 0 && f.verified.ok(name, u.Hash, password, now) {
		return u.login(), nil
	}
	ok, err := CheckPassword(u.Hash, password)
	if err != nil {
		return nil, fmt.Errorf("userdb: login %s: %w", name, err)
	}
	if !ok {
		return nil, submit.ErrBadCredentials
	}
	if f.CacheTTL > 0 {
		f.verified.remember(name, u.Hash, password, now.Add(f.CacheTTL))
	}
	return u.login(), nil
}

func (u *User) login() *submit.Login {
	l := &submit.Login{Name: strings.ToLower(u.Address), Quota: u.Quota, Disabled: u.Disabled, DisabledReason: u.Reason, Suspended: u.Disabled && u.Suspended}
	for _, g := range u.Grants {
		l.Grants = append(l.Grants, strings.ToLower(g))
	}
	return l
}

// Get returns a copy of one login, as the file says now.
func (f *File) Get(address string) (*User, error) {
	f.mu.Lock()
	f.checked = time.Time{}
	f.mu.Unlock()
	if err := f.refresh(); err != nil {
		return nil, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	u := f.users[strings.ToLower(address)]
	if u == nil {
		return nil, ErrNotFound
	}
	c := *u
	return &c, nil
}

// List returns copies of all logins, sorted by address.
func (f *File) List() ([]*User, error) {
	if err := f.reload(); err != nil {
		return nil, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*User, 0, len(f.users))
	for _, u := range f.users {
		c := *u
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

// Update reads the file under an exclusive lock, lets fn change the map of
// logins, and writes the result back atomically (temporary file, fsync,
// rename).
func (f *File) Update(fn func(users map[string]*User) error) error {
	unlock, err := spool.Lock(f.path)
	if err != nil {
		return fmt.Errorf("userdb: lock: %w", err)
	}
	defer unlock()
	if err := f.reload(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	users := make(map[string]*User, len(f.users))
	for k, u := range f.users {
		c := *u
		users[k] = &c
	}
	if err := fn(users); err != nil {
		return err
	}
	ff := fileFormat{Users: make([]*User, 0, len(users))}
	for _, u := range users {
		ff.Users = append(ff.Users, u)
	}
	sort.Slice(ff.Users, func(i, j int) bool { return ff.Users[i].Address < ff.Users[j].Address })
	data, err := json.MarshalIndent(ff, "", "  ")
	if err != nil {
		return err
	}
	if err := spool.ReplaceFile(f.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("userdb: %w", err)
	}
	f.users = users
	return nil
}

// NormaliseGrant checks and lower-cases a grant: an address or "@domain".
func NormaliseGrant(g string) (string, error) {
	g = strings.ToLower(strings.TrimSpace(g))
	if strings.HasPrefix(g, "@") {
		if len(g) < 4 || !strings.Contains(g[1:], ".") || strings.ContainsAny(g[1:], "@ ") {
			return "", fmt.Errorf("grant %q: a domain grant looks like @example.com", g)
		}
		return g, nil
	}
	if err := CheckAddress(g); err != nil {
		return "", fmt.Errorf("grant %q: %w", g, err)
	}
	return g, nil
}

// CheckAddress checks that a looks like a mailbox address local@domain.
func CheckAddress(a string) error {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || strings.ContainsAny(a, " <>\t\r\n") || !strings.Contains(a[at+1:], ".") && a[at+1:] != "localhost" {
		return fmt.Errorf("%q is not a mailbox address like name@example.com", a)
	}
	return nil
}

// Suspend disables a login with a reason (screen.Suspender); `sluice user
// enable` clears it.
func (f *File) Suspend(_ context.Context, login, reason string) error {
	return f.Update(func(users map[string]*User) error {
		u := users[strings.ToLower(login)]
		if u == nil {
			return ErrNotFound
		}
		u.Disabled, u.Suspended, u.Reason = true, true, reason
		return nil
	})
}

// Grants returns the grants and quota of a login in the file (for logins
// another backend authenticates, e.g. Dovecot); none when it is not here.
func (f *File) Grants(_ context.Context, login string) ([]string, *int, error) {
	u, err := f.Get(login)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return u.login().Grants, u.Quota, nil
}
