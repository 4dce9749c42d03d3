package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pipelined durability (SQLite). The group-commit writer (groupcommit.go)
// commits on a connection of its own with synchronous=NORMAL: in WAL mode
// COMMIT then writes the transaction's frames to the WAL (pwrite) and
// returns without fsync. The database stays consistent after a power loss
// (a transaction is in or out whole), only not durable. The writer hands
// the batch's answers to the syncer goroutine and goes on with the next
// batch at once; the syncer fsyncs (fdatasync) the WAL file itself, and one
// such sync covers every commit that completed before it began (group
// sync: while it runs, the writer commits the next batches, which the next
// sync covers together). Only then, in commit order, does it do what the
// writer did after a commit before: count the commit (WriteStats, the
// batch-size histogram), publish the generation and a replaced file
// (Generation, Replaced), tell the request feed (SubscribeRequests), and
// answer the callers, whose store methods then tell the change feed. So
// durability as callers and agents see it is unchanged: nothing is reported
// before it is fsynced. What changes is that the writer no longer sits idle
// in the fsync: its serial capacity is its statements' and the WAL's
// pwrites', and the fsync of batch N overlaps the statements of N+1.
//
// The file synced must be the live WAL. SQLite keeps "<db>-wal" while a
// connection is open (the writer's connection stays open for the store's
// life) and, after a complete checkpoint, restarts it: it writes the same
// file again from its start (the same inode; the new header is synced by
// SQLite itself with synchronous=NORMAL). The WAL is deleted only when the
// last connection closes, after a complete checkpoint, and with
// synchronous=NORMAL SQLite fsyncs the WAL before every checkpoint and the
// database file after it: frames that left the WAL that way are durable in
// the database file. Still, after each sync the syncer compares the file it
// synced with the one at the path (os.SameFile); when they differ (the WAL
// was deleted, maybe created again) it also fsyncs the database file and
// the new WAL, so a sync never reports as durable frames it did not sync.
// The descriptors it opens are kept: closing a descriptor of a file drops
// every POSIX lock the process holds on it, and SQLite locks the database
// file (never the WAL, whose locks are in the -shm file): the database
// file's is closed only after the database (Store.Close).
//
// Reads that open access. Another connection can read batch N after its
// COMMIT and before the syncer's fsync; an agent that opened a grant read
// there would hold it open although a power loss could lose the grant (the
// kernel timeout bounds it, but it would be an opening nobody can audit).
// So every read whose answer opens access (the agent's desired state,
// snapshot and delta; the bastion's and the SSH certificate's grant check;
// the generation when it is read rather than known) waits, after reading,
// until the syncs passed every commit begun before the read ended (durable):
// the writer counts a commit as begun before its COMMIT (so that a reader
// who saw it counts it), and as done after COMMIT returned (so that a sync
// covers only what was written before it began). Idle nothing is pending
// and the wait costs two atomic loads; under load it waits for the sync in
// flight (a fraction of a millisecond). A reader whose every use of what it
// read is an answer that waits before each write (the API's durableAnswers)
// leaves the waits of its reads to that answer (AnswerWaits): the agent's
// long-poll, woken at the commit (SubscribeCommitted), reads and builds its
// answer while the sync runs, and waits once, before its first byte.
//
// A failed fsync fails closed: nothing of the batches it would have covered
// is reported done (their callers get the error), and the store refuses
// every write after it, and every access-opening read (durable), until it
// is opened again. Retrying the fsync is not safe: Linux may drop the dirty
// pages of a failed write-back and report success to the next fsync, so
// neither this process nor SQLite's page cache can tell what reached the
// disk; a new process recovers from what the disk holds (SQLite replays
// the WAL's valid frames). Ping reports the error, so /readyz fails.
//
// How far ahead. The writer runs at most maxUnsynced commits ahead of the
// syncs (admit): with one sync under way and the next commit made, it waits
// for that sync before it takes its next batch. So the fsync of batch N
// overlaps the statements of N+1, but the writer does not commit each write
// alone while the disk syncs: the writes that arrive during a sync make one
// batch, as before, and the commits (their BEGIN, COMMIT and the shared
// index pages each rewrites in the WAL) stay about one per sync.
//
// Closing (Store.Close): the writer ends after its batch, then the syncer
// syncs and answers everything handed to it before the writer's goroutine
// reports itself stopped, so no caller is left without its verdict.
//
// On PostgreSQL none of this runs: a COMMIT there returns once durable
// (synchronous_commit), the writer answers as before.

// maxUnsynced is how many commits the writer may have made that no sync
// covers yet when it takes a batch (admit).
const maxUnsynced = 2

