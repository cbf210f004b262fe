package screen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"sluice/relay/spool"
)

// FileSuspensions records suspensions in a small JSON file in the data dir
// (data_dir/suspended.json), for one instance without Redis: logins of
// backends Sluice cannot write (SQL, Dovecot) are refused all the same,
// also after a restart. Writes take a lock file, so the server and the
// `sluice user` commands can both change it; each write is atomic
// (temporary file, fsync, rename, fsync of the directory). Readers notice
// a change by the file's inode, size and time, one stat per lookup.
// Entries (suspensions and lift marks) older than the TTL are forgotten
// and dropped at the next write.
type FileSuspensions struct {
	path string
	ttl  time.Duration

	mu      sync.Mutex
	stamp   spool.Stamp
	entries map[string]suspRecord
}

type suspFile struct {
	Suspensions []suspRecord `json:"suspensions"`
}

// OpenFileSuspensions uses the file at path (created at the first
// suspension); ttl 0 means SuspensionTTL.
func OpenFileSuspensions(path string, ttl time.Duration) *FileSuspensions {
	if ttl <= 0 {
		ttl = SuspensionTTL
	}
	return &FileSuspensions{path: path, ttl: ttl}
}

// Path is the file's path.
func (f *FileSuspensions) Path() string { return f.path }

func (f *FileSuspensions) fail(what string, err error) error {
	return fmt.Errorf("%w: suspensions file %s: %s: %v", ErrStore, f.path, what, err)
}

// refresh rereads the file when it changed on disk; f.mu is held.
func (f *FileSuspensions) refresh() error {
	fi, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) {
		f.entries, f.stamp = map[string]suspRecord{}, spool.Stamp{}
		return nil
	}
	if err != nil {
		return f.fail("stat", err)
	}
	st := spool.StampOf(fi)
	if f.entries != nil && st == f.stamp {
		return nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return f.fail("read", err)
	}
	var sf suspFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return f.fail("not valid JSON", err)
	}
	m := make(map[string]suspRecord, len(sf.Suspensions))
	for _, s := range sf.Suspensions {
		s.Login = strings.ToLower(s.Login)
		m[s.Login] = s
	}
	f.entries, f.stamp = m, st
	return nil
}

// live reports whether an entry is within the TTL of its last write.
func (f *FileSuspensions) live(rec suspRecord) bool {
	at := rec.Since
	if rec.Lifted != nil {
		at = *rec.Lifted
	}
	return time.Since(at) < f.ttl
}

// State returns the login's suspension (nil: none) and when a suspension
// of it was last lifted (zero: not within the TTL).
func (f *FileSuspensions) State(_ context.Context, login string) (*Suspension, time.Time, error) {
	login = strings.ToLower(login)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refresh(); err != nil {
		return nil, time.Time{}, err
	}
	rec, ok := f.entries[login]
	if !ok || !f.live(rec) {
		return nil, time.Time{}, nil
	}
	sus, lifted := rec.suspension(login)
	return sus, lifted, nil
}

// Suspended returns the reason login is suspended, or "".
func (f *FileSuspensions) Suspended(ctx context.Context, login string) (string, error) {
	return reasonOf(f.State(ctx, login))
}

// Record suspends login with reason unless it is suspended already.
func (f *FileSuspensions) Record(_ context.Context, login, reason string) (bool, error) {
	login = strings.ToLower(login)
	added := false
	err := f.update(func(m map[string]suspRecord) {
		if rec, ok := m[login]; ok && rec.State == suspActive {
			return
		}
		m[login] = suspRecord{State: suspActive, Login: login, Reason: reason, Since: time.Now().UTC()}
		added = true
	})
	return added, err
}

// Lift ends the login's suspension and leaves the mark that it was
// lifted (see RedisSuspensions.Lift). A login the file has no entry for
// is left alone, and a file with nothing to change is not written: one
// instance needs no mark (its user file is enabled by the same command),
// and `sluice user enable` run as another user does not create a file the
// server could not read.
func (f *FileSuspensions) Lift(_ context.Context, login string) (bool, error) {
	login = strings.ToLower(login)
	lifted := false
	f.mu.Lock()
	err := f.refresh()
	_, known := f.entries[login]
	f.mu.Unlock()
	if err != nil || !known {
		return false, err
	}
	err = f.update(func(m map[string]suspRecord) {
		rec, ok := m[login]
		if !ok {
			return
		}
		lifted = rec.State == suspActive
		now := time.Now().UTC()
		m[login] = suspRecord{State: suspLifted, Login: login, Since: now, Lifted: &now}
	})
	return lifted, err
}

// update changes the entries under the lock file (live ones only: expired
// entries are dropped) and writes them back if anything changed.
func (f *FileSuspensions) update(fn func(map[string]suspRecord)) error {
	unlock, err := spool.Lock(f.path)
	if err != nil {
		return f.fail("lock", err)
	}
	defer unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = nil // read it again: another process may have written
	if err := f.refresh(); err != nil {
		return err
	}
	m := make(map[string]suspRecord, len(f.entries)+1)
	for k, rec := range f.entries {
		if f.live(rec) {
			m[k] = rec
		}
	}
	fn(m)
	if reflect.DeepEqual(m, f.entries) {
		return nil
	}
	sf := suspFile{Suspensions: make([]suspRecord, 0, len(m))}
	for _, s := range m {
		sf.Suspensions = append(sf.Suspensions, s)
	}
	sort.Slice(sf.Suspensions, func(i, j int) bool { return sf.Suspensions[i].Login < sf.Suspensions[j].Login })
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	if err := spool.ReplaceFile(f.path, append(data, '\n'), 0o600); err != nil {
		return f.fail("write", err)
	}
	f.entries = nil // the next lookup reads what was written, with its stamp
	return nil
}
