package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The journal is the fast path of the spool, for the messages that the
// serving process delivers itself at once (Spool.StartJournal). Instead of
// a file each, new messages are appended to one segment file,
// spool/journal/SEQ.wal, and one write and one fdatasync(2) cover every
// message that arrived while the previous one ran (group commit): no inode
// to create, name and remove per message. Each stays in memory for its
// first delivery attempt. A message delivered to every recipient then gets
// a small "done" record, written with the next batch (not waited for: a
// crash before it is written means that message is delivered once more,
// never lost). A message still pending after its first attempt (deferred,
// partly delivered) becomes a queue file like any other before its state is
// saved, and so does one still in a segment that was closed more than
// journalCheckpoint ago, or every one when the journal stops or fails.
// A write that fails (a full disk) is cut back off the segment, and for
// journalResume messages are files (which a full disk refuses too: 452);
// then the journal goes on in a new segment. A full segment whose next one
// cannot be made pauses the journal the same way. A failed fdatasync turns
// it off until the next start.
// Segments are removed oldest first once nothing in them is pending.
//
// At start, the segments left by a crash are read back: every message
// without a done record becomes a queue file (unless it is one already),
// then the segments are removed. A record cut short or damaged (its
// CRC32C) ends the reading of its segment; it was never acknowledged.
//
// Journaled messages are in memory and in the segments only: `sluice
// queue` and List see them once they are files (usually never: delivered
// within milliseconds).
type journal struct {
	s       *Spool
	dir     string
	lock    *os.File // flock: one serving process per spool
	segSize int64
	limit   int // bytes of journaled messages kept in memory

	mu      sync.Mutex
	cond    *sync.Cond
	cur     *segment
	segs    []*segment // oldest first; cur is the last
	nextSeq uint64
	spares  []string // paths of old segments to write over (see maxSpares)
	live    map[string]*jentry
	bytes   int
	recs    [][]byte  // records of the batch being gathered, written as they are
	pending []*jentry // messages in recs
	open    uint64    // number of the batch being gathered
	done    uint64    // the last batch written and synced
	writing bool
	err     error // a write or sync failed: the journal takes no more
	// resumeAt, when set, is when the journal tries again after a write
	// that failed (and was cut back): a disk that was full may have room.
	resumeAt time.Time

	stop chan struct{}
	wg   sync.WaitGroup
}

type segment struct {
	seq    uint64
	f      *os.File
	size   int64
	live   int       // its messages neither done nor files
	sealed time.Time // when the next segment took over; zero for cur
}

type jentry struct {
	mu   sync.Mutex // held while it becomes a file, and while it is removed
	env  Envelope
	file []byte // the queue file's bytes: magic, envelope line, message
	msg  []byte // the message, the end of file
	seg  *segment
}

const (
	recMessage = 'M'
	recDone    = 'D'
	recHeader  = 16 // "SJ", type, 0, payload length, CRC32C, segment
	// DefaultJournalLimit is how many bytes of journaled messages
	// StartJournal's callers keep in memory by default.
	DefaultJournalLimit = 64 << 20
	// DefaultSegmentSize is when the journal moves to a new segment.
	DefaultSegmentSize = 64 << 20
	// journalCheckpoint is how long a closed segment may still hold
	// pending messages before they become queue files.
	journalCheckpoint = 10 * time.Second
	journalTick       = 200 * time.Millisecond
	journalResume     = 5 * time.Second
)

// ErrJournalLocked reports that another process serves this spool.
var ErrJournalLocked = errors.New("spool: the journal is in use by another process (one sluice serve per data_dir)")

// StartJournal turns the journal on: it takes the spool's journal lock,
// turns what a crash left in spool/journal into queue files, and from then
// on Enqueue journals the messages it would hand to OnEnqueue, holding up
// to limit bytes of them in memory (past that, messages are files again).
// Only the process that delivers the spool calls it; StopJournal ends it.
func (s *Spool) StartJournal(limit int) error {
	return s.startJournal(limit, DefaultSegmentSize)
}