// pipelinedDurability turns the syncer on for SQLite stores opened after it
// is set, unless their Config.InlineSync says otherwise (the server's
// --write-inline-sync). It is on: on the two-core VM of the load benchmark,
// with nothing else running, in five interleaved pairs at 1,000 requests/s
// (docs/benchmarks.md §33) the p99 from request to active was lower in all
// five (64–132 ms against 110–2,400 ms inline) for 5–13 % more server CPU per
// request; the first measurements (§32), on a machine other work kept
// saturated, could not tell. Tests above the store turn it off or on with
// SetPipelinedDurability.
var pipelinedDurability atomic.Bool

func init() { pipelinedDurability.Store(true) }

// syncBatch is one batch handed from the writer to the syncer: its answers
// and what its commit changes in the store's memory.
type syncBatch struct {
	ops     []*writeOp
	results []error
	// need is the commits begun (syncer.begun) on whose durability the
	// answers depend: a batch's own commit, or, for a batch that committed
	// nothing, the commits its operations may have read.
	need uint64
	fx   commitEffects
}

// syncer is the pipelined durability state of an SQLite store.
type syncer struct {
	walPath, dbPath string
	queue           chan *syncBatch
	done            chan struct{}
	// begun counts the writer's commits begun (before COMMIT), done those
	// whose COMMIT returned (either way); synced is the highest done value
	// a completed fsync covered.
	begun, finished, synced atomic.Uint64
	// mu guards wake, closed and replaced whenever synced moves or the
	// sync fails, and err.
	mu   sync.Mutex
	wake chan struct{}
	// failed is the sticky error of a failed sync (nil: none).
	failed atomic.Pointer[error]
	// wal and db are the syncer goroutine's descriptors (see above); db
	// is closed by Store.Close after the database.
	wal, db *os.File
	// walNamed is false until the directory was fsynced after wal was
	// opened: a WAL SQLite created is in its directory durably only once
	// the directory is synced, which SQLite does at its own first sync of
	// the file (never, with synchronous=NORMAL, before a checkpoint).
	walNamed bool
	// hook, when set (tests only), syncs a file instead of fdatasync.
	hook atomic.Pointer[func(*os.File) error]
	// syncs counts the fsyncs of the WAL (tests, benchmarks).
	syncs atomic.Int64
	// waits counts the reads that waited in durable (tests); admits the
	// times the writer waited for a sync before its next batch.
	waits, admits atomic.Int64
	// left counts the reads that left their wait to their caller's
	// answer (AnswerWaits; tests).
	left atomic.Int64
	// sleepers counts the reads parked in waitDurable.
	sleepers atomic.Int64
	// took is the histogram of the syncs' durations (SyncStats): the
	// bucket counts (syncBuckets), and their sum in nanoseconds.
	took    [len(syncBuckets)]atomic.Int64
	tookSum atomic.Int64
}

func newSyncer(path string) *syncer {
	return &syncer{walPath: path + "-wal", dbPath: path, queue: make(chan *syncBatch, 256),
		done: make(chan struct{}), wake: make(chan struct{})}
}

func (y *syncer) fsync(f *os.File) error {
	if h := y.hook.Load(); h != nil {
		return (*h)(f)
	}
	return fdatasync(f)
}

// err is the sticky error of a failed sync, or nil.
func (y *syncer) err() error {
	if p := y.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// run is the syncer goroutine: it takes the writer's batches in commit
// order until the writer closes the queue.
func (y *syncer) run(s *Store) {
	defer close(y.done)
	defer func() {
		if y.wal != nil {
			y.wal.Close()
			y.wal = nil
		}
	}()
	for b := range y.queue {
		if y.err() == nil && y.synced.Load() < b.need {
			// Everything done so far, b's commit and those the writer
			// made since, is covered by this one sync.
			upto := y.finished.Load()
			began := time.Now()
			err := y.syncLog()
			y.count(time.Since(began))
			if err != nil {
				err = fmt.Errorf("syncing the database log: %w; the store takes no more writes until it is opened again", err)
				y.mu.Lock()
				y.failed.Store(&err)
				close(y.wake)
				y.wake = make(chan struct{})
				y.mu.Unlock()
			} else {
				y.mu.Lock()
				y.synced.Store(upto)
				close(y.wake)
				y.wake = make(chan struct{})
				y.mu.Unlock()
				if y.sleepers.Load() > 0 {
					// An answer waited for this sync (an agent's
					// long-poll woken at the commit: the grant path):
					// let it run on this processor now, before the
					// callers this goroutine answers next.
					runtime.Gosched()
				}
			}
		}
		if err := y.err(); err != nil {
			// Not durable: nothing of it is reported done, its requests
			// are not published, its generation not taken.
			for i := range b.results {
				if b.results[i] == nil {
					b.results[i] = err
				}
			}
			b.fx = commitEffects{}
		}
		s.applyCommit(b.fx)
		s.deliver(b.ops, b.results)
	}
}

// syncBuckets are the upper bounds, in seconds, of the histogram of the
// syncs' durations: an fdatasync of a few WAL pages takes ~0.5 ms on an idle
// machine and tens of milliseconds on a busy or slow disk.
var syncBuckets = [...]float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}

