package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit. Every write transaction of the store (Store.tx) goes to one
// writer goroutine per Store (per replica on PostgreSQL), which takes the
// operations queued while its previous commit was running and runs them in
// one transaction: requests arriving together share one BEGIN, one write
// lock and one fsync. On SQLite there is only ever one writer anyway (BEGIN
// IMMEDIATE); on PostgreSQL the advisory lock (dialect.lockWrites) makes it
// one writer across replicas, so batching loses no parallelism there either.
//
// The semantics each caller sees are those of a transaction of its own:
//   - durable before reported: an operation's result is delivered only after
//     the batch's COMMIT returned and is fsynced, never before: on SQLite
//     (pipelined durability, the default) by the syncer goroutine once it
//     fsynced the WAL, while the writer goes on (syncer.go); on PostgreSQL,
//     or with Config.InlineSync, by the writer after its COMMIT;
//   - isolation from batch-mates: each operation runs under a savepoint; one
//     that fails is rolled back to it and gets its own error, and the others
//     commit. When a failure leaves the transaction unusable (a statement
//     interrupted by its caller's cancelled context rolls back the whole
//     SQLite transaction; pgx closes the connection), the failed operation
//     gets its error and the rest are run again in a fresh transaction;
//   - order: operations run in the order they were queued, each seeing the
//     writes of those before it (as if they had committed first);
//   - a failed COMMIT fails every operation of the batch (nothing of it was
//     recorded).
//
// Because an operation may run more than once before it commits, the
// function passed to tx must set, not accumulate, what it hands back to its
// caller (reset captured slices at its start), and must read only through
// the transaction it is given: a read through s.db would not see the
// uncommitted writes of its batch-mates.

// maxBatch bounds the operations of one transaction, so that one commit
// cannot hold the write lock for long behind a burst.
const maxBatch = 64

// Gathering under load (PostgreSQL's commit_delay and commit_siblings, for
// this writer). Taking only what queued while the previous commit ran makes
// big batches at saturation, smaller ones below it, and every commit costs
// the same whatever it carries: BEGIN, COMMIT, the WAL pages of the shared
// indexes written again, the fsync, the writer's wake-ups. So when writes
// come fast and from callers that do not wait for each other, the writer
// waits a little for more before it begins: a batch whose oldest write was
// queued at t waits until t+gatherDelay at most (or until it is full), so
// that no write waits in the queue longer than that for the sake of
// gathering, and a backlog (its oldest already older) goes at once. It
// waits on a timer, not spinning: the HTTP handlers that make the next
// writes need the CPU meanwhile.
//
// It waits only when both of these hold for the last gatherSiblings writes:
//   - load: they all arrived within gatherWithin (at least 500 writes a
//     second, sustained over 30 ms);
//   - siblings: at least gatherConcurrent of them were queued while
//     another write was pending (not yet answered), i.e. by callers that
//     did not wait for it (PostgreSQL's commit_siblings counts the
//     transactions in progress for the same reason). A caller writing one
//     thing after the other (a migration, an import, a script, the agent's
//     report after the create it applies) never counts: waiting cannot
//     bring it a batch-mate, it would only slow it.
//
// So idle nothing changes: one person's grant (its create, the agent's
// report, maybe a revoke: a few writes, each after the one before, then
// nothing) never gathers, and a lone write begins at once (grant latency).
// Durability is untouched: a write is still reported only after the commit
// that carries it returned.
//
// The Go runtime may round a timer below a millisecond up to one when
// every thread sleeps, so a write can wait up to about 2 ms in the worst
// case.
//
// It is off unless the operator sets a delay (Config.GatherDelay, the
// server's --write-gather-delay): measured on SQLite on a two-core machine
// at 500 and 1,000 requests a second (docs/benchmarks.md §28), it doubled
// the batches but saved no server CPU, and the wait itself raised the p50
// and the p99 (1,000/s: p99 154–591 ms gathering at 1 ms, 45–105 ms not).
// A database whose commits cost more than its statements (PostgreSQL over
// a network, a slow fsync) may gain from it.
const (
	// gatherDelay is the delay the tests of the mechanism use.
	gatherDelay      = time.Millisecond
	gatherSiblings   = 16
	gatherWithin     = 32 * time.Millisecond
	gatherConcurrent = 4
)

