package store_test

import (
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestWriteCutsRolledBackOpInBatch attacks the write path's statement cuts
// (docs/benchmarks.md §14.1) with an operation that fails after its audit
// insert, its grant and its generation move (a request refused by the
// live-request cap, the last check of its transaction), queued in one
// group-commit batch between operations that commit, and alone:
//   - the audit ids predicted by the chain-head read stay the database's
//     (no collision, no gap) and the chain verifies;
//   - the restore guard's Store.Replaced does not take the rolled-back
//     generation move for a database replaced under the running store
//     (which would end every live grant);
//   - a webhook created in the same batch as an event gets its delivery.
//
// On PostgreSQL two replicas also write events at once.
func TestWriteCutsRolledBackOpInBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) (s, other *store.Store)
	}{
		{"sqlite", func(t *testing.T) (*store.Store, *store.Store) {
			s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, nil
		}},
		{"postgres", func(t *testing.T) (*store.Store, *store.Store) {
			url := testenv.Postgres(t)
			return openPostgres(t, url), openPostgres(t, url)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, other := tc.open(t)
			ctx := t.Context()
			seed(t, s) // alice holds one live request on web-1
			s.Replaced()
			capped := policy.DefaultLimits()
			capped.MaxLivePerRequester = 1
			ask := func(who, src string, limits policy.Limits) func() error {
				return func() error {
					_, err := s.CreateRequest(ctx, store.Actor{Name: who}, "web-1", policy.Request{
						Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix(src), Duration: time.Hour, Reason: "r",
					}, limits, t0)
					return err
				}
			}
			event := func(n int) func() error {
				return func() error {
					// An event webhooks are told of.
					return s.Audit(ctx, audit.Event{At: t0, Actor: "x", Action: audit.BruteForceSuspected, Target: "web-1", Reason: fmt.Sprint(n)})
				}
			}
			hook := func() error {
				_, err := s.CreateWebhook(ctx, store.Actor{Name: "alice"}, store.Webhook{URL: "https://hooks.example.com/x", Format: store.FormatGeneric,
					Secret: "0123456789abcdef"}, t0)
				return err
			}
			// A write that ends the transaction under the writer (as an
			// interrupted statement does on SQLite): its batch-mates run
			// again in a new transaction.
			breaks := func() error {
				err := store.Tx(s, ctx, func(tx *sql.Tx) error {
					tx.ExecContext(ctx, `ROLLBACK`)
					return errors.New("broke the transaction")
				})
				if err == nil {
					return errors.New("a broken transaction reported committed")
				}
				return nil
			}
			// One batch: an event (held), a refused request, a granted
			// one, a write that breaks the transaction, the webhook, an
			// event webhooks are told of, a granted request, and a
			// refused one last (the batch's last generation move is
			// rolled back).
			held, release := store.HoldWriter(s)
			ops := []func() error{event(1), ask("alice", "198.51.100.8/32", capped), ask("bob", "198.51.100.9/32", policy.DefaultLimits()),
				breaks, hook, event(2), ask("carol", "198.51.100.11/32", policy.DefaultLimits()), ask("alice", "198.51.100.10/32", capped)}
			errs := make([]error, len(ops))
			var wg sync.WaitGroup
			for i, op := range ops {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = op() }()
				if i == 0 {
					<-held
					continue
				}
				for store.QueuedWrites(s) < i {
					time.Sleep(time.Millisecond)
				}
			}
			release()
			wg.Wait()
			for i, err := range errs {
				var le *policy.LimitError
				if refused := i == 1 || i == 7; refused != errors.As(err, &le) {
					t.Fatalf("op %d: %v", i, err)
				}
			}
			if commits, _ := store.WriterStats(s); commits == 0 {
				t.Fatal("no commit")
			}
			// Alone: a refused request in a transaction of its own, then a
			// change.
			if err := ask("alice", "198.51.100.12/32", capped)(); err == nil {
				t.Fatal("over the cap: granted")
			}
			if err := ask("dave", "198.51.100.13/32", policy.DefaultLimits())(); err != nil {
				t.Fatal(err)
			}
			if other != nil {
				// Two replicas writing events at once.
				var wg sync.WaitGroup
				for _, st := range []*store.Store{s, other} {
					for n := range 10 {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if err := st.Audit(ctx, audit.Event{At: t0, Actor: "r", Action: audit.RequestRefused, Reason: fmt.Sprint(n)}); err != nil {
								t.Error(err)
							}
						}()
					}
				}
				wg.Wait()
			}
			if gen, replaced := s.Replaced(); replaced {
				t.Errorf("Replaced after a rolled-back operation: the database taken for replaced at generation %d (every live grant would end)", gen)
			}
			res, err := s.VerifyAudit(ctx)
			if err != nil || !res.OK {
				t.Fatalf("VerifyAudit: %+v, %v", res, err)
			}
			var n, lo, hi int64
			if err := store.DB(s).QueryRowContext(ctx, `SELECT count(*), min(id), max(id) FROM audit`).Scan(&n, &lo, &hi); err != nil {
				t.Fatal(err)
			}
			if hi-lo+1 != n {
				t.Errorf("audit ids %d..%d for %d events: a gap or a collision", lo, hi, n)
			}
			var delivered int
			if err := store.DB(s).QueryRowContext(ctx, `SELECT count(*) FROM outbox o JOIN audit a ON a.id = o.event_id
				WHERE a.reason = '2'`).Scan(&delivered); err != nil {
				t.Fatal(err)
			}
			if delivered == 0 {
				t.Error("a webhook created in the batch got no delivery of the event after it")
			}
		})
	}
}

