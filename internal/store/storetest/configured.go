package storetest

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// testExpiryWarning: with Config.ExpiryWarning set, Sweep announces an
// active request once, that long before its deadline (and says when to
// wake for it), changes no state doing so, and skips requests shorter than
// the lead; with none, nothing is announced.
func testExpiryWarning(t *testing.T, open func(store.Config) *store.Store) {
	ctx := t.Context()
	cfg := store.DefaultConfig()
	cfg.ExpiryWarning = 10 * time.Minute
	s := open(cfg)
	newTarget(t, s, "web-1", t0)
	long := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustReport(t, s, "web-1", mustTarget(t, s, "web-1").Revision, at(time.Second))
	version := mustGet(t, s, long.ID).Version
	next, err := s.Sweep(ctx, at(2*time.Second), activation)
	if err != nil {
		t.Fatal(err)
	}
	if want := at(50 * time.Minute); !next.Equal(want) {
		t.Errorf("next sweep = %v, want the warning at %v", next, want)
	}
	for _, d := range []time.Duration{49 * time.Minute, 50 * time.Minute, 51 * time.Minute} {
		if _, err := s.Sweep(ctx, at(d), activation); err != nil {
			t.Fatal(err)
		}
	}
	wantTrail(t, s, store.AuditFilter{Action: string(audit.RequestExpiring)}, "request.expiring "+long.ID)
	if v := mustGet(t, s, long.ID).Version; v != version {
		t.Errorf("version after the warning = %d, want %d: a warning changes no state", v, version)
	}
	short := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", 5*time.Minute, tcp(22)), at(52*time.Minute))
	mustReport(t, s, "web-1", mustTarget(t, s, "web-1").Revision, at(52*time.Minute))
	if _, err := s.Sweep(ctx, at(53*time.Minute), activation); err != nil {
		t.Fatal(err)
	}
	wantTrail(t, s, store.AuditFilter{RequestID: short.ID, Action: string(audit.RequestExpiring)})

	off := open(store.DefaultConfig())
	newTarget(t, off, "web-1", t0)
	r := mustRequest(t, off, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustReport(t, off, "web-1", mustTarget(t, off, "web-1").Revision, at(time.Second))
	if _, err := off.Sweep(ctx, at(55*time.Minute), activation); err != nil {
		t.Fatal(err)
	}
	wantTrail(t, off, store.AuditFilter{RequestID: r.ID, Action: string(audit.RequestExpiring)})
}

// testApprovalTimeout: a request awaiting approval expires at creation +
// Config.ApprovalTimeout, not before.
func testApprovalTimeout(t *testing.T, open func(store.Config) *store.Store) {
	cfg := store.DefaultConfig()
	cfg.ApprovalTimeout = 30 * time.Minute
	s := open(cfg)
	manualTarget(t, s, "db-1", t0)
	r := mustRequest(t, s, alice, "db-1", ask("198.51.100.7/32", time.Hour, tcp(3389)), at(time.Minute))
	if r.ApproveBy == nil || !r.ApproveBy.Equal(at(31*time.Minute)) {
		t.Fatalf("approve by %v, want +31m", r.ApproveBy)
	}
	if _, err := s.Sweep(t.Context(), at(31*time.Minute-time.Millisecond), activation); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, r.ID, access.PendingApproval)
	if _, err := s.Sweep(t.Context(), at(31*time.Minute), activation); err != nil {
		t.Fatal(err)
	}
	if got := wantState(t, s, r.ID, access.Expired); got.Message != "not approved in time" {
		t.Errorf("message %q, want %q", got.Message, "not approved in time")
	}
}
