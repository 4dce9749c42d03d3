package store

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// syncT0 is the tests' clock.
var syncT0 = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)

// syncStore opens an SQLite store with target web-1 (22/tcp protected, up
// to 2h) and returns it with web-1's revision.
func syncStore(t *testing.T) (*Store, int64) {
	t.Helper()
	ctx := t.Context()
	was := pipelinedDurability.Swap(true)
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	pipelinedDurability.Store(was)
	if err != nil {
		t.Fatal(err)
	}
	if s.w.syncer == nil {
		t.Fatal("pipelined durability did not turn on")
	}
	t.Cleanup(func() { s.Close() })
	alice := Actor{Name: "alice", ClientAddr: "192.0.2.10"}
	if _, _, err := s.CreateTarget(ctx, alice, "web-1", nil, syncT0, time.Hour); err != nil {
		t.Fatal(err)
	}
	p, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, alice, "web-1", p, syncT0); err != nil {
		t.Fatal(err)
	}
	tg, err := s.GetTarget(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	return s, tg.Revision
}

// grantAsk is a request for 22/tcp of web-1 for an hour.
func grantAsk() policy.Request {
	return policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix("198.51.100.7/32"),
		Duration: time.Hour, Reason: "ticket-42"}
}

// blockSyncs makes s's syncer stop in its next fsync: entered is closed
// once it is there, and it goes on (syncing for real) when release is
// called.
func blockSyncs(t *testing.T, s *Store) (entered <-chan struct{}, release func()) {
	e, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := func(f *os.File) error {
		once.Do(func() { close(e) })
		<-r
		return fdatasync(f)
	}
	s.w.syncer.hook.Store(&h)
	release = sync.OnceFunc(func() { close(r) })
	t.Cleanup(release)
	return e, release
}

// waitUntil waits for cond, checking every millisecond, for at most 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

type result[T any] struct {
	v   T
	err error
}

