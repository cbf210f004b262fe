// Package dkim keeps Sluice's DKIM keys (RSA-2048 and Ed25519, per domain
// and selector, in the data dir), signs accepted messages with them through
// emersion/go-msgauth, and says what to publish in DNS.
//
// A key is pending (created, its DNS record not yet trusted to be
// published), active (signs) or retired (kept only for the record). The
// newest active key of each algorithm signs; a domain with an RSA and an
// Ed25519 key gets two signatures. Rotation: `dkim keygen` a new selector
// (pending while the old key signs), publish its record, `dkim activate`
// it, and `dkim retire` the old one once its signatures no longer matter.
package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"sluice/relay/spool"
)

// Key states.
const (
	Pending = "pending"
	Active  = "active"
	Retired = "retired"
)

// Algorithms.
const (
	RSA     = "rsa"
	Ed25519 = "ed25519"
)

// Key is one DKIM key pair.
type Key struct {
	Domain    string    `json:"domain"`
	Selector  string    `json:"selector"`
	Algo      string    `json:"algo"`
	State     string    `json:"state"`
	Created   time.Time `json:"created"`
	Activated time.Time `json:"activated,omitempty"`
	File      string    `json:"file"` // private key, relative to the keyring dir

	signer crypto.Signer
	pub    string // PublicKeyBase64, derived once by setSigner
}

// setSigner sets the parsed private key and derives the public key's
// record value from it, once per load rather than once per use (the
// pre-check compares it with the DNS for every message it judges).
func (k *Key) setSigner(s crypto.Signer) {
	k.signer = s
	switch pub := s.Public().(type) {
	case ed25519.PublicKey:
		k.pub = base64.StdEncoding.EncodeToString(pub)
	default:
		der, _ := x509.MarshalPKIXPublicKey(pub)
		k.pub = base64.StdEncoding.EncodeToString(der)
	}
}

// Signer returns the parsed private key (loaded once, at reload).
func (k *Key) Signer() crypto.Signer { return k.signer }

// Name is "selector._domainkey.domain", where the TXT record goes.
func (k *Key) Name() string { return k.Selector + "._domainkey." + k.Domain }

// PublicKeyBase64 is the p= value of the key's TXT record.
func (k *Key) PublicKeyBase64() string { return k.pub }

// TXT is the exact record value to publish.
func (k *Key) TXT() string {
	return fmt.Sprintf("v=DKIM1; k=%s; p=%s", k.Algo, k.PublicKeyBase64())
}

// ZoneLine is the record in zone-file form, split into 255-byte strings.
func (k *Key) ZoneLine() string {
	txt := k.TXT()
	var parts []string
	for len(txt) > 255 {
		parts = append(parts, `"`+txt[:255]+`"`)
		txt = txt[255:]
	}
	parts = append(parts, `"`+txt+`"`)
	return fmt.Sprintf("%s. 3600 IN TXT ( %s )", k.Name(), strings.Join(parts, " "))
}

// Keyring is the set of keys in a directory: index.json plus one PEM file
// per key (mode 0600). Several processes may use it: writers take a lock
// file; readers reload when the index changes.
type Keyring struct {
	dir string

	mu      sync.RWMutex
	keys    []*Key
	stamp   time.Time
	size    int64
	signFor map[string][]*Key // domain -> signing keys
}

// Open loads the keyring in dir (created if missing).
func Open(dir string) (*Keyring, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	k := &Keyring{dir: dir}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Keyring) indexPath() string { return filepath.Join(k.dir, "index.json") }

// Reload reads the index and parses every non-retired key once.
func (k *Keyring) Reload() error {
	fi, err := os.Stat(k.indexPath())
	if errors.Is(err, os.ErrNotExist) {
		k.set(nil, time.Time{}, 0)
		return nil
	}
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	data, err := os.ReadFile(k.indexPath())
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	var keys []*Key
	if err := json.Unmarshal(data, &keys); err != nil {
		return fmt.Errorf("dkim: %s: %w", k.indexPath(), err)
	}
	for _, key := range keys {
		if key.State == Retired {
			continue
		}
		s, err := loadPrivate(filepath.Join(k.dir, key.File))
		if err != nil {
			return fmt.Errorf("dkim: key %s: %w", key.Name(), err)
		}
		key.setSigner(s)
	}
	k.set(keys, fi.ModTime(), fi.Size())
	return nil
}

// ReloadIfChanged reloads when the index file changed on disk.
func (k *Keyring) ReloadIfChanged() error {
	fi, err := os.Stat(k.indexPath())
	k.mu.RLock()
	stamp, size := k.stamp, k.size
	k.mu.RUnlock()
	if errors.Is(err, os.ErrNotExist) && stamp.IsZero() {
		return nil
	}
	if err == nil && fi.ModTime().Equal(stamp) && fi.Size() == size {
		return nil
	}
	return k.Reload()
}

func (k *Keyring) set(keys []*Key, stamp time.Time, size int64) {
	signFor := map[string][]*Key{}
	newest := map[string]*Key{}
	for _, key := range keys {
		if key.State != Active {
			continue
		}
		id := key.Domain + "\x00" + key.Algo
		if cur := newest[id]; cur == nil || key.Activated.After(cur.Activated) {
			newest[id] = key
		}
	}
	for _, key := range newest {
		signFor[key.Domain] = append(signFor[key.Domain], key)
	}
	for _, ks := range signFor {
		// RSA first: its signature is the one every verifier understands.
		sort.Slice(ks, func(i, j int) bool { return ks[i].Algo > ks[j].Algo })
	}
	k.mu.Lock()
	k.keys, k.stamp, k.size, k.signFor = keys, stamp, size, signFor
	k.mu.Unlock()
}

