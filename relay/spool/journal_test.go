package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crash stops the journal as a killed process would: files closed, the
// lock released, nothing moved to queue files and no done record written
// that was not written already.
func (j *journal) crash() {
	close(j.stop)
	j.wg.Wait()
	j.mu.Lock()
	for _, sg := range j.segs {
		sg.f.Close()
	}
	j.err = errJournalStopped
	j.mu.Unlock()
	j.lock.Close()
	j.s.journal.Store(nil)
}

func openJournaled(t *testing.T, dir string, segSize int64) *Spool {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.startJournal(DefaultJournalLimit, segSize); err != nil {
		t.Fatal(err)
	}
	s.OnEnqueue = func(string) {}
	return s
}

func enqueueN(t *testing.T, s *Spool, n int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < n; i++ {
		env := &Envelope{ID: NewID(), Login: "a@example.test", From: "a@example.test", To: []string{fmt.Sprintf("r%d@remote.test", i)},
			Received: time.Now().UTC()}
		if err := s.Enqueue(env, []byte("Received: x\r\n"), []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.ID)
	}
	return ids
}

func sorted(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func queueFiles(t *testing.T, dir string) []string {
	t.Helper()
	ids, err := (&Spool{queueDir: filepath.Join(dir, "queue")}).List()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A journaled message is read from memory and is no file; once delivered
// (Remove) it is gone; StopJournal leaves the rest as queue files that
// read back the same.
func TestJournalReadRemoveStop(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, DefaultSegmentSize)
	ids := enqueueN(t, s, 3)
	if n := len(queueFiles(t, dir)); n != 0 {
		t.Fatalf("%d queue files, want none: journaled messages are not files", n)
	}
	if n := s.JournalLen(); n != 3 {
		t.Fatalf("JournalLen %d, want 3", n)
	}
	env, msg, err := s.Read(ids[1])
	if err != nil || string(msg) != "Received: x\r\nSubject: 1\r\n\r\nbody 1\r\n" || env.To[0] != "r1@remote.test" || env.Size != len(msg) {
		t.Fatalf("Read: %+v %q %v", env, msg, err)
	}
	if _, rc, err := s.Open(ids[2]); err != nil {
		t.Fatalf("Open of a journaled message: %v", err)
	} else {
		rc.Close()
	}
	if err := s.Remove(ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read after Remove: %v, want ErrNotFound", err)
	}
	if err := s.StopJournal(); err != nil {
		t.Fatal(err)
	}
	if got := queueFiles(t, dir); !slices.Equal(got, sorted(ids[1:])) {
		t.Fatalf("queue files after StopJournal %v, want %v", got, ids[1:])
	}
	if wal, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal")); len(wal) != 0 {
		t.Fatalf("segments left after StopJournal: %v", wal)
	}
	disk, _ := Open(dir)
	_, msg2, err := disk.Read(ids[1])
	if err != nil || string(msg2) != string(msg) {
		t.Fatalf("queue file of a journaled message: %q %v, want %q", msg2, err, msg)
	}
}

// After a crash, every acknowledged message without a done record is
// queued again, once; delivered ones are not.
func TestJournalRecoveryAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, DefaultSegmentSize)
	ids := enqueueN(t, s, 5)
	s.Remove(ids[0])
	s.Remove(ids[3])
	enqueueN(t, s, 0)
	// The done records go out with the next batch or tick.
	time.Sleep(2 * journalTick)
	s.journal.Load().crash()

	s2 := openJournaled(t, dir, DefaultSegmentSize)
	defer s2.StopJournal()
	want := []string{ids[1], ids[2], ids[4]}
	if got := queueFiles(t, dir); !slices.Equal(got, sorted(want)) {
		t.Fatalf("queue after recovery %v, want %v", got, want)
	}
	for i, id := range want {
		_, msg, err := s2.Read(id)
		n := []int{1, 2, 4}[i]
		if err != nil || string(msg) != fmt.Sprintf("Received: x\r\nSubject: %d\r\n\r\nbody %d\r\n", n, n) {
			t.Fatalf("recovered %s: %q %v", id, msg, err)
		}
	}
	if wal, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal")); len(wal) != 1 {
		t.Fatalf("segments after recovery: %v, want only the new one", wal)
	}
}