func (s *Spool) startJournal(limit int, segSize int64) error {
	dir := filepath.Join(s.dir, "journal")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool: create %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: journal lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return ErrJournalLocked
		}
		return fmt.Errorf("spool: journal lock: %w", err)
	}
	j := &journal{s: s, dir: dir, lock: lock, segSize: segSize, limit: limit,
		live: map[string]*jentry{}, open: 1, stop: make(chan struct{})}
	j.cond = sync.NewCond(&j.mu)
	if err := j.recover(); err != nil {
		lock.Close()
		return err
	}
	if err := j.newSegment(); err != nil {
		lock.Close()
		return err
	}
	s.journal.Store(j)
	j.wg.Add(1)
	go j.loop()
	return nil
}

// StopJournal makes every journaled message a queue file and removes the
// segments (keeping up to maxSpares full ones as spares for the next
// start); Enqueue writes files again. Call it once delivery has stopped.
func (s *Spool) StopJournal() error {
	j := s.journal.Load()
	if j == nil {
		return nil
	}
	close(j.stop)
	j.wg.Wait()
	j.mu.Lock()
	for j.writing {
		j.cond.Wait()
	}
	j.err = errJournalStopped // takes nothing more
	j.mu.Unlock()
	err := j.moveAll()
	j.mu.Lock()
	segs := j.segs
	j.segs, j.cur = nil, nil
	j.mu.Unlock()
	if err == nil {
		j.retire(segs) // full ones stay as spares for the next start
	}
	s.journal.Store(nil)
	return errors.Join(err, j.lock.Close())
}

var errJournalStopped = errors.New("spool: journal stopped")

// JournalLen is how many messages are in the journal (not yet files).
func (s *Spool) JournalLen() int {
	j := s.journal.Load()
	if j == nil {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.live)
}

// add journals a message if there is room for it in memory; taken reports
// whether it did (err then says whether it is durable).
func (j *journal) add(env *Envelope, head []byte, parts [][]byte) (taken bool, err error) {
	size := len(magic) + len(head) + 1 + env.Size
	if size > j.limit/16 {
		return false, nil
	}
	// The record is built before the lock that every writer and every
	// delivered message needs; a message the journal then cannot take
	// (off after a failure, or full: files then cost far more) only wasted
	// the copy.
	rec := make([]byte, recHeader+len(env.ID), recHeader+len(env.ID)+size)
	copy(rec[recHeader:], env.ID)
	rec = append(rec, magic...)
	rec = append(rec, head...)
	rec = append(rec, '\n')
	msgAt := len(rec)
	for _, p := range parts {
		rec = append(rec, p...)
	}
	e := &jentry{env: *env, file: rec[recHeader+len(env.ID):], msg: rec[msgAt:]}
	e.env.To = append([]string(nil), env.To...)
	e.env.Received = e.env.Received.Round(0)
	frame(rec, recMessage)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil || j.bytes+size > j.limit {
		return false, nil
	}
	j.recs = append(j.recs, rec)
	j.pending = append(j.pending, e)
	j.live[env.ID] = e
	j.bytes += len(e.file)
	mine := j.open
	for j.done < mine && j.err == nil {
		if j.writing {
			j.cond.Wait()
			continue
		}
		j.flushLocked()
	}
	if j.done < mine {
		// Not acknowledged, so not delivered: forget it. (Its record may
		// be whole on disk; recovery would then queue it: a duplicate of
		// the copy the client sends again, never a loss.)
		j.forget(env.ID)
		return true, classify("journal", j.err)
	}
	return true, nil
}

// frame fills the header of rec, whose payload follows it, but for the
// segment and checksum, which seal sets once the segment is known.
func frame(rec []byte, typ byte) {
	rec[0], rec[1], rec[2], rec[3] = 'S', 'J', typ, 0
	binary.BigEndian.PutUint32(rec[4:], uint32(len(rec)-recHeader))
}