// TestNothingReportedBeforeItsSync: the writer commits without fsync
// (synchronous=NORMAL) and hands the batch to the syncer; until the
// syncer's fsync of the WAL returned, the commit is in the database (other
// connections read it) but its caller is not answered, the request feed
// is not told, the generation not published, the commit not counted; and
// every read whose answer opens access (the agent's delta, snapshot head
// and grants) waits for that sync after reading. Before pipelined
// durability the create was answered at once (the syncer never ran: the
// test failed on "answered before its sync").
func TestNothingReportedBeforeItsSync(t *testing.T) {
	ctx := t.Context()
	s, rev0 := syncStore(t)
	gen0, err := s.Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	commits0, _ := s.WriteStats()
	told := make(chan []string, 8)
	defer s.SubscribeRequests(func(ids []string, _ []Request) { told <- ids })()
	entered, release := blockSyncs(t, s)

	created := make(chan result[Request], 1)
	go func() {
		r, err := s.CreateRequest(ctx, Actor{Name: "bob", ClientAddr: "192.0.2.11"}, "web-1", grantAsk(), policy.DefaultLimits(), syncT0.Add(time.Second))
		created <- result[Request]{r, err}
	}()
	select {
	case <-entered:
	case r := <-created:
		t.Fatalf("the create was answered before its sync began (err %v)", r.err)
	}
	// Committed: another connection reads it.
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM grants WHERE target = 'web-1'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("grants of web-1 read during the sync: %d, %v; want the committed one", n, err)
	}
	tg, err := s.GetTarget(ctx, "web-1")
	if err != nil || tg.Revision <= rev0 {
		t.Fatalf("web-1 during the sync: revision %d (%v), want above %d", tg.Revision, err, rev0)
	}
	// The agent's reads, each in the state the hub would call it.
	waits0 := s.w.syncer.waits.Load()
	delta := make(chan result[DesiredDelta], 1)
	go func() {
		d, err := s.DesiredChangesOf(ctx, tg, rev0, syncT0.Add(2*time.Second))
		delta <- result[DesiredDelta]{d, err}
	}()
	head := make(chan result[Desired], 1)
	go func() {
		d, err := s.DesiredHead(ctx, "web-1", syncT0.Add(2*time.Second))
		head <- result[Desired]{d, err}
	}()
	chunk := make(chan result[[]GrantRow], 1)
	go func() {
		var got []GrantRow
		err := s.DesiredGrants(ctx, "web-1", Desired{Revision: tg.Revision, Targets: []Enforced{{Name: "web-1", Policy: *tg.Policy}}},
			syncT0.Add(2*time.Second), func(gs []GrantRow) error {
				got = append(got, gs...)
				return nil
			})
		chunk <- result[[]GrantRow]{got, err}
	}()
	waitUntil(t, "the three agent reads wait for the sync", func() bool { return s.w.syncer.waits.Load() >= waits0+3 })

	select {
	case r := <-created:
		t.Fatalf("the create was answered before its sync returned (err %v)", r.err)
	case ids := <-told:
		t.Fatalf("the request feed was told %v before the sync returned", ids)
	case r := <-delta:
		t.Fatalf("the agent's delta was answered before the sync returned: %+v, %v", r.v, r.err)
	case r := <-head:
		t.Fatalf("the agent's snapshot head was answered before the sync returned: %+v, %v", r.v, r.err)
	case r := <-chunk:
		t.Fatalf("the agent's snapshot grants were answered before the sync returned: %+v, %v", r.v, r.err)
	default:
	}
	if g, err := s.Generation(ctx); err != nil || g != gen0 {
		t.Errorf("generation during the sync: %d, %v; want %d (published once durable)", g, err, gen0)
	}
	if c, _ := s.WriteStats(); c != commits0 {
		t.Errorf("commits counted during the sync: %d, want %d", c, commits0)
	}

	release()
	r := <-created
	if r.err != nil {
		t.Fatalf("CreateRequest after the sync: %v", r.err)
	}
	if ids := <-told; !slices.Contains(ids, r.v.ID) {
		t.Errorf("request feed told %v, want %s", ids, r.v.ID)
	}
	if d := <-delta; d.err != nil || len(d.v.Changed) != 1 {
		t.Errorf("delta after the sync: %+v, %v; want the new grant", d.v, d.err)
	}
	if h := <-head; h.err != nil || h.v.Revision != tg.Revision {
		t.Errorf("snapshot head after the sync: %+v, %v; want revision %d", h.v, h.err, tg.Revision)
	}
	if c := <-chunk; c.err != nil || len(c.v) != 1 {
		t.Errorf("snapshot grants after the sync: %+v, %v; want the new grant", c.v, c.err)
	}
	if g, err := s.Generation(ctx); err != nil || g <= gen0 {
		t.Errorf("generation after the sync: %d, %v; want above %d", g, err, gen0)
	}
	if c, _ := s.WriteStats(); c != commits0+1 {
		t.Errorf("commits counted after the sync: %d, want %d", c, commits0+1)
	}
}

// TestFailedSyncFailsClosed: when the fsync of the WAL fails, the batches
// it covered are not reported done (their callers get the error, the
// request feed is not told, the generation does not move), the reads that
// open access fail rather than hand out what may never reach the disk, and
// the store refuses every later write and fails Ping (/readyz), even when
// the disk works again: a retried fsync may succeed without the data (Linux
// drops the pages of a failed write-back). Before pipelined durability the
// create succeeded (no sync of the store's own to fail).
func TestFailedSyncFailsClosed(t *testing.T) {
	ctx := t.Context()
	s, _ := syncStore(t)
	gen0, err := s.Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan []string, 8)
	defer s.SubscribeRequests(func(ids []string, _ []Request) { told <- ids })()
	fail := func(*os.File) error { return syscall.EIO }
	s.w.syncer.hook.Store(&fail)

	bob := Actor{Name: "bob", ClientAddr: "192.0.2.11"}
	if _, err := s.CreateRequest(ctx, bob, "web-1", grantAsk(), policy.DefaultLimits(), syncT0.Add(time.Second)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("CreateRequest with the sync failing: %v, want EIO", err)
	}
	select {
	case ids := <-told:
		t.Errorf("the request feed was told %v of a commit whose sync failed", ids)
	default:
	}
	if g, err := s.Generation(ctx); err != nil || g != gen0 {
		t.Errorf("generation after the failed sync: %d, %v; want %d", g, err, gen0)
	}

	ok := func(f *os.File) error { return fdatasync(f) }
	s.w.syncer.hook.Store(&ok)
	if _, err := s.DesiredHead(ctx, "web-1", syncT0.Add(2*time.Second)); !errors.Is(err, syscall.EIO) {
		t.Errorf("the agent's snapshot head after a failed sync: %v, want EIO", err)
	}
	if _, err := s.CreateRequest(ctx, bob, "web-1", grantAsk(), policy.DefaultLimits(), syncT0.Add(3*time.Second)); !errors.Is(err, syscall.EIO) {
		t.Errorf("a write after a failed sync: %v, want refused with EIO", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, syscall.EIO) {
		t.Errorf("Ping after a failed sync: %v, want EIO", err)
	}
}