// A record cut short by the crash (never acknowledged) is not recovered,
// and does not hide the ones before it.
func TestJournalTornTailIgnored(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, DefaultSegmentSize)
	ids := enqueueN(t, s, 2)
	seg := s.journal.Load().cur.f.Name()
	s.journal.Load().crash()
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// A third record, half written.
	third := append([]byte(nil), data[:len(data)/2]...)
	if err := os.WriteFile(seg, append(data, third[:len(third)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openJournaled(t, dir, DefaultSegmentSize)
	defer s2.StopJournal()
	if got := queueFiles(t, dir); !slices.Equal(got, sorted(ids)) {
		t.Fatalf("queue after recovery %v, want %v", got, ids)
	}
}

// A message still pending after its first attempt becomes a queue file
// when its state is saved.
func TestJournalSaveStateMakesFile(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, DefaultSegmentSize)
	defer s.StopJournal()
	ids := enqueueN(t, s, 1)
	env, _, _ := s.Read(ids[0])
	st, _ := s.LoadState(ids[0], env)
	st.Attempts = 1
	if err := s.SaveState(ids[0], st); err != nil {
		t.Fatal(err)
	}
	if got := queueFiles(t, dir); !slices.Equal(got, ids) {
		t.Fatalf("queue files %v, want %v", got, ids)
	}
	if s.JournalLen() != 0 {
		t.Fatalf("still journaled after SaveState")
	}
	if got, _ := s.LoadState(ids[0], env); got.Attempts != 1 {
		t.Fatalf("state attempts %d, want 1", got.Attempts)
	}
	if err := s.Remove(ids[0]); err != nil {
		t.Fatal(err)
	}
	if got := queueFiles(t, dir); len(got) != 0 {
		t.Fatalf("queue files after Remove %v", got)
	}
}

// Segments roll over at their size and are removed, oldest first, once
// nothing in them is pending; many concurrent messages are all durable and
// distinct.
func TestJournalSegmentsAndConcurrency(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, 4096)
	const n = 200
	var wg sync.WaitGroup
	ids := make([]string, n)
	for wave := 0; wave < 10; wave++ { // a segment holds a whole batch: waves of 20
		for i := wave * n / 10; i < (wave+1)*n/10; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				env := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
				ids[i] = env.ID
				if err := s.Enqueue(env, []byte(fmt.Sprintf("Subject: %d\r\n\r\n%0200d\r\n", i, i))); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
	}
	if s.JournalLen() != n {
		t.Fatalf("JournalLen %d, want %d", s.JournalLen(), n)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal"))
	if len(segs) < 5 {
		t.Fatalf("%d segments for %d messages of 250 bytes at 4096 bytes each", len(segs), n)
	}
	for _, id := range ids[:n/2] {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * journalTick)
	s.journal.Load().crash()
	s2 := openJournaled(t, dir, 4096)
	defer s2.StopJournal()
	want := slices.Clone(ids[n/2:])
	slices.Sort(want)
	if got := queueFiles(t, dir); !slices.Equal(got, want) {
		t.Fatalf("recovered %d messages, want the %d not removed", len(got), len(want))
	}
}

// All removed: the old segments go.
func TestJournalRemovesDoneSegments(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, 1024)
	defer s.StopJournal()
	for _, id := range enqueueN(t, s, 40) {
		s.Remove(id)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal"))
		if len(segs) <= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d segments left with nothing pending", len(segs))
		}
		time.Sleep(journalTick)
	}
}

// One serving process per spool.
func TestJournalLock(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, DefaultSegmentSize)
	defer s.StopJournal()
	other, _ := Open(dir)
	if err := other.StartJournal(DefaultJournalLimit); !errors.Is(err, ErrJournalLocked) {
		t.Fatalf("second StartJournal: %v, want ErrJournalLocked", err)
	}
}