// count adds one sync of duration d to the histogram (one above every
// bound counts only in SyncStats' Count, which syncLog moves).
func (y *syncer) count(d time.Duration) {
	for i, le := range syncBuckets {
		if d.Seconds() <= le {
			y.took[i].Add(1)
			break
		}
	}
	y.tookSum.Add(int64(d))
}

// SyncStats is the histogram of the syncer's fsyncs (SQLite with pipelined
// durability), as Prometheus wants it: Buckets maps each upper bound in
// seconds to the syncs that took at most that long (cumulative), Count and
// Seconds are their count and total duration.
type SyncStats struct {
	Count   uint64
	Seconds float64
	Buckets map[float64]uint64
}

// SyncStats returns the syncs' histogram so far; ok is false without a
// syncer (PostgreSQL, or an inline fsync), where there is nothing to show.
// The buckets are read before the count (a sync moves the count first,
// in syncLog), so that no bucket exceeds it.
func (s *Store) SyncStats() (st SyncStats, ok bool) {
	y := s.w.syncer
	if y == nil {
		return SyncStats{}, false
	}
	st.Buckets = make(map[float64]uint64, len(syncBuckets))
	var cum uint64
	for i, le := range syncBuckets {
		cum += uint64(y.took[i].Load())
		st.Buckets[le] = cum
	}
	st.Seconds = time.Duration(y.tookSum.Load()).Seconds()
	st.Count = max(uint64(y.syncs.Load()), cum)
	return st, true
}

// syncLog makes every frame written to the WAL so far durable (see above).
func (y *syncer) syncLog() error {
	y.syncs.Add(1)
	if y.wal == nil {
		f, err := os.Open(y.walPath)
		if errors.Is(err, fs.ErrNotExist) {
			// No WAL: what was written to one was checkpointed into the
			// database file before it went.
			return y.syncDB()
		}
		if err != nil {
			return fmt.Errorf("opening the WAL: %w", err)
		}
		y.wal, y.walNamed = f, false
	}
	if err := y.fsync(y.wal); err != nil {
		return err
	}
	if err := y.nameWAL(); err != nil {
		return err
	}
	synced, err := y.wal.Stat()
	if err != nil {
		return fmt.Errorf("reading the WAL's descriptor: %w", err)
	}
	live, err := os.Stat(y.walPath)
	if err == nil && os.SameFile(synced, live) {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("looking at the WAL: %w", err)
	}
	// The WAL synced is not the live one any more (deleted after a
	// complete checkpoint, maybe created again): the database file and the
	// new WAL, if any, hold what the old one held.
	y.wal.Close()
	y.wal = nil
	if err := y.syncDB(); err != nil {
		return err
	}
	f, err := os.Open(y.walPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the WAL: %w", err)
	}
	y.wal, y.walNamed = f, false
	if err := y.fsync(f); err != nil {
		return err
	}
	return y.nameWAL()
}

// nameWAL fsyncs the directory of the WAL once after the syncer opened it:
// the frames synced are durable only with the name that finds them (a WAL
// created since the last connection closed, or by this process's start;
// the database file's own name, created by OpenSQLite, with it).
func (y *syncer) nameWAL() error {
	if y.walNamed {
		return nil
	}
	d, err := os.Open(filepath.Dir(y.walPath))
	if err != nil {
		return fmt.Errorf("opening the WAL's directory: %w", err)
	}
	defer d.Close()
	if err := y.fsync(d); err != nil {
		return fmt.Errorf("syncing the WAL's directory: %w", err)
	}
	y.walNamed = true
	return nil
}

func (y *syncer) syncDB() error {
	if y.db == nil {
		f, err := os.Open(y.dbPath)
		if err != nil {
			return fmt.Errorf("opening the database file: %w", err)
		}
		y.db = f
	}
	return y.fsync(y.db)
}

// Durable waits until every commit begun so far is durable (see durable):
// the callers outside the store whose answer opens access after reads of
// their own call it after their last read and before anything they read
// leaves (the API's durableAnswers before each write of an answer; the
// agent's delta behind a gateway after reading the targets behind it). It
// always waits, whether or not ctx carries AnswerWaits.
func (s *Store) Durable(ctx context.Context) error { return s.waitDurable(ctx) }