// TestCloseAnswersWhatItSyncs: Close lets the syncer finish: a write whose
// sync is under way when the store closes gets its real verdict (done),
// not "store closed", and Close returns after it.
func TestCloseAnswersWhatItSyncs(t *testing.T) {
	ctx := t.Context()
	s, _ := syncStore(t)
	entered, release := blockSyncs(t, s)
	created := make(chan error, 1)
	go func() {
		_, err := s.CreateRequest(ctx, Actor{Name: "bob", ClientAddr: "192.0.2.11"}, "web-1", grantAsk(), policy.DefaultLimits(), syncT0.Add(time.Second))
		created <- err
	}()
	select {
	case <-entered:
	case err := <-created:
		t.Fatalf("the create was answered before its sync began (err %v)", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitUntil(t, "Close told the writer to stop", func() bool {
		select {
		case <-s.w.quit:
			return true
		default:
			return false
		}
	})
	select {
	case err := <-created:
		t.Fatalf("the create was answered before its sync returned: %v", err)
	default:
	}
	release()
	if err := <-created; err != nil {
		t.Errorf("the create synced while closing: %v, want done", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestSyncFollowsTheLiveWAL: the syncer fsyncs the WAL file that is at the
// path, and when the one it holds is not that any more (deleted and made
// again), the database file and the new one; and the WAL's directory
// once for each WAL it opens: a WAL created since the last connection
// closed (or at the start) is found after a power loss only if its name
// is durable, and SQLite syncs the directory only at its own first sync of
// the WAL, which synchronous=NORMAL leaves to a checkpoint. Before, the
// directory was never synced (the test failed on "want the old WAL, the
// database, the new WAL and its directory").
func TestSyncFollowsTheLiveWAL(t *testing.T) {
	ctx := context.Background()
	s, _ := syncStore(t)
	var mu sync.Mutex
	var synced []string
	h := func(f *os.File) error {
		mu.Lock()
		synced = append(synced, f.Name())
		mu.Unlock()
		return fdatasync(f)
	}
	y := s.w.syncer
	y.hook.Store(&h)
	write := func() {
		t.Helper()
		if err := s.tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE store_meta SET value = value WHERE key = 'generation'`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	write()
	mu.Lock()
	got := slices.Clone(synced)
	synced = nil
	mu.Unlock()
	// The WAL's directory was synced with the store's first commit.
	dir := filepath.Dir(y.walPath)
	if !slices.Equal(got, []string{y.walPath}) {
		t.Fatalf("a commit synced %q, want the WAL only", got)
	}
	// A WAL put in place of the one the syncer holds (as SQLite does when
	// the last connection closed and another opens).
	b, err := os.ReadFile(y.walPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(y.walPath); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(y.walPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := y.syncLog(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got = slices.Clone(synced)
	mu.Unlock()
	if !slices.Equal(got, []string{y.walPath, y.dbPath, y.walPath, dir}) {
		t.Fatalf("a sync after the WAL was replaced synced %q, want the old WAL, the database, the new WAL and its directory", got)
	}
}

// TestWriterWaitsForTheSyncBeforeRunningFar: the writer commits at most
// maxUnsynced batches that no sync covers; with a sync held and the next
// batch committed, a third write waits (uncommitted) for that sync, so that
// the writes arriving during a sync make one batch rather than a commit
// each. Without the limit the third write committed at once.
func TestWriterWaitsForTheSyncBeforeRunningFar(t *testing.T) {
	ctx := t.Context()
	s, _ := syncStore(t)
	y := s.w.syncer
	begun0 := y.begun.Load()
	entered, release := blockSyncs(t, s)
	write := func(done chan<- error) {
		done <- s.tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE store_meta SET value = value WHERE key = 'generation'`)
			return err
		})
	}
	done := make(chan error, 3)
	go write(done)
	<-entered
	go write(done)
	waitUntil(t, "the second write committed", func() bool { return y.begun.Load() == begun0+2 })
	admits0 := y.admits.Load()
	go write(done)
	waitUntil(t, "the writer waits for the sync", func() bool { return y.admits.Load() > admits0 })
	if n := y.begun.Load() - begun0; n != 2 {
		t.Fatalf("%d commits with the first one's sync held, want %d", n, maxUnsynced)
	}
	release()
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSyncFollowsALinkedDatabase: a database path that is a symbolic link
// to a file elsewhere (a data directory whose database lives on another
// disk) has its WAL beside the file, where SQLite resolved the link; the
// syncer must fsync that WAL, the one the commits are in. Before, it
// looked for "<link>-wal", found none, took the WAL for checkpointed away
// and fsynced the database file alone: every commit was reported durable
// with its frames in the page cache only (the test failed on "synced
// [.../j.db]").
func TestSyncFollowsALinkedDatabase(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	real := filepath.Join(dir, "disk", "data.db")
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "j.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	was := pipelinedDurability.Swap(true)
	s, err := OpenSQLite(ctx, link, DefaultConfig())
	pipelinedDurability.Store(was)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	var synced []string
	h := func(f *os.File) error {
		mu.Lock()
		synced = append(synced, f.Name())
		mu.Unlock()
		return fdatasync(f)
	}
	s.w.syncer.hook.Store(&h)
	if _, _, err := s.CreateTarget(ctx, Actor{Name: "alice", ClientAddr: "192.0.2.10"}, "web-1", nil, syncT0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(real + "-wal"); err != nil {
		t.Fatalf("the WAL beside the linked file: %v", err)
	}
	mu.Lock()
	got := slices.Clone(synced)
	mu.Unlock()
	if !slices.Equal(got, []string{real + "-wal"}) {
		t.Fatalf("a commit on a linked database synced %q, want the WAL SQLite writes, %s", got, real+"-wal")
	}
}

// TestWebhookNotClaimedBeforeItsSync: a revoke's webhook delivery is in
// the outbox, committed, while its fsync is held; the deliverer's claim is
// a write of its own (ClaimOutbox), answered only after a sync that covers
// the revoke too, so no webhook tells the world of a change (a grant, a
// revoke) a power loss could take back. Held without a change: the
// test pins it.
func TestWebhookNotClaimedBeforeItsSync(t *testing.T) {
	ctx := t.Context()
	s, _ := syncStore(t)
	alice := Actor{Name: "alice", ClientAddr: "192.0.2.10"}
	if _, err := s.CreateWebhook(ctx, alice, Webhook{URL: "https://hooks.example/j", Format: FormatGeneric, Secret: "s3cret-s3cret-s3cret"}, syncT0); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRequest(ctx, Actor{Name: "bob", ClientAddr: "192.0.2.11"}, "web-1", grantAsk(), policy.DefaultLimits(), syncT0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	y := s.w.syncer
	entered, release := blockSyncs(t, s)
	begun0 := y.begun.Load()
	created := make(chan error, 1)
	go func() {
		_, err := s.RevokeRequest(ctx, alice, r.ID, "held", syncT0.Add(2*time.Second))
		created <- err
	}()
	<-entered
	waitUntil(t, "the revoke committed", func() bool { return y.finished.Load() >= begun0+1 })
	var queued int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&queued); err != nil || queued == 0 {
		t.Fatalf("outbox during the sync: %d, %v; want the revoke's delivery committed", queued, err)
	}
	claimed := make(chan result[[]OutboxItem], 1)
	go func() {
		items, err := s.ClaimOutbox(ctx, syncT0.Add(time.Hour), time.Minute, 10)
		claimed <- result[[]OutboxItem]{items, err}
	}()
	waitUntil(t, "the claim committed", func() bool { return y.finished.Load() >= begun0+2 })
	select {
	case r := <-claimed:
		t.Fatalf("the outbox was claimed before the revoke's sync: %d items, %v", len(r.v), r.err)
	case err := <-created:
		t.Fatalf("the revoke was answered before its sync: %v", err)
	default:
	}
	release()
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if c := <-claimed; c.err != nil || len(c.v) == 0 {
		t.Fatalf("claim after the sync: %d items, %v; want the revoke's delivery", len(c.v), c.err)
	}
}

// TestPipelinedByDefault: an SQLite store opened as a server opens it has
// the syncer beside its writer, whose connection commits with
// synchronous=NORMAL; Config.InlineSync (--write-inline-sync) gives the
// inline fsync back: no syncer, and the writer's connection keeps FULL.
func TestPipelinedByDefault(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		inline   bool
		syncer   bool
		wantSync int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{false, true, 1}, {true, false, 2}} {
		cfg := DefaultConfig()
		cfg.InlineSync = tc.inline
		s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.w.syncer != nil; got != tc.syncer {
			t.Errorf("InlineSync %v: syncer %v, want %v", tc.inline, got, tc.syncer)
		}
		var mode int
		if err := s.tx(ctx, func(tx *sql.Tx) error {
			return tx.QueryRow(`PRAGMA synchronous`).Scan(&mode)
		}); err != nil {
			t.Fatal(err)
		}
		if mode != tc.wantSync {
			t.Errorf("InlineSync %v: the writer's connection has synchronous=%d, want %d", tc.inline, mode, tc.wantSync)
		}
		s.Close()
	}
}

// TestSyncStatsCountTheSyncs: the histogram behind
// jitgate_store_sync_duration_seconds counts every sync of the log, in a
// bucket at most as full as the count, with their total duration.
func TestSyncStatsCountTheSyncs(t *testing.T) {
	ctx := t.Context()
	s, _ := syncStore(t)
	before, ok := s.SyncStats()
	if !ok {
		t.Fatal("no sync statistics on a store with a syncer")
	}
	for range 3 {
		if err := s.tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE store_meta SET value = value WHERE key = 'generation'`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := s.SyncStats()
	if after.Count < before.Count+3 {
		t.Fatalf("%d syncs counted after three writes, want at least %d", after.Count, before.Count+3)
	}
	last := after.Buckets[syncBuckets[len(syncBuckets)-1]]
	if last > after.Count || after.Seconds <= before.Seconds {
		t.Fatalf("after three writes: %+v (before %+v)", after, before)
	}
}

// TestCopyFoundDuringAnEndRestoredKeepsCommitsQuiet: a database file found
// replaced while an EndRestored runs is not one it ended, so commits stay
// untold early (SubscribeCommitted) until an EndRestored that began after
// it committed. A single flag cleared by any EndRestored let agents be
// woken early, to read what the second copy brought back.
func TestCopyFoundDuringAnEndRestoredKeepsCommitsQuiet(t *testing.T) {
	s, _ := syncStore(t)
	var told []string
	defer s.SubscribeCommitted(func(targets ...string) { told = append(told, targets...) })()
	tell := func(want bool, why string) {
		t.Helper()
		told = nil
		s.committed([]string{"web-1"}, false)
		if got := len(told) > 0; got != want {
			t.Fatalf("%s: commit told early %v, want %v", why, got, want)
		}
	}
	tell(true, "no copy found")
	s.committed(nil, true) // a commit finds the file replaced
	tell(false, "a copy found, not ended")
	first := s.restoreEnding() // an EndRestored begins
	s.committed(nil, true)     // a second copy is found while it runs
	s.endedRestore(first)      // it commits
	tell(false, "the second copy, found during the first EndRestored")
	s.endedRestore(s.restoreEnding()) // the next EndRestored
	tell(true, "every copy found ended")
	s.endedRestore(first) // an older EndRestored finishing late changes nothing
	tell(true, "an older EndRestored after a newer one")
}