// TestChangeLogPrunedEvery64NeverMissesAChange attacks the change log pruned
// every 64 revisions instead of at each (store.advanceOwner): for an agent
// anywhere from 4,080 to 4,170 revisions behind (around ChangeWindow, and
// the up to 64 revisions kept past it between prunings), the answer is a
// snapshot or a delta that names every grant added after the agent's
// revision, never a delta that misses one.
func TestChangeLogPrunedEvery64NeverMissesAChange(t *testing.T) {
	s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	seed(t, s)
	const n = store.ChangeWindow + 200
	// Each its own requester and source (no extension, no cap): one
	// revision each. Concurrent, so that group commit batches them.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			if _, err := s.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i)}, "web-1", policy.Request{
				Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.PrefixFrom(src, 32), Duration: time.Hour, Reason: "r",
			}, policy.DefaultLimits(), t0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	tgt, err := s.GetTarget(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	// The grant each revision added.
	added := map[int64]int64{}
	rows, err := store.DB(s).QueryContext(ctx, `SELECT r.revision, g.id FROM requests r JOIN grants g ON g.request_id = r.id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var rev, id int64
		if err := rows.Scan(&rev, &id); err != nil {
			t.Fatal(err)
		}
		added[rev] = id
	}
	rows.Close()
	deltas := 0
	for behind := int64(store.ChangeWindow - 16); behind <= store.ChangeWindow+74; behind++ {
		after := tgt.Revision - behind
		d, err := s.DesiredChangesOf(ctx, tgt, after, t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if d.Snapshot {
			continue
		}
		deltas++
		changed := map[int64]bool{}
		for _, id := range d.Changed {
			changed[id] = true
		}
		for rev := after + 1; rev <= tgt.Revision; rev++ {
			if id, ok := added[rev]; ok && !changed[id] {
				t.Fatalf("%d revisions behind: the delta misses grant %d of revision %d", behind, id, rev)
			}
		}
	}
	if deltas == 0 {
		t.Fatal("no delta answered near the window: nothing checked")
	}
}

// TestReportOfAnUnproducedRevisionUndone attacks the agent's report whose
// target update returns the server's revision (no read before it): a
// report of a revision the server has not produced fails with ErrConflict
// and leaves nothing (applied revision, error, last seen, activations),
// in a batch between reports that commit and alone; a report from a
// removed target is ErrNotFound.
func TestReportOfAnUnproducedRevisionUndone(t *testing.T) {
	s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	_, _, req := seed(t, s)
	before, err := s.GetTarget(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Minute)
	report := func(rev int64, applyErr string) func() error {
		return func() error {
			_, err := s.ReportApplied(ctx, "web-1", rev, applyErr, []string{"192.0.2.5"}, "1.0.0", at)
			return err
		}
	}
	held, release := store.HoldWriter(s)
	ops := []func() error{
		func() error { return s.Audit(ctx, audit.Event{At: t0, Actor: "x", Action: audit.RequestRefused}) },
		report(before.Revision+1, ""), report(before.Revision+7, "boom"),
	}
	errs := make([]error, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = op() }()
		if i == 0 {
			<-held
			continue
		}
		for store.QueuedWrites(s) < i {
			time.Sleep(time.Millisecond)
		}
	}
	release()
	wg.Wait()
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("report %d of an unproduced revision: %v, want ErrConflict", i+1, err)
		}
	}
	if err := report(before.Revision+1, "")(); !errors.Is(err, store.ErrConflict) {
		t.Errorf("report alone of an unproduced revision: %v, want ErrConflict", err)
	}
	after, err := s.GetTarget(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if after.AppliedRevision != before.AppliedRevision || after.AgentError != before.AgentError || (after.AgentSeenAt == nil) != (before.AgentSeenAt == nil) ||
		(after.AgentSeenAt != nil && !after.AgentSeenAt.Equal(*before.AgentSeenAt)) {
		t.Errorf("a refused report changed the target: before %+v, after %+v", before, after)
	}
	if r, err := s.GetRequest(ctx, req.ID); err != nil || r.State != req.State {
		t.Errorf("request after refused reports: %v, %v; want %s", r.State, err, req.State)
	}
	if _, err := s.ReportApplied(ctx, "gone", 1, "", nil, "1.0.0", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("report from a target that does not exist: %v, want ErrNotFound", err)
	}
	if res, err := s.VerifyAudit(ctx); err != nil || !res.OK {
		t.Errorf("VerifyAudit: %+v, %v", res, err)
	}
}