// A full disk refuses the message with ErrNoSpace (452 4.3.1 to the
// client) and nothing of it is delivered; the failed write gives its space
// back, the spool goes on with a file per message for a while (a message
// small enough gets one), then with the journal again.
func TestJournalFullDisk(t *testing.T) {
	dir := mountTinyFS(t)
	s := openJournaled(t, dir, DefaultSegmentSize)
	defer s.StopJournal()
	big := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
	if err := s.Enqueue(big, make([]byte, 200<<10)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Enqueue on a full disk: %v, want ErrNoSpace", err)
	}
	if _, _, err := s.Read(big.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused message reads back: %v", err)
	}
	small := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
	if err := s.Enqueue(small, []byte("Subject: s\r\n\r\nsmall\r\n")); err != nil {
		t.Fatalf("a small message after the failure: %v", err)
	}
	if got := queueFiles(t, dir); !slices.Equal(got, []string{small.ID}) {
		t.Fatalf("queue files %v, want the small message as a file", got)
	}
	// With room again, the journal takes messages again.
	time.Sleep(journalResume + 3*journalTick)
	later := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
	if err := s.Enqueue(later, []byte("Subject: s\r\n\r\nlater\r\n")); err != nil {
		t.Fatal(err)
	}
	if s.JournalLen() != 1 {
		t.Fatalf("JournalLen %d after the pause, want 1 (journaled again)", s.JournalLen())
	}
}

// A full segment whose successor cannot be made (here a directory holds
// the next name) pauses the journal: the messages meanwhile are queue
// files, and after journalResume the journal goes on in a new segment
// (before, it stayed off until the next start).
func TestJournalSegmentSwitchFailurePauses(t *testing.T) {
	dir := t.TempDir()
	const segSize = 4096
	s := openJournaled(t, dir, segSize)
	defer s.StopJournal()
	jdir := filepath.Join(dir, "journal")
	var last string
	entries, err := os.ReadDir(jdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".wal") && e.Name() > last {
			last = e.Name()
		}
	}
	seq, err := strconv.ParseUint(strings.TrimSuffix(last, ".wal"), 16, 64)
	if err != nil {
		t.Fatalf("segment %q: %v", last, err)
	}
	if err := os.Mkdir(filepath.Join(jdir, fmt.Sprintf("%016x.wal", seq+1)), 0o700); err != nil {
		t.Fatal(err)
	}
	// Fill the segment: the switch after it fails.
	body := []byte("Subject: s\r\n\r\n" + strings.Repeat("x", 1000) + "\r\n")
	for i := 0; i < 5; i++ {
		if err := s.Enqueue(&Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}, body); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	during := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
	if err := s.Enqueue(during, body); err != nil {
		t.Fatalf("a message while the journal is paused: %v", err)
	}
	if got := queueFiles(t, dir); !slices.Contains(got, during.ID) {
		t.Fatalf("queue files %v: the message sent while paused is not a file", got)
	}
	// After the pause (journalResume), a new message is journaled again.
	deadline := time.Now().Add(journalResume + 5*time.Second)
	for {
		n := s.JournalLen()
		later := &Envelope{ID: NewID(), From: "a@example.test", To: []string{"b@remote.test"}}
		if err := s.Enqueue(later, body); err != nil {
			t.Fatal(err)
		}
		if s.JournalLen() == n+1 && !slices.Contains(queueFiles(t, dir), later.ID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the failed switch: JournalLen %d, files %v; want new messages journaled again", journalResume+5*time.Second, s.JournalLen(), queueFiles(t, dir))
		}
		time.Sleep(journalTick)
	}
}