// seal sets the segment and checksum of every record in batch, and
// returns their length in all.
func seal(batch [][]byte, seq uint64) int64 {
	var n int64
	for _, rec := range batch {
		binary.BigEndian.PutUint32(rec[12:], uint32(seq))
		binary.BigEndian.PutUint32(rec[8:], recordSum(rec))
		n += int64(len(rec))
	}
	return n
}

// pwritev writes bufs one after the other at off with as few pwritev(2)
// calls as the kernel allows: the records go out from where they are, not
// copied into one buffer first.
func pwritev(f *os.File, bufs [][]byte, off int64) error {
	bufs = append([][]byte(nil), bufs...) // advanced below
	fd := int(f.Fd())
	for len(bufs) > 0 {
		n, err := unix.Pwritev(fd, bufs[:min(len(bufs), 1024)], off) // IOV_MAX
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: f.Name(), Err: err}
		}
		off += int64(n)
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0], n = bufs[0][n:], 0
			}
		}
	}
	return nil
}

// recordSum is the CRC32C of a record without its checksum field.
func recordSum(rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, rec[2:8])
	c = crc32.Update(c, castagnoli, rec[12:16])
	return crc32.Update(c, castagnoli, rec[recHeader:])
}

// flushLocked writes and syncs the batch being gathered. j.mu is held on
// entry and return, not during the I/O.
func (j *journal) flushLocked() {
	j.writing = true
	batch, no, ents := j.recs, j.open, j.pending
	j.recs, j.pending = nil, nil
	j.open++
	seg := j.cur
	for _, e := range ents {
		if j.live[e.env.ID] == e {
			e.seg = seg
			seg.live++
		}
	}
	j.mu.Unlock()
	var err error
	var size int64
	paused := false
	if len(batch) > 0 {
		size = seal(batch, seg.seq)
		if err = pwritev(seg.f, batch, seg.size); err != nil {
			// A failed write (a full disk): cut the segment back to its
			// last whole batch, giving the space back, and pause.
			paused = seg.f.Truncate(seg.size) == nil
		} else {
			// A failed sync leaves the file's state unknown: the journal
			// stays off until the next start.
			err = unix.Fdatasync(int(seg.f.Fd()))
		}
	}
	j.mu.Lock()
	j.writing = false
	if err != nil {
		// The batch's writers get the error (their clients a 4xx): none
		// of its messages may become a queue file meanwhile.
		for _, e := range ents {
			if j.live[e.env.ID] == e {
				j.forget(e.env.ID)
			}
		}
		j.err = err
		if paused {
			j.resumeAt = time.Now().Add(journalResume)
		}
	} else {
		j.done = no
		seg.size += size
		if seg.size >= j.segSize {
			if err := j.newSegment(); err != nil {
				// No next segment (no space or inode for the file): as
				// after a failed write, messages are files for a while,
				// then the switch is tried again.
				j.err = err
				j.resumeAt = time.Now().Add(journalResume)
			}
		}
	}
	j.cond.Broadcast()
}

// newSegment starts the next segment file (j.mu held, or before start):
// a spare when there is one, else a new file.
func (j *journal) newSegment() error {
	j.nextSeq++
	path := filepath.Join(j.dir, fmt.Sprintf("%016x.wal", j.nextSeq))
	f, err := j.reuseSpare(path)
	if f == nil && err == nil {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return classify("journal", err)
	}
	if err := SyncDir(j.dir); err != nil {
		f.Close()
		os.Remove(path)
		return classify("journal", err)
	}
	if j.cur != nil {
		j.cur.sealed = time.Now()
	}
	j.cur = &segment{seq: j.nextSeq, f: f}
	j.segs = append(j.segs, j.cur)
	return nil
}

// A segment that nothing in is pending any more is kept as a spare (up to
// maxSpares), renamed to spare-SEQ (its segment number), and a later
// segment is written over it
// instead of into a new file. Its blocks are already written, so the
// fdatasync of a batch flushes data only, with no file-size or extent
// change for ext4 or XFS to journal: about half the latency and CPU of a
// sync here. What the old records leave behind the new tail is never read:
// their segment number is not the new one's, which ends the reading as a
// damaged record does. Numbers never come back, across restarts too:
// recovery starts after the highest segment or spare number it finds.
const maxSpares = 2

