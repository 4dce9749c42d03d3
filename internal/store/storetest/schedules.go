package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recur"
	"github.com/jitgate/jitgate/internal/store"
)

func produce(t *testing.T, s *store.Store, now time.Time) int {
	t.Helper()
	n, err := s.ProduceOccurrences(t.Context(), policy.DefaultLimits(), now)
	if err != nil {
		t.Fatalf("ProduceOccurrences(%s): %v", now, err)
	}
	return n
}

// testSchedules (issue 15, item 3): a recurring schedule produces each
// occurrence once, recur.Lead before its start, as an ordinary request of
// its principal (scheduled, started by StartScheduled); after downtime only
// an occurrence still in its window is produced, for what remains; a
// principal that lost its role gets none; a deleted schedule none either.
func testSchedules(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	carol := authz.Binding{Principal: "user:carol", Role: authz.Requester, Scope: authz.Everywhere}
	if _, err := s.CreateBinding(ctx, alice, carol, t0); err != nil {
		t.Fatal(err)
	}
	utc := func(d, h, m int) time.Time { return time.Date(2026, 1, d, h, m, 0, 0, time.UTC) }
	sc, err := s.CreateSchedule(ctx, alice, store.Schedule{Principal: "user:carol", Target: "web-1", Ports: []policy.Port{tcp(22)},
		Source: pfx("198.51.100.7/32"), Cron: "0 22 * * *", TimeZone: "Europe/Berlin", Duration: time.Hour, Reason: "nightly batch"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	// 22:00 in Berlin in January is 21:00 UTC.
	if sc.NextAt == nil || !sc.NextAt.Equal(utc(2, 21, 0)) {
		t.Fatalf("first occurrence %v, want 21:00 UTC", sc.NextAt)
	}
	if next, err := s.NextDeadline(ctx, activation); err != nil || !next.Equal(utc(2, 21, 0).Add(-recur.Lead)) {
		t.Fatalf("NextDeadline = %v, %v; want the occurrence's lead, 20:45", next, err)
	}
	if n := produce(t, s, utc(2, 20, 44)); n != 0 {
		t.Fatalf("produced %d before the lead", n)
	}
	if n := produce(t, s, utc(2, 20, 45)); n != 1 {
		t.Fatalf("produced %d at the lead, want 1", n)
	}
	if n := produce(t, s, utc(2, 20, 46)); n != 0 {
		t.Fatalf("produced the same occurrence again (%d)", n)
	}
	got, err := s.GetSchedule(ctx, sc.ID)
	if err != nil || got.LastRequest == "" || !got.NextAt.Equal(utc(3, 21, 0)) {
		t.Fatalf("schedule after an occurrence: %+v, %v; want a last request and the next day", got, err)
	}
	r := wantState(t, s, got.LastRequest, access.Scheduled)
	if r.Requester != "carol" || !r.StartsAt.Equal(utc(2, 21, 0)) || !r.ExpiresAt.Equal(utc(2, 22, 0)) {
		t.Fatalf("occurrence request: %s from %v to %v; want carol's, 21:00 to 22:00", r.Requester, r.StartsAt, r.ExpiresAt)
	}
	startScheduled(t, s, utc(2, 21, 0))
	wantState(t, s, r.ID, access.Pending)

	// Down from before the 3rd's occurrence to 21:30 on the 5th: the 3rd
	// and 4th are not replayed; the 5th's is in its window: produced late,
	// pending at once, ending at 22:00 still.
	if n := produce(t, s, utc(5, 21, 30)); n != 1 {
		t.Fatalf("after downtime: produced %d, want 1 (the occurrence in its window)", n)
	}
	got, _ = s.GetSchedule(ctx, sc.ID)
	late := wantState(t, s, got.LastRequest, access.Pending)
	if !late.ExpiresAt.Equal(utc(5, 22, 0)) || !got.NextAt.Equal(utc(6, 21, 0)) {
		t.Fatalf("late occurrence ends %v (next %v), want 22:00 on the 5th (next the 6th)", late.ExpiresAt, got.NextAt)
	}
	tr := strings.Join(trail(t, s, store.AuditFilter{Target: "web-1"}), "\n")
	if !strings.Contains(tr, string(audit.ScheduleSkipped)) || !strings.Contains(tr, string(audit.ScheduleCreated)) {
		t.Errorf("trail lacks schedule.created or schedule.skipped:\n%s", tr)
	}

	// carol loses her role: the next occurrence is skipped.
	if err := s.DeleteBinding(ctx, alice, carol, utc(6, 12, 0)); err != nil {
		t.Fatal(err)
	}
	if n := produce(t, s, utc(6, 20, 45)); n != 0 {
		t.Fatalf("produced %d for a principal without a role", n)
	}
	if got, _ = s.GetSchedule(ctx, sc.ID); !got.NextAt.Equal(utc(7, 21, 0)) {
		t.Fatalf("the refused occurrence was not passed over: next %v", got.NextAt)
	}
	if err := s.DeleteSchedule(ctx, alice, sc.ID, utc(7, 12, 0)); err != nil {
		t.Fatal(err)
	}
	wantErrIs(t, "deleting twice", s.DeleteSchedule(ctx, alice, sc.ID, utc(7, 12, 0)), store.ErrNotFound)
	if scs, err := s.ListSchedules(ctx); err != nil || len(scs) != 0 {
		t.Fatalf("schedules after the delete: %v, %v", scs, err)
	}
	if n := produce(t, s, utc(7, 21, 0)); n != 0 {
		t.Fatalf("a deleted schedule produced %d", n)
	}
}
