package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/recur"
)

// Schedule is a recurring access schedule as stored: Principal (user:NAME
// or service:NAME) gets Ports of Target from Source for Duration at every
// occurrence of Cron in TimeZone, each occurrence an ordinary request.
type Schedule struct {
	ID        string
	Principal string
	Target    string
	Ports     []policy.Port
	Source    netip.Prefix
	Cron      string
	TimeZone  string
	Duration  time.Duration
	Reason    string
	CreatedBy string
	CreatedAt time.Time
	// NextAt is the start of the next occurrence not produced yet (nil:
	// none ever again).
	NextAt *time.Time
	// LastRequest is the request of the last occurrence produced.
	LastRequest string
}

// Requester is how the principal appears as a request's requester: the
// user's name, or "service:NAME" (store.Principal.Name).
func (sc Schedule) Requester() string {
	if name, ok := strings.CutPrefix(sc.Principal, "user:"); ok {
		return name
	}
	return sc.Principal
}

const scheduleColumns = `id, principal, target, ports, source, cron, timezone, duration_ms, reason, created_by, created_at, next_at, last_request`

func scanSchedule(r scanner) (Schedule, error) {
	var (
		sc           Schedule
		ports, src   string
		durMS, creat int64
		next         sql.NullInt64
	)
	if err := r.Scan(&sc.ID, &sc.Principal, &sc.Target, &ports, &src, &sc.Cron, &sc.TimeZone, &durMS, &sc.Reason, &sc.CreatedBy, &creat, &next, &sc.LastRequest); err != nil {
		return Schedule{}, err
	}
	var err error
	if sc.Ports, err = decodePorts(ports); err != nil {
		return Schedule{}, fmt.Errorf("decoding ports of schedule %s: %w", sc.ID, err)
	}
	if sc.Source, err = parseSource(src); err != nil {
		return Schedule{}, fmt.Errorf("decoding source of schedule %s: %w", sc.ID, err)
	}
	sc.Duration, sc.CreatedAt, sc.NextAt = time.Duration(durMS)*time.Millisecond, fromMS(creat), fromNullMS(next)
	return sc, nil
}

// CreateSchedule records sc (its ID, CreatedBy, CreatedAt and NextAt are
// set here: NextAt is the recurrence's first occurrence after now) and
// audits it. The caller has checked the input and the caller's right.
func (s *Store) CreateSchedule(ctx context.Context, actor Actor, sc Schedule, now time.Time) (Schedule, error) {
	r, err := recur.Parse(sc.Cron, sc.TimeZone)
	if err != nil {
		return Schedule{}, err
	}
	first, err := r.First(now)
	if err != nil {
		return Schedule{}, err
	}
	sc.ID, sc.CreatedBy, sc.CreatedAt, sc.NextAt = random.ID("s-", 10), actor.Name, now.UTC(), &first
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO schedules (`+scheduleColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, '')`,
			sc.ID, sc.Principal, sc.Target, encodePorts(sc.Ports), sourceString(sc.Source), sc.Cron, sc.TimeZone, sc.Duration.Milliseconds(),
			sc.Reason, sc.CreatedBy, ms(now), ms(first)); err != nil {
			return fmt.Errorf("inserting schedule: %w", err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.ScheduleCreated,
			Target: sc.Target, Reason: sc.Reason, Details: map[string]any{"schedule": sc.ID, "principal": sc.Principal, "ports": encodePorts(sc.Ports),
				"source": sourceString(sc.Source), "cron": sc.Cron, "timezone": sc.TimeZone, "duration": sc.Duration.String(), "next_at": first.Format(time.RFC3339)}})
	})
	if err != nil {
		return Schedule{}, err
	}
	// Wakes the sweeper, which produces the occurrences (NextDeadline).
	s.changed(sc.Target)
	return sc, nil
}

// GetSchedule returns one schedule.
func (s *Store) GetSchedule(ctx context.Context, id string) (Schedule, error) {
	sc, err := scanSchedule(s.db.QueryRowContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Schedule{}, fmt.Errorf("schedule %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Schedule{}, fmt.Errorf("reading schedule %s: %w", id, err)
	}
	return sc, nil
}

// ListSchedules returns every schedule, by target and id.
func (s *Store) ListSchedules(ctx context.Context) ([]Schedule, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+scheduleColumns+` FROM schedules ORDER BY target, id`)
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", err)
	}
	defer rows.Close()
	var out []Schedule
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			return nil, fmt.Errorf("reading schedule: %w", err)
		}
		out = append(out, sc)
	}
	return out, rows.Err()
}