// gatherPolicy is the gathering's parameters (the constants above; tests
// change them with SetGatherPolicy).
type gatherPolicy struct {
	siblings, concurrent int
	within, delay        time.Duration
}

// defaultGather never gathers (delay 0): see above.
var defaultGather = gatherPolicy{siblings: gatherSiblings, concurrent: gatherConcurrent, within: gatherWithin}

// gatherWith is defaultGather with the given delay.
func gatherWith(delay time.Duration) gatherPolicy {
	p := defaultGather
	p.delay = delay
	return p
}

// arrival is one write as the writer took it: when it was queued, and
// whether another write was pending then (concurrent: queued before the
// batch ahead of it was answered, or behind another of its own batch), so
// that its caller did not wait for that one.
type arrival struct {
	queued     time.Time
	concurrent bool
}

// arrivals remembers the writer's last writes, to tell whether it is under
// load (gatherUntil). It belongs to the writer goroutine.
type arrivals struct {
	ring [maxBatch]arrival // next is the oldest once full
	next int
	n    int
}

func (a *arrivals) add(w arrival) {
	a.ring[a.next] = w
	a.next = (a.next + 1) % len(a.ring)
	a.n = min(a.n+1, len(a.ring))
}

// nthLatest is the write taken n-1 before the latest one (n=1: the
// latest); ok is false when fewer than n were seen.
func (a *arrivals) nthLatest(n int) (w arrival, ok bool) {
	if n < 1 || n > a.n {
		return arrival{}, false
	}
	return a.ring[(a.next-n+len(a.ring))%len(a.ring)], true
}

// gatherUntil says whether a batch whose oldest write was queued at oldest
// should wait for more at now, and until when: only when the last
// p.siblings writes (those of the batch included) arrived within p.within
// and at least p.concurrent of them were concurrent, and until
// oldest+p.delay, if that is still ahead.
func (a *arrivals) gatherUntil(p gatherPolicy, oldest, now time.Time) (until time.Time, ok bool) {
	latest, ok1 := a.nthLatest(1)
	first, ok2 := a.nthLatest(p.siblings)
	if !ok1 || !ok2 || latest.queued.Sub(first.queued) > p.within {
		return time.Time{}, false
	}
	concurrent := 0
	for n := 1; n <= p.siblings; n++ {
		if w, _ := a.nthLatest(n); w.concurrent {
			concurrent++
		}
	}
	if concurrent < p.concurrent {
		return time.Time{}, false
	}
	until = oldest.Add(p.delay)
	return until, until.After(now)
}

// errStoreClosed answers writes queued after Close.
var errStoreClosed = errors.New("store closed")

// writeOp is one queued write transaction.
type writeOp struct {
	ctx  context.Context
	f    func(*sql.Tx) error
	done chan error
	// queued is when tx queued it (gathering under load).
	queued time.Time
}