// SigningKeys returns the keys that sign for domain (none: unsigned).
func (k *Keyring) SigningKeys(domain string) []*Key {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.signFor[strings.ToLower(domain)]
}

// Keys returns all keys, sorted by domain, selector, algorithm.
func (k *Keyring) Keys() []*Key {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := append([]*Key(nil), k.keys...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		if a.Selector != b.Selector {
			return a.Selector < b.Selector
		}
		return a.Algo < b.Algo
	})
	return out
}

var (
	selectorRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	domainRe   = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$`)
)

// Generate creates keys for domain and selector (algo: rsa, ed25519 or
// both). They are active when the domain has no active key of that
// algorithm yet, pending otherwise.
func (k *Keyring) Generate(domain, selector, algo string) ([]*Key, error) {
	domain, selector = strings.ToLower(domain), strings.ToLower(selector)
	if !domainRe.MatchString(domain) {
		return nil, fmt.Errorf("%q is not a domain name like example.com", domain)
	}
	if !selectorRe.MatchString(selector) {
		return nil, fmt.Errorf("selector %q: use letters, digits and dashes, like s2026", selector)
	}
	var algos []string
	switch algo {
	case RSA, Ed25519:
		algos = []string{algo}
	case "both":
		algos = []string{RSA, Ed25519}
	default:
		return nil, fmt.Errorf("--algo %q: use rsa, ed25519 or both", algo)
	}
	var made []*Key
	err := k.update(func(keys []*Key) ([]*Key, error) {
		// Check every selector before any key file is written.
		for _, a := range algos {
			sel := selector
			if len(algos) > 1 {
				sel = selector + "-" + a
			}
			for _, x := range keys {
				if x.Domain == domain && x.Selector == sel {
					return nil, fmt.Errorf("%s already has a key with selector %s; choose another selector", domain, sel)
				}
			}
		}
		for _, a := range algos {
			sel := selector
			if len(algos) > 1 {
				// One TXT record per name: two algorithms need two
				// selectors, or verifiers pick the wrong key.
				sel = selector + "-" + a
			}
			hasActive := false
			for _, x := range keys {
				if x.Domain == domain && x.Selector == sel {
					return nil, fmt.Errorf("%s already has a key with selector %s; choose another selector", domain, sel)
				}
				if x.Domain == domain && x.Algo == a && x.State == Active {
					hasActive = true
				}
			}
			signer, pemBytes, err := newPrivate(a)
			if err != nil {
				return nil, err
			}
			file := filepath.Join(domain, sel+"."+a+".pem")
			if err := os.MkdirAll(filepath.Join(k.dir, domain), 0o700); err != nil {
				return nil, err
			}
			if err := spool.ReplaceFile(filepath.Join(k.dir, file), pemBytes, 0o600); err != nil {
				return nil, err
			}
			key := &Key{Domain: domain, Selector: sel, Algo: a, State: Pending, Created: time.Now().UTC(), File: file}
			key.setSigner(signer)
			if !hasActive {
				key.State, key.Activated = Active, key.Created
			}
			keys = append(keys, key)
			made = append(made, key)
		}
		return keys, nil
	})
	return made, err
}

// Activate makes a pending key sign (for its algorithm it replaces the
// key that signed before, which stays published until retired).
func (k *Keyring) Activate(domain, selector string) error {
	return k.setState(domain, selector, Active)
}

// Retire stops a key for good; its private key file is removed.
func (k *Keyring) Retire(domain, selector string) error {
	return k.setState(domain, selector, Retired)
}

func (k *Keyring) setState(domain, selector, state string) error {
	domain, selector = strings.ToLower(domain), strings.ToLower(selector)
	var retiredFiles []string
	defer func() {
		// Private keys of retired selectors go only once the index that
		// no longer needs them is safely written.
		for _, f := range retiredFiles {
			os.Remove(f)
		}
	}()
	err := k.update(func(keys []*Key) ([]*Key, error) {
		found := false
		for _, x := range keys {
			// "s1" also names the pair s1-rsa and s1-ed25519 that
			// keygen --algo both made.
			match := x.Selector == selector || x.Selector == selector+"-"+x.Algo
			if x.Domain == domain && match && x.State != Retired {
				found = true
				x.State = state
				if state == Active {
					x.Activated = time.Now().UTC()
				}
				if state == Retired {
					retiredFiles = append(retiredFiles, filepath.Join(k.dir, x.File))
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("no key for %s with selector %s (see `sluice dkim list`)", domain, selector)
		}
		return keys, nil
	})
	if err != nil {
		retiredFiles = nil
	}
	return err
}

func (k *Keyring) update(fn func([]*Key) ([]*Key, error)) error {
	unlock, err := spool.Lock(k.indexPath())
	if err != nil {
		return fmt.Errorf("dkim: lock: %w", err)
	}
	defer unlock()
	if err := k.Reload(); err != nil {
		return err
	}
	k.mu.RLock()
	keys := append([]*Key(nil), k.keys...)
	k.mu.RUnlock()
	keys, err = fn(keys)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return err
	}
	if err := spool.ReplaceFile(k.indexPath(), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	return k.Reload()
}

func newPrivate(algo string) (crypto.Signer, []byte, error) {
	var s crypto.Signer
	var err error
	if algo == RSA {
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		_, s, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, nil, err
	}
	return s, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func loadPrivate(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("not a PEM file")
	}
	var key any
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	if r, ok := s.(*rsa.PrivateKey); ok {
		r.Precompute()
	}
	return s, nil
}