// DeleteSchedule removes a schedule: no occurrence is produced after it,
// and, in the same transaction, the occurrences it produced that have not
// started (awaiting approval or scheduled: produced recur.Lead ahead) are
// revoked, audited, so none opens after the deletion. Occurrences that
// already started are ordinary requests (revoke them to end them).
func (s *Store) DeleteSchedule(ctx context.Context, actor Actor, id string, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.endLiveRequests(ctx, tx, `schedule_id = $1 AND state IN (`+inStates(access.PendingApproval, access.Scheduled)+`)`, []any{id},
			access.Revoke, "schedule "+id+" was deleted before this occurrence started; nothing was opened", actor, audit.RequestRevoked, now); err != nil {
			return err
		}
		var target string
		err := tx.QueryRowContext(ctx, `DELETE FROM schedules WHERE id = $1 RETURNING target`, id).Scan(&target)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("schedule %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("deleting schedule %s: %w", id, err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.ScheduleDeleted,
			Target: target, Details: map[string]any{"schedule": id}})
	})
}

// nextOccurrence is when ProduceOccurrences next has work (zero: never).
func (s *Store) nextOccurrence(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT min(next_at) FROM schedules`).Scan(&next); err != nil {
		return time.Time{}, fmt.Errorf("finding the next occurrence: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return fromMS(next.Int64).Add(-recur.Lead), nil
}

// ProduceOccurrences creates the requests of every schedule's occurrences
// due at now (recur.Due: recur.Lead before their start), each an ordinary
// audited request of the schedule's principal with the occurrence's start:
// scheduled until then (its roles and the policy are checked again at the
// start), awaiting approvers when its rules ask for them. An occurrence
// whose window passed while no server ran is skipped, not replayed; one in
// its window is produced late, for what remains. A principal without the
// requester role on the target, or a request the policy refuses, skips that
// occurrence (audited schedule.skipped or request.refused). Each
// occurrence is one transaction that also advances the schedule (compare-
// and-set on next_at), so none is produced twice. It returns how many
// requests it created.
func (s *Store) ProduceOccurrences(ctx context.Context, limits policy.Limits, now time.Time) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM schedules WHERE next_at <= $1 ORDER BY next_at, id`, ms(now.Add(recur.Lead)))
	if err != nil {
		return 0, fmt.Errorf("selecting due schedules: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("reading due schedule: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("selecting due schedules: %w", err)
	}
	n := 0
	for _, id := range ids {
		// Each step advances next_at, so the loop ends; the bound is a
		// guard against a recurrence that would not move.
		for range 1000 {
			made, more, err := s.produceOne(ctx, id, limits, now)
			if err != nil {
				return n, err
			}
			if made {
				n++
			}
			if !more {
				break
			}
		}
	}
	return n, nil
}