// writer is the group-commit state of a Store.
type writer struct {
	once    sync.Once
	queue   chan *writeOp
	quit    chan struct{}
	stopped chan struct{}
	// commits counts committed transactions and ops the operations they
	// carried (tests and benchmarks read them); sizes counts the commits
	// by how many operations they carried, in the buckets of batchBuckets
	// (jitgate_store_write_batch_size).
	commits, ops atomic.Int64
	sizes        [len(batchBuckets)]atomic.Int64
	// hold, when set (tests only), runs at the start of each batch.
	hold func()
	// gather is the gathering policy (defaultGather unless a test set
	// another); gathers counts the batches that waited for more writes.
	gather  atomic.Pointer[gatherPolicy]
	gathers atomic.Int64
	// answered is when the writer began answering its last batch (a
	// write queued before that did not wait for it: arrival.concurrent).
	// The writer goroutine's own.
	answered time.Time
	// gen is the database generation (Generation) as the last commit that
	// moved it left it (its statements' RETURNING), plus one; 0: not
	// known. Kept on SQLite only, where this writer
	// makes every commit of the database: the restore guard asks for the
	// generation after every change, before the agents are woken, and
	// gets it without a read (on PostgreSQL other replicas commit too).
	gen atomic.Int64
	// replaced is the generation, plus one, that a batch found the
	// database at when this writer's last commit had left another (0:
	// none since Replaced was last asked): on SQLite nothing else
	// commits, so the file was replaced under the running store (an older
	// copy put back through SQLite). Generation alone cannot tell: the
	// changes made since on the copy bring it back up.
	replaced atomic.Int64
	// left is the generation, plus one, that the writer's last commit
	// left (0: not known), the writer goroutine's own: gen is published
	// only once that commit is durable (syncer.go), and the next batch
	// may run before (SQLite).
	left int64
	// syncer makes the writer's commits durable and answers them (SQLite:
	// syncer.go); nil on PostgreSQL, where COMMIT returns once durable.
	syncer *syncer
	// replacements counts the commits that found the file replaced;
	// restoresEnded is the count an EndRestored started from, once it
	// committed. While they differ no commit is told early
	// (SubscribeCommitted): a copy found after an EndRestored began is not
	// one it ended, so it keeps the store quiet until the next one (a
	// single flag, cleared by any EndRestored, let a second replacement
	// found during the first's EndRestored wake agents early).
	replacements, restoresEnded atomic.Int64
}

// commitEffects is what a batch's commit changes in the store's memory,
// applied (applyCommit) once the commit is durable, in commit order.
type commitEffects struct {
	// committed is how many operations the commit carried (0: none
	// committed; nothing else below applies).
	committed int
	// gen is the generation, plus one, the commit left (0: unchanged);
	// forget asks to forget the generation (a failed COMMIT).
	gen    int64
	forget bool
	// replaced is the generation, plus one, at which the batch found a
	// replaced file (0: not).
	replaced int64
	// touched is the requests whose versions the commit moved, rows those
	// of them a statement returned (movedRows).
	touched []string
	rows    []Request
}

func (s *Store) startWriter() {
	s.w.once.Do(func() {
		s.w.queue = make(chan *writeOp, 1024)
		s.w.quit = make(chan struct{})
		s.w.stopped = make(chan struct{})
		s.w.gather.CompareAndSwap(nil, &defaultGather)
		if s.w.syncer != nil {
			go s.w.syncer.run(s)
		}
		go s.writeLoop()
	})
}

// stopWriter ends the writer after the batch it is running; operations
// still queued fail with errStoreClosed.
func (s *Store) stopWriter() {
	s.startWriter()
	select {
	case <-s.w.quit:
	default:
		close(s.w.quit)
	}
	<-s.w.stopped
}

// tx runs f in a write transaction and commits it, or rolls back what f did
// on error (see the group-commit semantics above). A storage failure (a full
// disk) is classified by writeFailed: the caller gets ErrStorageFull and
// reports nothing done.
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	s.startWriter()
	op := &writeOp{ctx: ctx, f: f, done: make(chan error, 1), queued: time.Now()}
	select {
	case s.w.queue <- op:
	case <-ctx.Done():
		return fmt.Errorf("waiting to write: %w", ctx.Err())
	case <-s.w.quit:
		return errStoreClosed
	}
	// Once queued it may commit: wait for the verdict whatever ctx does,
	// so that the caller never reports as failed what was recorded. A
	// writer that stopped (Close) gave its verdict before it did (done is
	// buffered) or never takes the operation: with quit closed, select
	// may still have queued it after the writer's last look at the queue
	// (TestWriteAfterCloseReturns).
	select {
	case err := <-op.done:
		return err
	case <-s.w.stopped:
		select {
		case err := <-op.done:
			return err
		default:
			return errStoreClosed
		}
	}
}

