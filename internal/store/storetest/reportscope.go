package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// testReportActivatesOnlyItsOwn: an agent's report activates, in one
// statement (transitionAll), only the pending requests of its own target
// carried by the revision it applied: not another target's pending request
// (whatever its revision number), not a request revoked before the report,
// not one of a later revision; each activation with one audit event by the
// agent.
func testReportActivatesOnlyItsOwn(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-a", t0)
	newTarget(t, s, "web-b", t0)
	a1 := mustRequest(t, s, alice, "web-a", ask("198.51.100.7/32", time.Hour, tcp(22)), at(time.Second))
	a2 := mustRequest(t, s, bob, "web-a", ask("198.51.100.8/32", time.Hour, tcp(22)), at(2*time.Second))
	if _, err := s.RevokeRequest(ctx, bob, a2.ID, "not needed", at(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	// web-b's revisions run on their own: more of them than web-a's.
	var b []store.Request
	for i := range 4 {
		b = append(b, mustRequest(t, s, alice, "web-b", ask(fmt.Sprintf("198.51.100.%d/32", 20+i), time.Hour, tcp(22)), at(4*time.Second)))
	}
	rev := mustTarget(t, s, "web-a").Revision
	a3 := mustRequest(t, s, alice, "web-a", ask("198.51.100.10/32", time.Hour, tcp(22)), at(5*time.Second))

	got := mustReport(t, s, "web-a", rev, at(6*time.Second))
	if len(got) != 1 || got[0].ID != a1.ID || got[0].State != access.Active {
		t.Errorf("web-a's report at revision %d activated %+v, want only %s", rev, got, a1.ID)
	}
	wantState(t, s, a2.ID, access.Revoked)
	wantState(t, s, a3.ID, access.Pending)
	for _, r := range b {
		wantState(t, s, r.ID, access.Pending)
	}
	wantTrail(t, s, store.AuditFilter{Since: t0, Action: string(audit.RequestActivated)}, "request.activated "+a1.ID)
	es, err := s.ListAudit(ctx, store.AuditFilter{RequestID: a1.ID, Action: string(audit.RequestActivated)})
	if err != nil || len(es) != 1 || es[0].Actor != "agent:web-a" {
		t.Errorf("activation events of %s = %+v, %v; want one by agent:web-a", a1.ID, es, err)
	}
}
