package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportReadsPendingByTarget: the read of the requests a report
// activates goes through the partial index requests_pending_target
// (migration 0032) in both of its parts, never a scan of the requests table
// or of every pending request (index requests_state): before, one read with
// an OR passed over every pending request of every target.
func TestReportReadsPendingByTarget(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.db.QueryContext(ctx, `EXPLAIN QUERY PLAN `+pendingToActivate, "web-1", 1)
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