func (s *Store) writeLoop() {
	defer close(s.w.stopped)
	// Before stopped: the syncer answers everything handed to it.
	defer func() {
		if y := s.w.syncer; y != nil {
			close(y.queue)
			<-y.done
		}
	}()
	var seen arrivals
	// One timer for the loop's gathering waits (stopped between them).
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *writeOp
		select {
		case first = <-s.w.queue:
		case <-s.w.quit:
			s.failQueued()
			return
		}
		if s.w.hold != nil {
			s.w.hold()
		}
		if y := s.w.syncer; y != nil {
			// At most maxUnsynced commits ahead of the syncer: the writes
			// queued meanwhile make the next batch (syncer.go).
			y.admit(s.w.quit)
		}
		batch := []*writeOp{first}
		seen.add(arrival{first.queued, first.queued.Before(s.w.answered)})
	drain:
		for len(batch) < maxBatch {
			select {
			case op := <-s.w.queue:
				batch = append(batch, op)
				seen.add(arrival{op.queued, true}) // queued with batch[0] pending
			default:
				break drain
			}
		}
		// Gathering is off unless a delay was set (defaultGather): then
		// the batch goes as it is, without asking.
		if p := s.w.gather.Load(); p.delay > 0 && len(batch) < maxBatch {
			now := time.Now()
			if until, ok := seen.gatherUntil(*p, batch[0].queued, now); ok {
				s.w.gathers.Add(1)
				timer.Reset(until.Sub(now))
			gather:
				for len(batch) < maxBatch {
					select {
					case op := <-s.w.queue:
						batch = append(batch, op)
						seen.add(arrival{op.queued, true}) // queued with batch[0] pending
					case <-timer.C:
						break gather
					case <-s.w.quit:
						// Closing: what was taken runs, and is answered.
						break gather
					}
				}
				timer.Stop()
			}
		}
		for len(batch) > 0 {
			batch = s.runBatch(batch)
		}
	}
}

func (s *Store) failQueued() {
	for {
		select {
		case op := <-s.w.queue:
			op.done <- errStoreClosed
		default:
			return
		}
	}
}

// runBatch runs ops in one transaction and delivers their results after
// the commit. It returns the operations to run again in a new transaction
// when one of them broke the transaction (their results not delivered).
func (s *Store) runBatch(ops []*writeOp) (again []*writeOp) {
	failAll := func(err error) []*writeOp {
		err = s.writeFailed(err)
		s.w.answered = time.Now()
		for _, op := range ops {
			op.done <- err
		}
		return nil
	}
	if y := s.w.syncer; y != nil {
		if err := y.err(); err != nil {
			// Fail closed after a failed sync (syncer.go).
			return failAll(err)
		}
	}
	// The transaction is not bound to any caller's context: one caller
	// giving up must not roll back its batch-mates.
	tx, err := s.beginWrite()
	if err != nil {
		return failAll(fmt.Errorf("beginning transaction: %w", err))
	}
	if s.dialect.lockWrites != "" {
		if _, err := tx.Exec(s.dialect.lockWrites); err != nil {
			tx.Rollback()
			return failAll(fmt.Errorf("taking the write lock: %w", err))
		}
	}
	// The requests the batch touched are published only if it commits; the
	// generation it moved is kept only then.
	defer takeTouched(tx)
	defer takeGeneration(tx)
	// broken rolls back, delivers err to ops[i] and asks for the others to
	// run again.
	broken := func(i int, err error) []*writeOp {
		tx.Rollback()
		s.w.answered = time.Now()
		s.finish(ops[i:i+1], []error{err}, commitEffects{}, 0)
		return append(append(again, ops[:i]...), ops[i+1:]...)
	}
	alone := len(ops) == 1
	results := make([]error, len(ops))
	committed := 0
	for i, op := range ops {
		if err := op.ctx.Err(); err != nil {
			results[i] = fmt.Errorf("waiting to write: %w", err)
			continue
		}
		if !alone {
			if _, err := tx.Exec(`SAVEPOINT op`); err != nil {
				return broken(i, fmt.Errorf("starting a savepoint: %w", err))
			}
		}
		genBefore := peekGeneration(tx)
		err := op.f(tx)
		if err == nil {
			if !alone {
				if _, rerr := tx.Exec(`RELEASE SAVEPOINT op`); rerr != nil {
					return broken(i, fmt.Errorf("releasing a savepoint: %w", rerr))
				}
			}
			committed++
			continue
		}
		results[i] = err
		if alone {
			continue
		}
		if _, rerr := tx.Exec(`ROLLBACK TO SAVEPOINT op`); rerr != nil {
			return broken(i, err)
		}
		restoreGeneration(tx, genBefore)
		if _, rerr := tx.Exec(`RELEASE SAVEPOINT op`); rerr != nil {
			return broken(i, err)
		}
	}
	// The generation as this transaction moved it, from the statements that
	// moved it (their RETURNING): no statement of its own.
	moved := peekGeneration(tx)
	var (
		fx  commitEffects
		seq uint64
	)
	if committed == 0 {
		tx.Rollback()
	} else {
		y := s.w.syncer
		if y != nil {
			// Begun before COMMIT: a reader that sees it counts it.
			seq = y.begun.Add(1)
		}
		err := tx.Commit()
		if y != nil {
			y.finished.Store(seq)
		}
		if err != nil {
			err = fmt.Errorf("committing: %w", err)
			// Whether any of it was recorded is not known (an I/O error
			// after the log was written): the generation is read again,
			// and the next batch does not take a difference for a
			// replaced file.
			s.w.left = 0
			fx.forget = true
			for i := range results {
				if results[i] == nil {
					results[i] = err
				}
			}
		} else {
			fx.committed = committed
			// On SQLite nothing else commits, so the generation the
			// batch found must be the one the last commit left: else the
			// file was replaced under the running store (Replaced).
			if moved.seen && s.dialect.name == sqliteDialect.name {
				if want := s.w.left; want > 0 && moved.first != want-1 {
					fx.replaced = moved.first + 1
				}
				s.w.left = moved.last + 1
				fx.gen = moved.last + 1
			}
			fx.touched, fx.rows = takeTouched(tx), movedRows(tx)
			if y != nil {
				s.committed(moved.owners, fx.replaced > 0)
			}
		}
	}
	s.w.answered = time.Now()
	s.finish(ops, results, fx, seq)
	return nil
}

