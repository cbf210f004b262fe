// Package spool is Sluice's durable message queue on local disk.
//
// A message is accepted only once it is on disk: Enqueue writes it to an
// unnamed file in the queue directory (O_TMPFILE; where the file system
// has none, a temporary file in tmp/), names it queue/ID, and returns once
// a sync that started after the naming has finished. With GroupCommit (the
// default) that sync is one syncfs(2) of the spool's file system shared by
// every message named before it started, so fifty concurrent submissions
// cost one flush, not fifty fsyncs of files and directories; without it,
// each file is fsynced and directory syncs are shared the same way. No
// caller is told its message is safe before a sync that covers it.
//
// Each queued message is one file, queue/ID: a first line "SLUICE-SPOOL 1",
// the envelope as one line of JSON, then the message bytes exactly as they
// will be delivered.
package spool

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const magic = "SLUICE-SPOOL 1\n"

// ErrNoSpace reports that the disk holding the spool is full.
var ErrNoSpace = errors.New("spool: no space left on device")

// ErrNotFound reports an ID that is not in the queue.
var ErrNotFound = errors.New("spool: no such message")

// Envelope is what the spool keeps beside the message bytes.
type Envelope struct {
	ID       string    `json:"id"`
	Login    string    `json:"login"`
	From     string    `json:"from"`
	To       []string  `json:"to"`
	ClientIP string    `json:"client_ip,omitempty"`
	Received time.Time `json:"received"`
	Size     int       `json:"size"`
	// CRC32C of the message bytes: a message cut short by a crash before
	// its sync (never acknowledged, so the client sends it again) is
	// recognised and never delivered.
	CRC32C uint32 `json:"crc32c"`
	// Hold, when set, keeps the message from delivery until an operator
	// releases it (`sluice queue release`); it says why.
	Hold string `json:"hold,omitempty"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt reports a spool file that is incomplete or damaged.
var ErrCorrupt = errors.New("spool: message file is incomplete or damaged")

// Spool is a queue directory. Its methods are safe for concurrent use.
type Spool struct {
	dir      string // root: holds queue/ and tmp/
	queueDir string
	tmpDir   string

	syncMu   sync.Mutex
	syncCond *sync.Cond
	gen      uint64 // incremented by each rename that needs a dir sync
	synced   uint64 // highest gen covered by a finished dir sync
	syncing  bool
	syncErr  error

	// GroupCommit makes concurrent Enqueue calls share one syncfs(2) of the
	// spool's file system instead of one fsync(2) each. It is the default:
	// one flush covers every message written before it started. Put the
	// spool on a file system of its own so that the flush carries nothing
	// else.
	GroupCommit bool

	// OnEnqueue, when set, is called with the ID of each message once it
	// is durable (the relay schedules its first delivery attempt).
	OnEnqueue func(id string)

	journal atomic.Pointer[journal] // StartJournal; nil: every message is a file at once
}

// Open creates the spool directories under dir if needed and returns the
// spool. Leftover temporary files from a crash are removed: they were never
// acknowledged.
func Open(dir string) (*Spool, error) {
	s := &Spool{dir: dir, queueDir: filepath.Join(dir, "queue"), tmpDir: filepath.Join(dir, "tmp"), GroupCommit: true}
	s.syncCond = sync.NewCond(&s.syncMu)
	for _, d := range []string{dir, s.queueDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", d, err)
		}
	}
	// Temporary files were never acknowledged (messages) or are superseded
	// by the previous state (state files).
	leftovers, _ := os.ReadDir(s.tmpDir)
	for _, e := range leftovers {
		os.Remove(filepath.Join(s.tmpDir, e.Name()))
	}
	return s, nil
}

// Dir returns the spool's root directory.
func (s *Spool) Dir() string { return s.dir }

var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// NewID returns a new queue ID: 16 characters, sortable by creation time
// (48 bits of milliseconds, then 32 random bits).
func NewID() string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789ABCDEFGHJKMNPQRSTVWXYZ", c) {
			return false
		}
	}
	return true
}

// Enqueue stores a message durably. parts are written one after the other
// (a prefix of added headers and the client's bytes, say) without being
// joined in memory first. When Enqueue returns nil the message survives a
// crash of the process or the machine.
func (s *Spool) Enqueue(env *Envelope, parts ...[]byte) error {
	if !validID(env.ID) {
		return fmt.Errorf("spool: invalid id %q", env.ID)
	}
	env.Size = 0
	crc := uint32(0)
	for _, p := range parts {
		env.Size += len(p)
		crc = crc32.Update(crc, castagnoli, p)
	}
	env.CRC32C = crc
	head, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("spool: encode envelope: %w", err)
	}
	if j := s.journal.Load(); j != nil && s.OnEnqueue != nil && env.Hold == "" {
		if taken, err := j.add(env, head, parts); taken {
			if err != nil {
				return err
			}
			s.OnEnqueue(env.ID)
			return nil
		}
	}
	bufs := make([][]byte, 0, len(parts)+3)
	bufs = append(bufs, []byte(magic), head, []byte{'\n'})
	bufs = append(bufs, parts...)
	if err := s.writeFile(env.ID, bufs); err != nil {
		return err
	}
	if err := s.syncDir(); err != nil {
		// Not acknowledged, so not to be delivered either.
		os.Remove(filepath.Join(s.queueDir, env.ID))
		return err
	}
	if s.OnEnqueue != nil {
		s.OnEnqueue(env.ID)
	}
	return nil
}

// writeFile creates queue/ID holding bufs, one after the other. With
// GroupCommit it is not yet durable: syncDir makes it so.
func (s *Spool) writeFile(id string, bufs [][]byte) error {
	f, tmp, err := s.createFile(id)
	if err != nil {
		return classify("create", err)
	}
	_, err = net2Buffers(bufs).WriteTo(f)
	if err == nil && !s.GroupCommit {
		err = f.Sync()
	}
	if err == nil && tmp == "" {
		err = s.link(f, id)
		if err != nil && !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
			// No way to name an unnamed file here (no /proc, and not
			// allowed AT_EMPTY_PATH): tmp/ and rename from now on.
			f.Close()
			noTmpfile.Store(true)
			return s.writeFile(id, bufs)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if tmp != "" {
			os.Remove(tmp)
		}
		return classify("write", err)
	}
	if tmp != "" {
		if err := renameNoReplace(tmp, filepath.Join(s.queueDir, id)); err != nil {
			os.Remove(tmp)
			return classify("rename", err)
		}
	}
	return nil
}

// syncDir returns once a directory sync that started after the caller's
// rename has finished. Concurrent callers share one sync.
func (s *Spool) syncDir() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.gen++
	mine := s.gen
	for s.synced < mine {
		if s.syncing {
			s.syncCond.Wait()
			continue
		}
		s.syncing = true
		upTo := s.gen
		s.syncMu.Unlock()
		var err error
		if s.GroupCommit {
			err = syncFS(s.queueDir)
		} else {
			err = SyncDir(s.queueDir)
		}
		s.syncMu.Lock()
		s.syncing = false
		if err == nil {
			s.synced = upTo
		} else {
			s.syncErr = err
		}
		s.syncCond.Broadcast()
		if err != nil {
			return classify("sync dir", err)
		}
	}
	return nil
}

// syncFS flushes the whole file system holding dir: file data, inodes and
// directory entries of every message renamed before the call.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

func classify(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("spool: %s: %w (%v)", op, ErrNoSpace, err)
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

// Open returns the envelope of a queued message and a reader positioned at
// the first byte of the message. The caller closes the file.
func (s *Spool) Open(id string) (*Envelope, io.ReadCloser, error) {
	if !validID(id) {
		return nil, nil, ErrNotFound
	}
	if env, msg, ok := s.journaled(id); ok {
		return env, io.NopCloser(bytes.NewReader(msg)), nil
	}
	f, err := os.Open(filepath.Join(s.queueDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("spool: open %s: %w", id, err)
	}
	br := bufio.NewReader(f)
	env, err := readEnvelope(br)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("spool: %s: %w", id, err)
	}
	return env, struct {
		io.Reader
		io.Closer
	}{br, f}, nil
}

// Read returns the envelope and the whole message.
func (s *Spool) Read(id string) (*Envelope, []byte, error) {
	if env, msg, ok := s.journaled(id); ok {
		return env, msg, nil
	}
	env, rc, err := s.Open(id)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	// Exactly env.Size bytes, read once into their final place: a file
	// cut short or longer than its envelope says is damaged.
	msg := make([]byte, env.Size)
	var more [1]byte
	if _, err := io.ReadFull(rc, msg); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return env, nil, fmt.Errorf("%w: %s", ErrCorrupt, id)
		}
		return nil, nil, fmt.Errorf("spool: read %s: %w", id, err)
	}
	if _, err := io.ReadFull(rc, more[:]); err == nil || crc32.Checksum(msg, castagnoli) != env.CRC32C {
		return env, nil, fmt.Errorf("%w: %s", ErrCorrupt, id)
	}
	return env, msg, nil
}

func readEnvelope(br *bufio.Reader) (*Envelope, error) {
	first, err := br.ReadString('\n')
	if err != nil || first != magic {
		return nil, errors.New("not a spool file")
	}
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, errors.New("truncated envelope")
	}
	env := new(Envelope)
	if err := json.Unmarshal(bytes.TrimSuffix(line, []byte{'\n'}), env); err != nil {
		return nil, fmt.Errorf("bad envelope: %w", err)
	}
	return env, nil
}

// List returns the IDs of the queued messages, oldest first.
func (s *Spool) List() ([]string, error) {
	entries, err := os.ReadDir(s.queueDir)
	if err != nil {
		return nil, fmt.Errorf("spool: list: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if validID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Remove deletes a message from the queue.
func (s *Spool) Remove(id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	if j := s.journal.Load(); j != nil && j.remove(id) {
		return nil
	}
	// unlink(2) alone: os.Remove tries rmdir(2) too when unlink fails, and
	// most messages never had a state file.
	err := ignoringEINTR(func() error { return syscall.Unlink(filepath.Join(s.queueDir, id)) })
	ignoringEINTR(func() error { return syscall.Unlink(s.statePath(id)) })
	if errors.Is(err, syscall.ENOENT) {
		return ErrNotFound
	}
	if err != nil {
		return &os.PathError{Op: "remove", Path: filepath.Join(s.queueDir, id), Err: err}
	}
	return nil
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// Writable reports whether a file can be created and synced in the spool.
func (s *Spool) Writable() error {
	f, err := os.CreateTemp(s.tmpDir, ".probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return f.Sync()
}