// produceOne takes one step of schedule id at now; more says another may
// be due.
func (s *Store) produceOne(ctx context.Context, id string, limits policy.Limits, now time.Time) (made, more bool, err error) {
	var (
		target string
		wake   bool
		last   error // a refusal of the occurrence's request, to record after the rollback
		step   recur.Step
		sc     Schedule
	)
	advance := func(tx *sql.Tx, requestID string) error {
		var next any
		if !step.Next.IsZero() {
			next = ms(step.Next)
		}
		q, args := `UPDATE schedules SET next_at = $1 WHERE id = $2 AND next_at = $3`, []any{next, sc.ID, ms(*sc.NextAt)}
		if requestID != "" {
			q, args = `UPDATE schedules SET next_at = $1, last_request = $4 WHERE id = $2 AND next_at = $3`, append(args, requestID)
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("advancing schedule %s: %w", sc.ID, err)
		}
		if k, err := res.RowsAffected(); err != nil || k != 1 {
			return fmt.Errorf("schedule %s moved meanwhile: %w", sc.ID, ErrStale)
		}
		return nil
	}
	skipAudit := func(tx *sql.Tx, why string) error {
		d := map[string]any{"schedule": sc.ID, "principal": sc.Principal, "why": why}
		if step.Skipped {
			d["skipped_from"] = step.SkippedFrom.Format(time.RFC3339)
		}
		if !step.Start.IsZero() {
			d["occurrence"] = step.Start.Format(time.RFC3339)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.ScheduleSkipped, Target: sc.Target, Details: d})
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		made, more, wake, last = false, false, false, nil
		var err error
		sc, err = scanSchedule(tx.QueryRowContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("reading schedule %s: %w", id, err)
		}
		target = sc.Target
		if sc.NextAt == nil {
			return nil
		}
		r, err := recur.Parse(sc.Cron, sc.TimeZone)
		if err != nil {
			// Checked at creation; a time zone database that lost the
			// zone stops the schedule rather than guessing.
			step = recur.Step{}
			if err := advance(tx, ""); err != nil {
				return err
			}
			return skipAudit(tx, "the schedule no longer parses: "+err.Error())
		}
		step = recur.Due(r, *sc.NextAt, now, sc.Duration)
		if !step.Produce {
			if !step.Skipped {
				return nil
			}
			if err := advance(tx, ""); err != nil {
				return err
			}
			more = true
			return skipAudit(tx, "its window passed while no server ran; not replayed")
		}
		more = true
		if step.Skipped {
			if err := skipAudit(tx, "earlier occurrences' windows passed while no server ran; not replayed"); err != nil {
				return err
			}
		}
		why, err := occurrenceRefusal(ctx, tx, sc)
		if err != nil {
			return err
		}
		if why != "" {
			if err := advance(tx, ""); err != nil {
				return err
			}
			return skipAudit(tx, why)
		}
		sub := authz.Subject{Principals: []string{sc.Principal}}
		req := policy.Request{Ports: sc.Ports, Source: sc.Source, Duration: sc.Duration, Reason: sc.Reason}
		occ, granted, refusal, err := s.createRequestTx(ctx, tx, Actor{Name: sc.Requester()}, sc.Target, req, limits, now,
			RequestOptions{Start: step.Start, Subject: sub, Schedule: sc.ID})
		if err != nil {
			var le *policy.LimitError
			if errors.As(err, &le) {
				last = err
			}
			return err
		}
		if refusal != nil {
			// request.refused is audited with it.
			return advance(tx, "")
		}
		made, wake = true, granted != nil
		return advance(tx, occ.ID)
	})
	if last != nil {
		// Over a cap on live requests: that occurrence is skipped.
		wake = false
		err = s.tx(ctx, func(tx *sql.Tx) error {
			if err := advance(tx, ""); err != nil {
				return err
			}
			return skipAudit(tx, last.Error())
		})
		made, more = false, true
	}
	if err != nil {
		return false, false, fmt.Errorf("producing an occurrence of schedule %s: %w", id, err)
	}
	if wake {
		s.changed(target)
	}
	return made, more, nil
}

// occurrenceRefusal says why a schedule's occurrence may not be asked for
// now ("" when it may): its target is gone, or its principal holds no role
// that allows request.create there. The policy decides the request itself.
func occurrenceRefusal(ctx context.Context, tx *sql.Tx, sc Schedule) (string, error) {
	t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, sc.Target))
	if errors.Is(err, sql.ErrNoRows) {
		return "target " + sc.Target + " no longer exists", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading target %s: %w", sc.Target, err)
	}
	bs, err := listBindings(ctx, tx)
	if err != nil {
		return "", err
	}
	if !authz.Allowed(bs, authz.Subject{Principals: []string{sc.Principal}}, authz.CreateRequest, &authz.Target{Name: t.Name, Labels: t.Labels}) {
		return fmt.Sprintf("%s holds no role that allows %s on target %s", sc.Principal, authz.CreateRequest, t.Name), nil
	}
	return "", nil
}

// deleteSchedulesOf removes the schedules of a target being removed, each
// audited schedule.deleted (its live requests are ended by the removal).
func (s *Store) deleteSchedulesOf(ctx context.Context, tx *sql.Tx, target string, actor Actor, now time.Time) error {
	rows, err := tx.QueryContext(ctx, `DELETE FROM schedules WHERE target = $1 RETURNING id, principal`, target)
	if err != nil {
		return fmt.Errorf("deleting the schedules of %s: %w", target, err)
	}
	type gone struct{ id, principal string }
	var gs []gone
	for rows.Next() {
		var g gone
		if err := rows.Scan(&g.id, &g.principal); err != nil {
			rows.Close()
			return fmt.Errorf("reading a deleted schedule of %s: %w", target, err)
		}
		gs = append(gs, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("deleting the schedules of %s: %w", target, err)
	}
	for _, g := range gs {
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.ScheduleDeleted,
			Target: target, Reason: "target removed", Details: map[string]any{"schedule": g.id, "principal": g.principal}}); err != nil {
			return err
		}
	}
	return nil
}