// finish answers ops with results once what they did is durable, and
// applies fx, the effects of their commit: at once on PostgreSQL, by the
// syncer on SQLite. seq is their commit's (0: none; then they wait for
// the commits they may have read).
func (s *Store) finish(ops []*writeOp, results []error, fx commitEffects, seq uint64) {
	y := s.w.syncer
	if y == nil {
		s.applyCommit(fx)
		s.deliver(ops, results)
		return
	}
	if seq == 0 {
		seq = y.begun.Load()
	}
	y.queue <- &syncBatch{ops: ops, results: results, need: seq, fx: fx}
}

// applyCommit applies what a durable commit changed in the store's memory,
// before any of its callers is answered (and so before the change feed
// wakes anyone): Generation is never behind a reported commit, nor ahead
// of a durable one.
func (s *Store) applyCommit(fx commitEffects) {
	if fx.forget {
		s.w.gen.Store(0)
	}
	if fx.committed == 0 {
		return
	}
	s.w.commits.Add(1)
	s.w.ops.Add(int64(fx.committed))
	s.w.sizes[batchBucket(fx.committed)].Add(1)
	if fx.replaced > 0 {
		s.w.replaced.CompareAndSwap(0, fx.replaced)
	}
	if fx.gen > 0 {
		s.w.gen.Store(fx.gen)
	}
	s.publishRequests(fx.touched, fx.rows)
}

// deliver gives each op its result.
func (s *Store) deliver(ops []*writeOp, results []error) {
	for i, op := range ops {
		err := results[i]
		if err != nil {
			err = s.writeFailed(err)
		}
		op.done <- err
	}
}

// WriteStats returns how many write transactions this store committed and
// how many operations they carried (their ratio is the group-commit batch
// size; the write-path benchmarks report it).
func (s *Store) WriteStats() (commits, ops int64) { return s.w.commits.Load(), s.w.ops.Load() }

// WriteGathers returns how many batches the writer held back to gather
// more writes under load (gatherUntil); idle it stays where it is.
func (s *Store) WriteGathers() int64 { return s.w.gathers.Load() }

// batchBuckets are the upper bounds of the buckets of WriteBatches: a
// commit of n operations counts in the first bucket whose bound is at
// least n (maxBatch bounds n).
var batchBuckets = [...]int{1, 2, 4, 8, 16, 32, maxBatch}

