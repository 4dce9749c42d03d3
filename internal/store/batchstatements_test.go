package store_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// TestBatchedRequestStatements counts the SQLite statements of the load
// benchmark's two writes per request (a creation, the agent's report that
// activates it) when the group commit carries eight of each in one
// transaction, as it does under load (docs/benchmarks.md §17: ~8 operations
// per commit). Per operation, a creation is its savepoint and release, one
// read of its target with the live counts, the revision and generation
// moves, the grant, the change log, the request and its audit event; a
// report is its savepoint and release, the update of its target (which
// also says whether removals wait), the activation and its audit event.
// What goes per batch, not per operation: the audit chain's head, read by
// the transaction's first event only (each later event of the transaction
// follows the one before it). Before (docs/benchmarks.md §23): 8 × 11 and
// 8 × 8 statements, the head read at every event, the target read apart
// from the live counts, and the unconfirmed removals read at every report.
// The chain verifies after both batches.
func TestBatchedRequestStatements(t *testing.T) {
	ctx := t.Context()
	s, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 8
	admin := store.Actor{Name: "admin"}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("web-%d", i)
		if _, _, err := s.CreateTarget(ctx, admin, name, nil, t0, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetPolicy(ctx, admin, name, pol, t0); err != nil {
			t.Fatal(err)
		}
	}
	// batch runs ops in one group-commit transaction and returns the
	// statements they ran.
	batch := func(ops []func() error) int64 {
		t.Helper()
		q0 := s.Queries()
		c0, _ := store.WriterStats(s)
		held, release := store.HoldWriter(s)
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
			if err != nil {
				t.Fatalf("operation %d: %v", i, err)
			}
		}
		if c1, _ := store.WriterStats(s); c1-c0 != 1 {
			t.Fatalf("%d commits for one batch", c1-c0)
		}
		return s.Queries() - q0
	}
	created := make([]store.Request, n)
	var creates, reports []func() error
	for i := range n {
		creates = append(creates, func() (err error) {
			created[i], err = s.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i)}, fmt.Sprintf("web-%d", i), policy.Request{
				Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", i+1)),
				Duration: time.Hour, Reason: "r"}, policy.DefaultLimits(), t0)
			return err
		})
		reports = append(reports, func() error {
			acts, err := s.ReportApplied(ctx, created[i].Target, created[i].Revision, "", nil, "", t0.Add(time.Second))
			if err == nil && (len(acts) != 1 || acts[0].State != access.Active) {
				err = fmt.Errorf("activated %+v", acts)
			}
			return err
		})
	}
	const perCreate, perReport = 9, 5
	if got, want := batch(creates), int64(n*perCreate+1); got > want {
		t.Errorf("%d creations in one batch ran %d statements, want at most %d (%d each and the chain's head once)", n, got, want, perCreate)
	}
	if got, want := batch(reports), int64(n*perReport+1); got > want {
		t.Errorf("%d reports in one batch ran %d statements, want at most %d (%d each and the chain's head once)", n, got, want, perReport)
	}
	res, err := s.VerifyAudit(ctx)
	if err != nil || !res.OK {
		t.Fatalf("VerifyAudit: %+v, %v", res, err)
	}
}
