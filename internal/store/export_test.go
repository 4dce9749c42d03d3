package store

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// Hooks into the group-commit writer for the tests of package store_test.

// Tx runs f as one write transaction of s, through the group-commit writer.
func Tx(s *Store, ctx context.Context, f func(*sql.Tx) error) error { return s.tx(ctx, f) }

// DB is s's database handle, for tests that set up tables of their own.
func DB(s *Store) *sql.DB { return s.db }

// WriterStats returns how many transactions the writer committed and how
// many operations they carried.
func WriterStats(s *Store) (commits, ops int64) { return s.w.commits.Load(), s.w.ops.Load() }

// QueuedWrites is how many operations wait for the writer.
func QueuedWrites(s *Store) int { return len(s.w.queue) }

// HoldWriter makes the writer stop at the start of its next batch, after
// taking that batch's first operation: held is closed once it waits, and
// it goes on when release is called.
func HoldWriter(s *Store) (held <-chan struct{}, release func()) {
	h, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.w.hold = func() {
		once.Do(func() {
			close(h)
			<-r
		})
	}
	return h, sync.OnceFunc(func() { close(r) })
}

// SetDesiredChunk makes DesiredGrants read n grants per query until the
// returned func restores the default.
func SetDesiredChunk(n int) func() {
	old := desiredChunk
	desiredChunk = n
	return func() { desiredChunk = old }
}

// SetGatherPolicy makes s's writer gather under load by the given rule
// (see gatherUntil) instead of the default one.
func SetGatherPolicy(s *Store, siblings, concurrent int, within, delay time.Duration) {
	s.w.gather.Store(&gatherPolicy{siblings: siblings, concurrent: concurrent, within: within, delay: delay})
}

// Gathers is how many batches s's writer held back to gather more writes.
func Gathers(s *Store) int64 { return s.w.gathers.Load() }

// TouchRequestRow and TouchRequest record moves of requests in tx as the
// store's statements do (touchRequestRow, touchRequest).
func TouchRequestRow(tx *sql.Tx, r Request) { touchRequestRow(tx, r) }
func TouchRequest(tx *sql.Tx, id string)    { touchRequest(tx, id) }

// TimeStatements makes every statement on s's SQLite connections (of any
// store in the process) report its duration to f until the returned func
// is called.
func TimeStatements(f func(query string, d time.Duration)) (stop func()) {
	statementTimer.Store(&f)
	return func() { statementTimer.Store(nil) }
}