func batchBucket(n int) int {
	for i, le := range batchBuckets {
		if n <= le {
			return i
		}
	}
	return len(batchBuckets) - 1
}

// WriteBatches is the histogram of the operations per committed write
// transaction of a Store (the group-commit batch size), as Prometheus wants
// it: Buckets maps each upper bound to the commits of at most that many
// operations (cumulative); Commits and Ops are the count and the sum.
type WriteBatches struct {
	Commits, Ops int64
	Buckets      map[float64]uint64
}

// WriteBatchSizes returns the batch-size histogram of the commits so far.
// Commits go on while it reads: the buckets are read before the count
// (which a commit moves first), so that no bucket exceeds the count.
func (s *Store) WriteBatchSizes() WriteBatches {
	b := WriteBatches{Buckets: make(map[float64]uint64, len(batchBuckets))}
	var cum uint64
	for i, le := range batchBuckets {
		cum += uint64(s.w.sizes[i].Load())
		b.Buckets[float64(le)] = cum
	}
	b.Commits, b.Ops = s.w.commits.Load(), s.w.ops.Load()
	return b
}

// The generation moved by a write transaction, as its statements returned
// it (movedGeneration), so that the writer knows where its commit leaves it
// without reading it, and where it found it: first is the generation before
// the transaction's first move.
type genMove struct {
	seen        bool
	first, last int64
}

// txState is what a write transaction's own statements told the store, kept
// beside the transaction (keyed by it) so that later statements of the same
// transaction need not read it again: the generation it moved, and the audit
// chain's head as its last event left it (chainHead). The writer takes a
// copy before each batched operation (peekGeneration) and puts it back when
// the operation's savepoint is rolled back (restoreGeneration): what a
// rolled-back operation wrote is not the transaction's any more.
type txState struct {
	genMove
	head auditHead
	// moves are the request moves of tx in order, with the row a statement
	// returned (touched.go): a rolled-back operation's go with it.
	moves []requestMove
	// owners are the enforcers whose revision tx moved (advanceOwner), in
	// order, maybe repeated: their agents are woken as soon as it commits
	// (SubscribeCommitted).
	owners []string
}

// kept reports whether st holds anything to keep beside its transaction.
func (st txState) kept() bool {
	return st.seen || st.head.known || len(st.moves) > 0 || len(st.owners) > 0
}

var generations = struct {
	sync.Mutex
	m map[*sql.Tx]txState
}{m: map[*sql.Tx]txState{}}

// movedGeneration records, in tx, that a statement moved the generation by
// delta to now.
func movedGeneration(tx *sql.Tx, now, delta int64) {
	generations.Lock()
	defer generations.Unlock()
	st := generations.m[tx]
	if !st.seen {
		st.genMove = genMove{seen: true, first: now - delta}
	}
	st.last = now
	generations.m[tx] = st
}

// movedOwner records, in tx, that enforcer owner's revision moved.
func movedOwner(tx *sql.Tx, owner string) {
	generations.Lock()
	defer generations.Unlock()
	st := generations.m[tx]
	st.owners = append(st.owners, owner)
	generations.m[tx] = st
}

func peekGeneration(tx *sql.Tx) txState {
	generations.Lock()
	defer generations.Unlock()
	return generations.m[tx]
}

// restoreGeneration puts back what tx had moved (and the audit chain head it
// had left) before an operation whose savepoint was rolled back.
func restoreGeneration(tx *sql.Tx, st txState) {
	generations.Lock()
	defer generations.Unlock()
	if st.kept() {
		generations.m[tx] = st
	} else {
		delete(generations.m, tx)
	}
}

// setAuditHead records the audit chain's head as tx's last event left it
// (known false: forget it, the next event reads it).
func setAuditHead(tx *sql.Tx, h auditHead) {
	generations.Lock()
	defer generations.Unlock()
	st := generations.m[tx]
	st.head = h
	if st.kept() {
		generations.m[tx] = st
	} else {
		delete(generations.m, tx)
	}
}

func takeGeneration(tx *sql.Tx) {
	generations.Lock()
	defer generations.Unlock()
	delete(generations.m, tx)
}
