package store_test

import (
	"database/sql"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
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
// follows the one before it). Before (docs/benchmarks.md §26): 8 × 11 and
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
			if err == nil && (len(acts) != 1 || acts[0].ID != created[i].ID) {
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

// TestLiveCountsFollowEveryMove holds the live-request counts kept by the
// triggers of migration 0035 (one upsert at insert, one trigger for a
// change of state) equal to a count of the live rows after every kind of
// move into, within and out of a live state: creation, activation,
// extension (superseding), revocation, expiry, a request awaiting approval
// and its denial, a scheduled request, and a requester with an empty name
// (counted once in the target's total). On SQLite and PostgreSQL.
func TestLiveCountsFollowEveryMove(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *store.Store
	}{
		{"sqlite", func(t *testing.T) *store.Store {
			s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"postgres", func(t *testing.T) *store.Store { return openPostgres(t, testenv.Postgres(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			ctx := t.Context()
			admin := store.Actor{Name: "admin"}
			for _, name := range []string{"web-1", "web-2"} {
				if _, _, err := s.CreateTarget(ctx, admin, name, nil, t0, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			open, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour}}})
			if err != nil {
				t.Fatal(err)
			}
			approved, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 443, Protocol: policy.TCP}, MaxDuration: time.Hour, Approval: policy.Approval{Mode: policy.Manual}}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.SetPolicy(ctx, admin, "web-1", open, t0); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SetPolicy(ctx, admin, "web-2", approved, t0); err != nil {
				t.Fatal(err)
			}
			check := func(step string) {
				t.Helper()
				rows, err := store.DB(s).QueryContext(ctx, `SELECT l.target, l.requester, l.n, coalesce(c.n, 0) FROM live_requests l LEFT JOIN (
					SELECT target, requester, count(*) AS n FROM requests WHERE state IN ('pending_approval', 'scheduled', 'pending', 'active') AND requester <> '' GROUP BY target, requester
					UNION ALL SELECT target, '', count(*) FROM requests WHERE state IN ('pending_approval', 'scheduled', 'pending', 'active') GROUP BY target
				) c ON c.target = l.target AND c.requester = l.requester
				UNION ALL SELECT c.target, c.requester, 0, c.n FROM (
					SELECT target, requester, count(*) AS n FROM requests WHERE state IN ('pending_approval', 'scheduled', 'pending', 'active') AND requester <> '' GROUP BY target, requester
					UNION ALL SELECT target, '', count(*) FROM requests WHERE state IN ('pending_approval', 'scheduled', 'pending', 'active') GROUP BY target
				) c WHERE NOT EXISTS (SELECT 1 FROM live_requests l WHERE l.target = c.target AND l.requester = c.requester)`)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				for rows.Next() {
					var target, requester string
					var kept, counted int
					if err := rows.Scan(&target, &requester, &kept, &counted); err != nil {
						t.Fatal(err)
					}
					if kept != counted {
						t.Errorf("after %s: live_requests (%s, %q) = %d, %d live rows", step, target, requester, kept, counted)
					}
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
			}
			ask := func(who, target, src string, port uint16, d time.Duration, opt store.RequestOptions, now time.Time) store.Request {
				t.Helper()
				r, err := s.CreateRequestWith(ctx, store.Actor{Name: who}, target, policy.Request{Ports: []policy.Port{{Number: port, Protocol: policy.TCP}},
					Source: netip.MustParsePrefix(src), Duration: d, Reason: "r"}, policy.DefaultLimits(), now, opt)
				if err != nil {
					t.Fatalf("%s asking %s: %v", who, target, err)
				}
				return r
			}
			a := ask("alice", "web-1", "198.51.100.1/32", 22, time.Hour, store.RequestOptions{}, t0)
			b := ask("bob", "web-1", "198.51.100.2/32", 22, time.Hour, store.RequestOptions{}, t0)
			ask("", "web-1", "198.51.100.3/32", 22, time.Hour, store.RequestOptions{}, t0)
			check("creations")
			if _, err := s.ReportApplied(ctx, "web-1", b.Revision, "", nil, "", t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			check("activations")
			ask("alice", "web-1", "198.51.100.1/32", 22, 2*time.Hour, store.RequestOptions{}, t0.Add(time.Minute)) // extends a, superseding it
			check("an extension")
			if _, err := s.RevokeRequest(ctx, admin, b.ID, "", t0.Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			check("a revocation")
			w := ask("carol", "web-2", "198.51.100.4/32", 443, time.Hour, store.RequestOptions{}, t0.Add(2*time.Minute))
			ask("dave", "web-1", "198.51.100.5/32", 22, time.Hour, store.RequestOptions{Start: t0.Add(30 * time.Minute)}, t0.Add(2*time.Minute))
			check("a request awaiting approval and a scheduled one")
			if _, err := s.DenyRequest(ctx, admin, w.ID, "no", w.Version, t0.Add(3*time.Minute)); err != nil {
				t.Fatal(err)
			}
			check("a denial")
			if _, err := s.Sweep(ctx, t0.Add(3*time.Hour), 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			check("expiries")
			if r, err := s.GetRequest(ctx, a.ID); err != nil || r.State != access.Superseded {
				t.Errorf("the extended request: %+v, %v; want superseded", r.State, err)
			}
		})
	}
}

// TestRequestWritePages pins the pages (WAL frames) of a request's two
// commits, each alone in its transaction: its creation and the agent's
// report that activates it. A commit writes each page it changed once (a
// frame: a header and the page, then the fsync), so the b-trees a write
// touches are its cost on the disk; this lists them, so that a new index or
// table on the path is a decision, not an accident. Before migrations 0036
// and 0037 a creation wrote 19 b-trees' pages (20 pages: live_requests'
// rowid table took two), and the report 9 (docs/benchmarks.md). Page
// splits add pages to the same b-trees; the smallest of a few commits has
// none.
func TestRequestWritePages(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "j.db")
	s, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin := store.Actor{Name: "admin"}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		name := fmt.Sprintf("web-%d", i)
		if _, _, err := s.CreateTarget(ctx, admin, name, nil, t0, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetPolicy(ctx, admin, name, pol, t0); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var creates, reports [][]uint32
	for i := range 4 {
		w := newWALReader(t, path)
		target := fmt.Sprintf("web-%d", i)
		r, err := s.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i)}, target, policy.Request{
			Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", i+1)),
			Duration: time.Hour, Reason: "r"}, policy.DefaultLimits(), t0)
		if err != nil {
			t.Fatal(err)
		}
		pages, commits := w.next(t)
		if commits != 1 {
			t.Fatalf("a creation: %d commits", commits)
		}
		creates = append(creates, pages)
		if acts, err := s.ReportApplied(ctx, target, r.Revision, "", nil, "", t0.Add(time.Second)); err != nil || len(acts) != 1 {
			t.Fatalf("report: %v, %v", acts, err)
		}
		if pages, commits = w.next(t); commits != 1 {
			t.Fatalf("a report: %d commits", commits)
		}
		reports = append(reports, pages)
	}
	owners := pageOwners(t, ctx, db)
	for _, tc := range []struct {
		name string
		ops  [][]uint32
		want []string
	}{
		{"creation", creates, []string{"audit", "audit_target", "desired_changes", "grants", "grants_expires", "grants_key", "grants_target_id",
			"live_requests", "requests", "requests_pending_target", "requests_state", "requests_target", "sqlite_autoindex_requests_1",
			"sqlite_sequence", "store_meta", "targets"}},
		{"report", reports, []string{"audit", "audit_target", "requests", "requests_activated", "requests_pending_target", "requests_state",
			"requests_target_activated", "sqlite_sequence", "targets"}},
	} {
		least := slices.MinFunc(tc.ops, func(a, b []uint32) int { return len(a) - len(b) })
		names := ownersOf(least, owners)
		if got := btreeSet(names); !slices.Equal(got, tc.want) || len(least) != len(tc.want) {
			t.Errorf("a %s wrote %d pages, of %q; want one of each of %q", tc.name, len(least), names, tc.want)
		}
	}
}