// reuseSpare renames a spare to path and opens it; nil without error when
// there is none.
func (j *journal) reuseSpare(path string) (*os.File, error) {
	for len(j.spares) > 0 {
		sp := j.spares[len(j.spares)-1]
		j.spares = j.spares[:len(j.spares)-1]
		if err := os.Rename(sp, path); err != nil {
			os.Remove(sp)
			continue
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0o600)
		if err != nil {
			os.Remove(path)
			return nil, err
		}
		return f, nil
	}
	return nil, nil
}

// retire closes the segments given up: spares while there are fewer than
// maxSpares (a segment written to its full size only), removed otherwise.
// j.mu is not held.
func (j *journal) retire(gone []*segment) {
	for _, sg := range gone {
		sg.f.Close()
		j.mu.Lock()
		keep := len(j.spares) < maxSpares && sg.size >= j.segSize
		var sp string
		if keep {
			sp = filepath.Join(j.dir, fmt.Sprintf("spare-%016x", sg.seq))
		}
		j.mu.Unlock()
		if keep && os.Rename(sg.f.Name(), sp) == nil {
			j.mu.Lock()
			j.spares = append(j.spares, sp)
			j.mu.Unlock()
			continue
		}
		os.Remove(sg.f.Name())
	}
	if len(gone) > 0 {
		SyncDir(j.dir)
	}
}

// entry returns the journaled message id, or nil.
func (j *journal) entry(id string) *jentry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.live[id]
}

// forget takes id out of the journal (j.mu held); the caller writes its
// done record when it was durable.
func (j *journal) forget(id string) *jentry {
	e := j.live[id]
	if e == nil {
		return nil
	}
	delete(j.live, id)
	j.bytes -= len(e.file)
	if e.seg != nil {
		e.seg.live--
	}
	return e
}

// finish records that id needs the journal no more (delivered, or a file
// now). It reports whether id was journaled.
func (j *journal) finish(id string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.forget(id) == nil {
		return false
	}
	if j.err == nil {
		rec := make([]byte, recHeader+len(id))
		copy(rec[recHeader:], id)
		frame(rec, recDone)
		j.recs = append(j.recs, rec)
	}
	return true
}

