package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/access"
)

// TestReportReadsPendingByTarget: the read of the requests a report
// activates goes through the partial index requests_pending_target
// (migration 0032) in both of its parts, never a scan of the requests table
// or of every pending request (index requests_state): before, one read with
// an OR passed over every pending request of every target.
//
// The activation that reads them (transitionAll: one UPDATE of the ids
// that read selects) looks the ids up by the primary key, never walking
// the pending requests by their state.
func TestReportReadsPendingByTarget(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	update, args := transitionAllStatement(pendingToActivate, []any{"web-1", 1}, access.Pending, access.Active, set{"activated_at", 1})
	plan := queryPlan(t, s, update, args...)
	if len(plan) == 0 || !strings.Contains(plan[0], "USING INDEX sqlite_autoindex_requests_1 (id=?)") {
		t.Errorf("activation plan %q: the requests updated are not looked up by id", plan)
	}
	checkPendingByTarget(t, plan[1:])
	checkPendingByTarget(t, queryPlan(t, s, pendingToActivate, "web-1", 1))
}

// queryPlan is SQLite's plan of q, one line per step.
func queryPlan(t *testing.T, s *Store, q string, args ...any) []string {
	t.Helper()
	rows, err := s.db.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// checkPendingByTarget: every read of requests in plan goes through
// requests_pending_target, two of them.
func checkPendingByTarget(t *testing.T, plan []string) {
	t.Helper()
	uses := 0
	for _, d := range plan {
		if strings.Contains(d, "requests") && !strings.Contains(d, "targets") {
			if !strings.Contains(d, "USING INDEX requests_pending_target") {
				t.Errorf("plan step %q reads requests without the index requests_pending_target", d)
			}
			uses++
		}
	}
	if uses != 2 {
		t.Errorf("plan %q: %d reads of requests, want 2 (the target's, the targets' behind it)", plan, uses)
	}
}

// TestGrantsOfRequestByHolder: the grants of a request are found through
// the unique index grants_key by the key they share with their request
// (grantHolder) and its id, since migration 0037 took the index on
// request_id away: the deletion of an ended request's grants and the count
// of a superseded one's are seeks, not scans of every grant.
func TestGrantsOfRequestByHolder(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{deleteGrantsOf, countGrantsOf} {
		plan := queryPlan(t, s, q, "web-1", "alice", "198.51.100.1/32", "r-1")
		if len(plan) != 1 || !strings.Contains(plan[0], "USING INDEX grants_key (target=? AND requester=? AND source=?)") {
			t.Errorf("plan of %q: %q, want a seek on grants_key", q, plan)
		}
	}
}
