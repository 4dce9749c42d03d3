package storetest

import (
	"errors"
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

// carolRequester binds user:carol, whose schedules these tests make, as a
// requester everywhere.
var carolRequester = authz.Binding{Principal: "user:carol", Role: authz.Requester, Scope: authz.Everywhere}

// carolsSchedule is the schedule tests' set-up: target web-1, carol a
// requester (carolRequester), and her schedule of 22/tcp on web-1 from
// 198.51.100.7/32, made at t0, that runs at cron in zone for d.
func carolsSchedule(t *testing.T, s *store.Store, cron, zone string, d time.Duration, reason string) store.Schedule {
	t.Helper()
	newTarget(t, s, "web-1", t0)
	if _, err := s.CreateBinding(t.Context(), alice, carolRequester, t0); err != nil {
		t.Fatal(err)
	}
	sc, err := s.CreateSchedule(t.Context(), alice, store.Schedule{Principal: "user:carol", Target: "web-1", Ports: []policy.Port{tcp(22)},
		Source: pfx("198.51.100.7/32"), Cron: cron, TimeZone: zone, Duration: d, Reason: reason}, t0)
	if err != nil {
		t.Fatalf("CreateSchedule(%q in %s): %v", cron, zone, err)
	}
	return sc
}

// utc is a time of January 2026, the schedule tests' month, in UTC.
func utc(d, h, m int) time.Time { return time.Date(2026, 1, d, h, m, 0, 0, time.UTC) }

// produce runs the sweeper's production of recurring occurrences at now.
func produce(t *testing.T, s *store.Store, now time.Time) int {
	t.Helper()
	return sweepStep(t, "ProduceOccurrences", s.ProduceOccurrences, now)
}

// testSchedules (issue 15, item 3): a recurring schedule produces each
// occurrence once, recur.Lead before its start, as an ordinary request of
// its principal (scheduled, started by StartScheduled); after downtime only
// an occurrence still in its window is produced, for what remains; a
// principal that lost its role gets none; a deleted schedule none either.
func testSchedules(t *testing.T, s *store.Store) {
	ctx := t.Context()
	sc := carolsSchedule(t, s, "0 22 * * *", "Europe/Berlin", time.Hour, "nightly batch")
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
	if err := s.DeleteBinding(ctx, alice, carolRequester, utc(6, 12, 0)); err != nil {
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

// testSchedulesAfterRestore: a database put back from a copy made before
// an occurrence was produced holds the schedule with that occurrence
// still to come; the occurrence may have been produced, opened and
// revoked (an incident) after the copy. EndRestored ends every live
// request of the copy; it must also move every schedule past what the
// copy cannot vouch for — each occurrence that could have been produced
// since (start − recur.Lead ≤ now) — or the sweeper would produce the
// occurrence in its window late and open it again right after the
// restore. Occurrences to come after that are produced as usual.
func testSchedulesAfterRestore(t *testing.T, s *store.Store) {
	ctx := t.Context()
	sc := carolsSchedule(t, s, "0 22 * * *", "UTC", 2*time.Hour, "nightly batch")
	// The copy was made at 21:40, before the 22:00 occurrence's lead;
	// it is put back at 22:20, in that occurrence's window.
	if _, err := s.EndRestored(ctx, 1, "database restored", utc(2, 22, 20)); err != nil {
		t.Fatal(err)
	}
	if n := produce(t, s, utc(2, 22, 20)); n != 0 {
		t.Errorf("after the restore: produced %d occurrences, want none (the 22:00 one may have been revoked after the copy)", n)
	}
	startScheduled(t, s, utc(2, 22, 20))
	if g := grants(t, s, "web-1", utc(2, 22, 20)); len(g) != 0 {
		t.Fatalf("grants after the restore = %+v, want none", g)
	}
	got, err := s.GetSchedule(ctx, sc.ID)
	if err != nil || got.NextAt == nil || !got.NextAt.Equal(utc(3, 22, 0)) {
		t.Fatalf("schedule after the restore: %+v, %v; want its next occurrence the next day", got, err)
	}
	if tr := strings.Join(trail(t, s, store.AuditFilter{Target: "web-1"}), "\n"); !strings.Contains(tr, string(audit.ScheduleSkipped)) {
		t.Errorf("the trail does not say the occurrence was skipped:\n%s", tr)
	}
	if n := produce(t, s, utc(3, 21, 45)); n != 1 {
		t.Errorf("the next day: produced %d, want 1", n)
	}

	// The same through an agent that applied a revision the database
	// never reached (a copy put back by hand, with no restore mark).
	newTarget(t, s, "web-2", t0)
	sc2, err := s.CreateSchedule(ctx, alice, store.Schedule{Principal: "user:carol", Target: "web-2", Ports: []policy.Port{tcp(22)},
		Source: pfx("198.51.100.8/32"), Cron: "0 22 * * *", TimeZone: "UTC", Duration: 2 * time.Hour, Reason: "nightly batch"}, utc(3, 21, 40))
	if err != nil {
		t.Fatal(err)
	}
	known := mustTarget(t, s, "web-2").Revision
	if _, _, err := s.AgentAhead(ctx, "web-2", known+10, known, utc(3, 22, 20)); err != nil {
		t.Fatal(err)
	}
	if n := produce(t, s, utc(3, 22, 20)); n != 0 {
		t.Errorf("after an agent ahead: produced %d occurrences, want none", n)
	}
	if got, err := s.GetSchedule(ctx, sc2.ID); err != nil || got.NextAt == nil || !got.NextAt.Equal(utc(4, 22, 0)) {
		t.Fatalf("schedule after an agent ahead: %+v, %v; want its next occurrence the next day", got, err)
	}
}

// testScheduleDeletedBeforeItsOccurrence: an occurrence's request is
// produced recur.Lead before its start; deleting the schedule in between
// (at 21:50 for 22:00: someone left, an incident) must stop that
// occurrence too, not only later ones. DeleteSchedule revokes the
// schedule's requests that have not started (awaiting approval or
// scheduled), audited; they never hold a grant.
func testScheduleDeletedBeforeItsOccurrence(t *testing.T, s *store.Store) {
	ctx := t.Context()
	sc := carolsSchedule(t, s, "0 22 * * *", "UTC", time.Hour, "nightly batch")
	if n := produce(t, s, utc(2, 21, 45)); n != 1 {
		t.Fatalf("produced %d at the lead, want 1", n)
	}
	got, err := s.GetSchedule(ctx, sc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSchedule(ctx, alice, sc.ID, utc(2, 21, 50)); err != nil {
		t.Fatal(err)
	}
	startScheduled(t, s, utc(2, 22, 0))
	if g := grants(t, s, "web-1", utc(2, 22, 0)); len(g) != 0 {
		t.Errorf("grants at 22:00 of a schedule deleted at 21:50 = %+v, want none", g)
	}
	r := wantState(t, s, got.LastRequest, access.Revoked)
	if !strings.Contains(r.Message, sc.ID) {
		t.Errorf("the revoked occurrence says %q, want it to name the deleted schedule", r.Message)
	}
}

// testScheduleOfRemovedTarget: removing a target removes its schedules
// (audited schedule.deleted), so a new host enrolled later under the same
// name — another machine, another owner — does not inherit the old
// target's recurring access once it gets a policy.
func testScheduleOfRemovedTarget(t *testing.T, s *store.Store) {
	ctx := t.Context()
	sc := carolsSchedule(t, s, "0 22 * * *", "UTC", time.Hour, "nightly batch")
	if err := s.RemoveTarget(ctx, alice, "web-1", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	newTarget(t, s, "web-1", at(2*time.Minute)) // another host, same name
	if n := produce(t, s, utc(2, 21, 45)); n != 0 {
		t.Errorf("the new web-1 got %d occurrences of the old one's schedule, want none", n)
	}
	if _, err := s.GetSchedule(ctx, sc.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("schedule of a removed target: %v, want it gone", err)
	}
}

// testOverlappingOccurrences: a schedule whose duration is longer than
// its interval (every 5 minutes for an hour) never holds more than one
// grant of its principal at a time: each started occurrence supersedes
// the one before (same source and port), the deadline being the latest
// start + duration, never a sum.
func testOverlappingOccurrences(t *testing.T, s *store.Store) {
	carolsSchedule(t, s, "*/5 * * * *", "UTC", time.Hour, "overlap")
	for m := time.Duration(0); m <= 30*time.Minute; m += time.Minute {
		now := t0.Add(m)
		produce(t, s, now)
		startScheduled(t, s, now)
		g := grants(t, s, "web-1", now)
		if m >= 5*time.Minute && len(g) != 1 {
			t.Fatalf("+%s: %d grants, want one", m, len(g))
		}
		if len(g) == 1 {
			last := t0.Add(m.Truncate(5 * time.Minute))
			if !g[0].ExpiresAt.Equal(last.Add(time.Hour)) {
				t.Fatalf("+%s: grant until %s, want the latest start + 1h (%s)", m, g[0].ExpiresAt, last.Add(time.Hour))
			}
		}
	}
}