// answerWaitsKey marks a context whose reads leave their wait for
// durability to their caller's answer (AnswerWaits).
type answerWaitsKey struct{}

// AnswerWaits returns ctx for reads whose caller answers only through a
// writer that calls Durable before each write (api's durableAnswers): the
// store's reads that open access (DesiredHead, DesiredGrants,
// DesiredChangesOf, ...) then do not wait for the sync themselves, after
// each read, but leave one wait, after the last read, to that writer. So an
// agent's long-poll woken at a commit (SubscribeCommitted) does all its
// reads and builds its answer while the sync runs, and waits once, before
// its first byte, for the sync that covers every commit its reads may have
// seen. They still fail at once after a failed sync. Only for a caller
// whose every use of what it reads is such an answer: nothing read under
// ctx may leave the process another way (a tunnel, a webhook).
func AnswerWaits(ctx context.Context) context.Context {
	return context.WithValue(ctx, answerWaitsKey{}, true)
}

// durable is the wait of the store's own reads that open access: waitDurable,
// unless ctx leaves it to the caller's answer (AnswerWaits; a failed sync
// still fails it).
func (s *Store) durable(ctx context.Context) error {
	if y := s.w.syncer; y != nil && ctx.Value(answerWaitsKey{}) != nil {
		y.left.Add(1)
		return y.err()
	}
	return s.waitDurable(ctx)
}

// admit waits until fewer than maxUnsynced of the writer's commits are
// unsynced, or a sync failed, or quit is closed (closing: what was taken
// runs and is answered). Only the writer calls it.
func (y *syncer) admit(quit <-chan struct{}) {
	for {
		y.mu.Lock()
		wake, synced := y.wake, y.synced.Load()
		y.mu.Unlock()
		if y.begun.Load()-synced < maxUnsynced || y.err() != nil {
			return
		}
		y.admits.Add(1)
		select {
		case <-wake:
		case <-quit:
			return
		}
	}
}

// waitDurable waits until every commit begun so far (one a read that just
// ended may have seen) is fsynced; it fails when a sync failed (fail
// closed: what was read may never reach the disk) or ctx ends. A read whose
// answer opens access calls it after reading, before answering: the commits
// begun are counted when it is called, after the read, and a read's
// snapshot cannot hold a commit begun after the read ended. Without a
// syncer (PostgreSQL) commits are durable when visible.
func (s *Store) waitDurable(ctx context.Context) error {
	y := s.w.syncer
	if y == nil {
		return nil
	}
	need := y.begun.Load()
	if err := y.err(); err != nil {
		return err
	}
	if y.synced.Load() >= need {
		return nil
	}
	y.waits.Add(1)
	for {
		y.mu.Lock()
		wake, synced := y.wake, y.synced.Load()
		y.mu.Unlock()
		if err := y.err(); err != nil {
			return err
		}
		if synced >= need {
			return nil
		}
		y.sleepers.Add(1)
		select {
		case <-wake:
			y.sleepers.Add(-1)
		case <-ctx.Done():
			y.sleepers.Add(-1)
			return fmt.Errorf("waiting for the database log to be synced: %w", ctx.Err())
		}
	}
}

// SyncWith makes s's syncer call sync instead of fdatasync for each file it
// makes durable (nil: fdatasync again): fault injection (a sync held or
// failed) for the tests of the packages above the store. A server never
// calls it. No effect on PostgreSQL.
func (s *Store) SyncWith(sync func(*os.File) error) {
	if y := s.w.syncer; y != nil {
		if sync == nil {
			y.hook.Store(nil)
		} else {
			y.hook.Store(&sync)
		}
	}
}

// DurableWaits is how many reads waited in Durable for a sync (tests: a
// read that must wait is seen waiting, with no timing). 0 on PostgreSQL.
func (s *Store) DurableWaits() int64 {
	if y := s.w.syncer; y != nil {
		return y.waits.Load()
	}
	return 0
}

// WaitsLeftToAnswers is how many reads that open access left their wait
// for durability to their caller's answer (AnswerWaits): tests see that a
// long-poll read what it answers before it waited. 0 on PostgreSQL.
func (s *Store) WaitsLeftToAnswers() int64 {
	if y := s.w.syncer; y != nil {
		return y.left.Load()
	}
	return 0
}

// SetPipelinedDurability turns pipelined durability on or off for the
// SQLite stores opened after it, and returns what it was: for the tests of
// the packages above the store (an answer that must wait for a sync) and
// for measurements. A server does not call it (pipelinedDurability).
func SetPipelinedDurability(on bool) (was bool) { return pipelinedDurability.Swap(on) }