// toFile makes the journaled message id a queue file (synced) and takes
// it out of the journal. It reports whether id was journaled.
func (j *journal) toFile(id string) (bool, error) {
	e := j.entry(id)
	if e == nil {
		return false, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if j.entry(id) != e {
		return false, nil // delivered, or a file, meanwhile
	}
	if err := j.s.writeFile(id, [][]byte{e.file}); err != nil && !errors.Is(err, os.ErrExist) {
		return true, err
	}
	if err := j.s.syncDir(); err != nil {
		return true, err
	}
	j.finish(id)
	return true, nil
}

// moveAll makes every journaled message a queue file.
func (j *journal) moveAll() error {
	j.mu.Lock()
	ids := make([]string, 0, len(j.live))
	for id := range j.live {
		ids = append(ids, id)
	}
	j.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if _, err := j.toFile(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loop writes done records that no new message carried out, moves the
// messages of old closed segments to files, removes segments nothing in
// which is pending, and after a failure moves everything to files.
func (j *journal) loop() {
	defer j.wg.Done()
	tick := time.NewTicker(journalTick)
	defer tick.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-tick.C:
		}
		j.mu.Lock()
		if j.err == nil && !j.writing && len(j.recs) > 0 {
			j.flushLocked()
		}
		if !j.resumeAt.IsZero() && time.Now().After(j.resumeAt) && !j.writing {
			// What was gathered with the failed batch was refused (or is
			// a done record, which may then be delivered once more after
			// a crash): it is not written. A new segment, then go on.
			j.recs, j.pending, j.resumeAt = nil, nil, time.Time{}
			if err := j.newSegment(); err == nil {
				j.err = nil
			} else {
				j.resumeAt = time.Now().Add(journalResume)
			}
		}
		failed := j.err != nil && j.resumeAt.IsZero()
		var old []string
		for _, sg := range j.segs {
			if !sg.sealed.IsZero() && sg.live > 0 && time.Since(sg.sealed) > journalCheckpoint {
				for id, e := range j.live {
					if e.seg == sg {
						old = append(old, id)
					}
				}
			}
		}
		var gone []*segment
		for len(j.segs) > 1 && !j.segs[0].sealed.IsZero() && j.segs[0].live == 0 {
			gone = append(gone, j.segs[0])
			j.segs = j.segs[1:]
		}
		j.mu.Unlock()
		if failed {
			j.moveAll()
		}
		for _, id := range old {
			j.toFile(id)
		}
		j.retire(gone)
	}
}

// recover turns the messages of the segments left by a crash into queue
// files and removes the segments.
func (j *journal) recover() error {
	names, err := filepath.Glob(filepath.Join(j.dir, "*.wal"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	type found struct {
		id   string
		file []byte
	}
	var order []found
	pending := map[string]int{} // id: index in order
	for _, name := range names {
		seq, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".wal"), 16, 64)
		if err != nil {
			continue
		}
		j.nextSeq = max(j.nextSeq, seq)
		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("spool: journal %s: %w", name, err)
		}
		for off := 0; off+recHeader <= len(data); {
			h := data[off:]
			n := int(binary.BigEndian.Uint32(h[4:]))
			if h[0] != 'S' || h[1] != 'J' || n < 16 || n > len(h)-recHeader ||
				binary.BigEndian.Uint32(h[12:]) != uint32(seq) || binary.BigEndian.Uint32(h[8:]) != recordSum(h[:recHeader+n]) {
				break // cut short or damaged: the end of what was acknowledged
			}
			id := string(h[recHeader : recHeader+16])
			switch h[2] {
			case recMessage:
				pending[id] = len(order)
				order = append(order, found{id, h[recHeader+16 : recHeader+n]})
			case recDone:
				delete(pending, id)
			}
			off += recHeader + n
		}
	}
	wrote := false
	for i, f := range order {
		if at, ok := pending[f.id]; !ok || at != i || !validID(f.id) {
			continue // done, or journaled again later (not done)
		}
		if _, _, err := j.s.Read(f.id); err == nil {
			continue // made a file before the crash
		}
		// None, or one the crash cut short before its flush (a name
		// without its data): the journal's copy replaces it.
		os.Remove(filepath.Join(j.s.queueDir, f.id))
		if err := j.s.writeFile(f.id, [][]byte{f.file}); err != nil {
			return fmt.Errorf("spool: journal recovery of %s: %w", f.id, err)
		}
		wrote = true
	}
	if wrote {
		if err := j.s.syncDir(); err != nil {
			return fmt.Errorf("spool: journal recovery: %w", err)
		}
	}
	for _, name := range names {
		os.Remove(name)
	}
	// Spares a stop left, to write over; more than maxSpares go.
	spares, _ := filepath.Glob(filepath.Join(j.dir, "spare-*"))
	for _, sp := range spares {
		seq, err := strconv.ParseUint(strings.TrimPrefix(filepath.Base(sp), "spare-"), 16, 64)
		if err != nil || len(j.spares) >= maxSpares {
			os.Remove(sp)
			continue
		}
		j.spares = append(j.spares, sp)
		j.nextSeq = max(j.nextSeq, seq) // its old records never carry a new number
	}
	return SyncDir(j.dir)
}

// remove takes a delivered id out of the journal; false: it is not (or
// no longer) journaled, but may be a file.
func (j *journal) remove(id string) bool {
	e := j.entry(id)
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return j.finish(id)
}

// journaled returns id's envelope and message when it is in the journal.
func (s *Spool) journaled(id string) (*Envelope, []byte, bool) {
	j := s.journal.Load()
	if j == nil {
		return nil, nil, false
	}
	e := j.entry(id)
	if e == nil {
		return nil, nil, false
	}
	env := e.env
	env.To = append([]string(nil), e.env.To...)
	return &env, e.msg, true
}