// Segments nothing is pending in are kept as spares and written over by
// later segments (the same files, so a sync flushes data only); after a
// crash, what the old records left behind a recycled segment's new tail is
// not recovered, and every message pending in it is.
func TestJournalRecyclesSegments(t *testing.T) {
	dir := t.TempDir()
	const segSize = 4096
	s := openJournaled(t, dir, segSize)
	// Messages of one size, so that new records fall exactly where old
	// ones were: only the segment number tells them apart.
	enqueueSame := func(n int) []string {
		var ids []string
		for i := 0; i < n; i++ {
			env := &Envelope{ID: NewID(), Login: "a@example.test", From: "a@example.test", To: []string{"r@remote.test"},
				Received: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
			if err := s.Enqueue(env, []byte("Received: x\r\n"), []byte("Subject: same\r\n\r\nthe same body\r\n")); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, env.ID)
		}
		return ids
	}
	for _, id := range enqueueSame(100) {
		s.Remove(id)
	}
	spares := func() []string {
		sp, _ := filepath.Glob(filepath.Join(dir, "journal", "spare-*"))
		return sp
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(spares()) < maxSpares {
		if time.Now().After(deadline) {
			t.Fatalf("spares %v after 100 delivered messages, want %d", spares(), maxSpares)
		}
		time.Sleep(journalTick)
	}
	inode := func(path string) uint64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	spareInodes := map[uint64]bool{}
	for _, sp := range spares() {
		if fi, _ := os.Stat(sp); fi.Size() < segSize {
			t.Errorf("spare %s of %d bytes, want a full segment", sp, fi.Size())
		}
		spareInodes[inode(sp)] = true
	}

	// Enough pending messages to need new segments: they are the spares.
	pending := enqueueSame(20)
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal"))
	reused := 0
	for _, sg := range segs {
		if spareInodes[inode(sg)] {
			reused++
		}
	}
	if reused == 0 {
		t.Fatalf("no segment of %d written over a spare", len(segs))
	}
	s.journal.Load().crash()

	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.StartJournal(DefaultJournalLimit); err != nil {
		t.Fatal(err)
	}
	defer s2.StopJournal()
	if got := queueFiles(t, dir); !slices.Equal(got, sorted(pending)) {
		t.Fatalf("recovered %d messages %v, want the %d pending ones", len(got), got, len(pending))
	}
	for _, id := range pending {
		if _, msg, err := s2.Read(id); err != nil || len(msg) == 0 {
			t.Fatalf("recovered %s reads %q, %v", id, msg, err)
		}
	}
}

// A spare kept at a clean stop holds the previous run's records; written
// over in the next run and then left by a crash, none of those (delivered)
// messages comes back: segment numbers never repeat across restarts.
func TestJournalSpareAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	const segSize = 4096
	s := openJournaled(t, dir, segSize)
	j := s.journal.Load()
	var ids []string
	for {
		ids = append(ids, enqueueN(t, s, 1)...)
		j.mu.Lock()
		n := len(j.segs)
		j.mu.Unlock()
		if n == 2 {
			break
		}
	}
	for _, id := range ids {
		s.Remove(id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		j.mu.Lock()
		n := len(j.spares)
		j.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivered segment did not become a spare")
		}
		time.Sleep(journalTick)
	}
	if err := s.StopJournal(); err != nil {
		t.Fatal(err)
	}
	s2 := openJournaled(t, dir, segSize) // its first segment is the spare
	s2.journal.Load().crash()            // killed before its first message
	s3 := openJournaled(t, dir, segSize)
	defer s3.StopJournal()
	if got := queueFiles(t, dir); len(got) != 0 {
		t.Fatalf("%d of %d messages delivered in the previous run are queue files again", len(got), len(ids))
	}
}

// The crash came after a journaled message's queue file was named but
// before its flush (on ext4 with delayed allocation the name can survive
// without its data): recovery writes the journal's copy over it.
func TestJournalRecoveryReplacesEmptyFile(t *testing.T) {
	dir := t.TempDir()
	s := openJournaled(t, dir, DefaultSegmentSize)
	ids := enqueueN(t, s, 1)
	s.journal.Load().crash()
	if err := os.WriteFile(filepath.Join(dir, "queue", ids[0]), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openJournaled(t, dir, DefaultSegmentSize)
	defer s2.StopJournal()
	if _, msg, err := s2.Read(ids[0]); err != nil || len(msg) == 0 {
		t.Fatalf("the acknowledged message after recovery: %q, %v", msg, err)
	}
}
