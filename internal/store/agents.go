package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
)

// Enroll exchanges a one-time enrollment token for a long-lived agent
// credential. The enrollment token is deleted in the same transaction, so it
// works once.
func (s *Store) Enroll(ctx context.Context, enrollSecret string, addresses []string, version, clientAddr string, now time.Time) (target, credential string, err error) {
	p, err := s.Authenticate(ctx, enrollSecret, now)
	if err != nil || p.Kind != KindEnroll {
		return "", "", ErrUnauthorized
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE hash = $1 AND kind = 'enroll'`, hashSecret(enrollSecret))
		if err != nil {
			return fmt.Errorf("consuming enrollment token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrUnauthorized // used concurrently
		}
		// A target has one agent: enrolling again replaces the old credential.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'agent' AND subject = $1`, p.Subject); err != nil {
			return fmt.Errorf("replacing agent credential: %w", err)
		}
		if credential, err = insertToken(ctx, tx, KindAgent, p.Subject, now, 0); err != nil {
			return err
		}
		if err := updateAgentInfo(ctx, tx, p.Subject, addresses, version); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: "agent:" + p.Subject, ClientAddr: clientAddr, Action: audit.AgentEnrolled,
			Target: p.Subject, Details: map[string]any{"addresses": addresses, "version": version}})
	})
	return p.Subject, credential, err
}

func updateAgentInfo(ctx context.Context, tx *sql.Tx, target string, addresses []string, version string) error {
	if addresses != nil {
		b, _ := json.Marshal(addresses)
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET addresses = $1 WHERE name = $2`, string(b), target); err != nil {
			return fmt.Errorf("updating addresses of %s: %w", target, err)
		}
	}
	if version != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET agent_version = $1 WHERE name = $2`, version, target); err != nil {
			return fmt.Errorf("updating agent version of %s: %w", target, err)
		}
	}
	return nil
}

// GrantRow is one live grant of a target.
type GrantRow struct {
	// ID is the grant row's id: the desired state's entries carry it, and a
	// delta names the grants it replaces by it.
	ID int64
	// Target is the target the grant opens (a target behind a gateway, in
	// a gateway's delta).
	Target string
	// Source is the zero Prefix for a bastion-only grant: it opens nothing
	// in the kernel.
	Source    netip.Prefix
	Port      policy.Port
	ExpiresAt time.Time
	// RequestID and Requester say whose grant it is: the bastion relay
	// admits a tunnel only for the grant's own principal.
	RequestID string
	Requester string
}

// DesiredState returns one target's revision, policy (nil: nothing
// protected) and live grants at now, wherever they are enforced. Agents are
// served from Desired, the one read of an enforcer's state in either mode;
// this is the target's own view of it.
//
// The revision is read before the grants, on purpose: any change committed
// between the two reads carries a higher revision.
func (s *Store) DesiredState(ctx context.Context, target string, now time.Time) (int64, *policy.Policy, []GrantRow, error) {
	t, err := s.GetTarget(ctx, target)
	if err != nil {
		return 0, nil, nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+grantColumns+` FROM grants WHERE target = $1 AND expires_at > $2 ORDER BY id`, target, ms(now))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("listing grants of %s: %w", target, err)
	}
	out, err := scanGrants(rows)
	if err != nil {
		return 0, nil, nil, err
	}
	return t.Revision, t.Policy, out, nil
}

const grantColumns = `id, target, source, protocol, port, expires_at, request_id, requester`

// scanGrants reads rows of grantColumns and closes them.
func scanGrants(rows *sql.Rows) ([]GrantRow, error) {
	defer rows.Close()
	var out []GrantRow
	for rows.Next() {
		var (
			g          GrantRow
			src, proto string
			port       int
			exp        int64
		)
		if err := rows.Scan(&g.ID, &g.Target, &src, &proto, &port, &exp, &g.RequestID, &g.Requester); err != nil {
			return nil, fmt.Errorf("reading grant: %w", err)
		}
		var err error
		if g.Source, err = parseSource(src); err != nil {
			return nil, fmt.Errorf("decoding grant source %q: %w", src, err)
		}
		g.Port, g.ExpiresAt = policy.Port{Number: uint16(port), Protocol: policy.Protocol(proto)}, fromMS(exp)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading grants: %w", err)
	}
	return out, nil
}

// ReportApplied records that a target's agent applied revision rev (or
// failed to, when applyErr is set). On success every pending request of the
// target whose revision is at most rev becomes active, and every removal it
// enforces that rev confirms (access.Removal.ConfirmedBy) is recorded
// confirmed; on failure the pending requests fail and their grants leave the
// desired state. It returns the requests it activated.
func (s *Store) ReportApplied(ctx context.Context, target string, rev int64, applyErr string, addresses []string, version string, now time.Time) ([]Request, error) {
	return s.ReportAppliedWith(ctx, target, "", rev, applyErr, addresses, version, now, nil)
}

// ReportAppliedWith is ReportApplied that also records what the agent
// reports besides its revision (RecordAgentReport; nil: nothing), in the
// same transaction: one commit (one fsync) per report instead of two, so
// that the activation a report brings is recorded, and the agent answered,
// one commit sooner.
//
// credential, when not empty, is the id of the agent credential the report
// came with: a report whose credential is no longer the target's (replaced
// by a new enrollment while the report's body was on its way) records
// nothing and fails with ErrUnauthorized. It is checked by the update of the
// target itself (no statement of its own).
func (s *Store) ReportAppliedWith(ctx context.Context, target, credential string, rev int64, applyErr string, addresses []string, version string, now time.Time, report *AgentReport) ([]Request, error) {
	activated, _, err := s.ReportAppliedRevision(ctx, target, credential, rev, applyErr, addresses, version, now, report)
	return activated, err
}

// ReportAppliedRevision is ReportAppliedWith that also returns the target's
// revision as the report's transaction read it (0 when the report itself
// moved it: a failed apply ended requests). The agent's next long-poll,
// carried by the report, waits without reading the target again when
// nothing changed the target since (api.report).
func (s *Store) ReportAppliedRevision(ctx context.Context, target, credential string, rev int64, applyErr string, addresses []string, version string, now time.Time, report *AgentReport) ([]Request, int64, error) {
	var (
		activated []Request
		confirmed []string
		bumped    bool
		current   int64
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		activated, confirmed, bumped, current = nil, nil, false, 0
		if report != nil {
			if err := s.recordAgentReport(ctx, tx, target, *report, now); err != nil {
				return err
			}
		}
		var prevErr string
		if applyErr != "" {
			// The error the agent reported before: a failure is audited
			// when it changes.
			if err := tx.QueryRowContext(ctx, `SELECT agent_error FROM targets WHERE name = $1`, target).Scan(&prevErr); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("reading target %s: %w", target, err)
			}
		}
		// The update of the target (reportUpdate) returns its revision.
		args := make([]any, 4, 7)
		args[0], args[1], args[2], args[3] = rev, applyErr, ms(now), target
		// The agent's addresses and version, which it sends with every
		// report, in the same statement (updateAgentInfo's two updates of
		// the same row before: two statements more on every report).
		if addresses != nil {
			b, _ := json.Marshal(addresses)
			args = append(args, string(b))
		}
		if version != "" {
			args = append(args, version)
		}
		if credential != "" {
			args = append(args, credential)
		}
		var removals bool
		err := tx.QueryRowContext(ctx, reportUpdates[b2i(addresses != nil)][b2i(version != "")][b2i(credential != "")], args...).Scan(&current, &removals)
		if errors.Is(err, sql.ErrNoRows) {
			live := true
			err = tx.QueryRowContext(ctx, `SELECT revision, EXISTS (SELECT 1 FROM tokens WHERE id = $2 AND kind = 'agent' AND subject = $1) FROM targets WHERE name = $1`,
				target, credential).Scan(&current, &live)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("target %q: %w", target, ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("reading target %s: %w", target, err)
			}
			if credential != "" && !live {
				return fmt.Errorf("the agent credential of %s was replaced or revoked: %w", target, ErrUnauthorized)
			}
			return fmt.Errorf("revision %d of %s is newer than the server's %d: %w", rev, target, current, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("recording applied revision: %w", err)
		}
		agent := Actor{Name: "agent:" + target}
		if applyErr != "" {
			if applyErr != prevErr {
				if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: agent.Name, Action: audit.AgentApplyFailed, Target: target,
					Reason: applyErr, Details: map[string]any{"revision": rev}}); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE (target = $1 OR target IN (SELECT name FROM targets WHERE gateway = $1)) AND state = `+statePending+` AND revision <= $2`, target, rev).Scan(&n); err != nil {
				return fmt.Errorf("counting pending requests: %w", err)
			}
			if n == 0 {
				return nil
			}
			if err := s.endLiveRequests(ctx, tx, `(target = $1 OR target IN (SELECT name FROM targets WHERE gateway = $1)) AND state = `+statePending+` AND revision <= $2`, []any{target, rev},
				access.Fail, "the agent could not apply the grant: "+applyErr, agent, audit.RequestFailed, now); err != nil {
				return err
			}
			// endLiveRequests took their grants out of the desired state and
			// advanced the revision.
			bumped = true
			return nil
		}
		// The pending requests this revision carries, activated in one
		// statement that returns them.
		acts, err := transitionAll(ctx, tx, pendingToActivate, []any{target, rev}, access.Pending, access.Activate, set{"activated_at", ms(now)})
		if err != nil {
			return fmt.Errorf("activating requests: %w", err)
		}
		for _, r := range acts {
			if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: agent.Name, Action: audit.RequestActivated, Target: r.Target, RequestID: r.ID,
				Details: map[string]any{"revision": rev, "latency_ms": ms(now) - ms(r.CreatedAt)}}); err != nil {
				return err
			}
		}
		activated = acts
		if !removals {
			return nil
		}
		confirmed, err = confirmRemovals(ctx, tx, target, rev, now)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if bumped {
		current = 0 // moved by the report: unknown here
		s.changed(target)
	}
	if len(confirmed) > 0 {
		// Wake clients following the requests and targets whose removal
		// was just confirmed.
		s.feed.publish(confirmed...)
	}
	// The requests as their activation left them (returned by it: no read
	// after the commit), with the approvals of those that had approvers.
	for i, r := range activated {
		if r.ApprovalsRequired > 0 {
			if activated[i], err = s.GetRequest(ctx, r.ID); err != nil {
				return nil, 0, err
			}
		}
	}
	return activated, current, nil
}

// reportUpdates is ReportAppliedRevision's update of the target, by
// whether the report sets the agent's addresses, its version, and checks a
// credential: built once, not on every report (it was most of a report's
// allocations outside the driver).
var reportUpdates = func() (u [2][2][2]string) {
	for _, addresses := range []bool{false, true} {
		for _, version := range []bool{false, true} {
			for _, credential := range []bool{false, true} {
				u[b2i(addresses)][b2i(version)][b2i(credential)] = reportUpdate(addresses, version, credential)
			}
		}
	}
	return u
}()

// reportUpdate is the update of the target that records a report: $1 the
// revision, $2 the apply's error, $3 the time, $4 the target, then, each
// when set, the addresses (JSON), the version and the credential's id.
//
// A failed apply leaves the kernel at the last revision that worked, so
// only a success moves applied_revision. The update returns the server's
// revision (no read before it): a report of a newer one fails, and the
// failure undoes the update with the rest of the operation (its savepoint,
// or its transaction). It also says whether any removal this enforcer's
// agent confirms is waiting (unconfirmedRemovals), so that the read of
// them (confirmRemovals) is made only when there are some: on most
// reports, none (one statement fewer on every report).
func reportUpdate(addresses, version, credential bool) string {
	update := `UPDATE targets SET applied_revision = CASE WHEN applied_revision > $1 OR $2 <> '' THEN applied_revision ELSE $1 END,
			agent_error = $2, agent_seen_at = $3`
	n := 4
	if addresses {
		n++
		update += fmt.Sprintf(`, addresses = $%d`, n)
	}
	if version {
		n++
		update += fmt.Sprintf(`, agent_version = $%d`, n)
	}
	update += ` WHERE name = $4 AND revision >= $1`
	if credential {
		n++
		update += fmt.Sprintf(` AND EXISTS (SELECT 1 FROM tokens WHERE id = $%d AND kind = 'agent' AND subject = $4)`, n)
	}
	return update + ` RETURNING revision, ` + unconfirmedRemovals("$4")
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SetAgentState records that a target's agent connected or disconnected;
// a change of state is audited.
func (s *Store) SetAgentState(ctx context.Context, target, state, clientAddr string, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var prev string
		err := tx.QueryRowContext(ctx, `SELECT agent_state FROM targets WHERE name = $1`, target).Scan(&prev)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", target, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading agent state of %s: %w", target, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET agent_state = $1, agent_seen_at = $2 WHERE name = $3`, state, ms(now), target); err != nil {
			return fmt.Errorf("recording agent state of %s: %w", target, err)
		}
		if prev == state {
			return nil
		}
		action := audit.AgentConnected
		if state == AgentDisconnected {
			action = audit.AgentDisconnected
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: "agent:" + target, ClientAddr: clientAddr, Action: action, Target: target})
	})
}

// pendingToActivate selects the pending requests a report of revision $2 by
// the agent of target $1 activates: two reads on the index
// requests_pending_target (migration 0032), the target's own pending
// requests and those of the targets behind it (CROSS JOIN: SQLite walks
// the targets first, by their gateway). (One read with an OR passed
// over every pending request of every target: under load, with a backlog,
// most of a report's cost.)
var pendingToActivate = `SELECT id FROM requests WHERE target = $1 AND state = ` + statePending + ` AND revision <= $2
	UNION ALL SELECT r.id FROM targets t CROSS JOIN requests r
	WHERE t.gateway = $1 AND r.target = t.name AND r.state = ` + statePending + ` AND r.revision <= $2`

// sweepBatch bounds the requests one sweep transaction ends. A sweep with
// more to do commits in several transactions; each is queued behind the
// writes that arrived meanwhile (group commit, groupcommit.go), so a burst
// of expiries delays a request by one bounded transaction, not by all of
// them.
const sweepBatch = 64

// Sweep ends what time has ended at now: active requests past their
// deadline expire; pending requests past their deadline, or not confirmed by
// the agent within activationTimeout, fail. It returns the earliest future
// instant at which a sweep will have work (zero when there is none), so the
// caller can sleep until then. It ends at most sweepBatch requests per
// transaction and yields to other writers between them.
func (s *Store) Sweep(ctx context.Context, now time.Time, activationTimeout time.Duration) (time.Time, error) {
	for {
		more, err := s.sweepSome(ctx, now, activationTimeout)
		if err != nil {
			return time.Time{}, fmt.Errorf("sweeping: %w", err)
		}
		if !more {
			break
		}
		if err := ctx.Err(); err != nil {
			return time.Time{}, fmt.Errorf("sweeping: %w", err)
		}
	}
	return s.NextDeadline(ctx, activationTimeout)
}

// sweepSome is one bounded transaction of Sweep; more says it stopped at
// sweepBatch requests and there may be more.
func (s *Store) sweepSome(ctx context.Context, now time.Time, activationTimeout time.Duration) (more bool, err error) {
	var changed []string
	err = s.tx(ctx, func(tx *sql.Tx) error {
		changed, more = nil, false // the function may run again (group commit)
		sys := Actor{Name: audit.System}
		budget := sweepBatch
		for _, step := range []struct {
			where   string
			message string
			action  audit.Action
		}{
			{`state = ` + stateActive + ` AND expires_at <= $1`, "", audit.RequestExpired},
			{`state = ` + stateAwaiting + ` AND approve_by <= $1`, "not approved in time", audit.RequestExpired},
			{`state = ` + statePending + ` AND expires_at <= $1`, "the grant ran out before the target's agent confirmed it", audit.RequestFailed},
		} {
			n, err := s.endSomeLiveRequests(ctx, tx, step.where, []any{ms(now)}, budget, access.Expire, step.message, sys, step.action, now)
			if err != nil {
				return err
			}
			if budget -= n; budget == 0 {
				more = true
				return nil
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT r.id, r.target, t.agent_state FROM requests r JOIN targets t ON t.name = r.target
			WHERE r.state = `+statePending+` AND r.created_at <= $1 ORDER BY r.created_at, r.id LIMIT `+fmt.Sprint(budget), ms(now.Add(-activationTimeout)))
		if err != nil {
			return fmt.Errorf("selecting unconfirmed requests: %w", err)
		}
		type late struct{ id, target, agent string }
		var ls []late
		for rows.Next() {
			var l late
			if err := rows.Scan(&l.id, &l.target, &l.agent); err != nil {
				rows.Close()
				return fmt.Errorf("reading unconfirmed request: %w", err)
			}
			ls = append(ls, l)
		}
		rows.Close()
		for _, l := range ls {
			msg := fmt.Sprintf("the agent of target %s did not confirm the grant within %s (agent %s); nothing was opened", l.target, activationTimeout, l.agent)
			// endLiveRequests takes the grant out of the desired state
			// (advancing the revision), so a returning agent does not open it.
			if err := s.endLiveRequests(ctx, tx, `id = $1`, []any{l.id}, access.Fail, msg, sys, audit.RequestFailed, now); err != nil {
				return err
			}
			changed = append(changed, l.target)
		}
		if budget -= len(ls); budget == 0 {
			more = true
			return nil
		}
		if err := s.warnExpiring(ctx, tx, s.expiryLead(), now); err != nil {
			return err
		}
		// Grants of ended requests were deleted with them; any other grant
		// past its deadline is dead weight.
		_, err = tx.ExecContext(ctx, `DELETE FROM grants WHERE expires_at <= $1`, ms(now))
		return err
	})
	if err != nil {
		return false, err
	}
	if len(changed) > 0 {
		s.changed(changed...)
	}
	return more, nil
}

// NextDeadline is the earliest instant at which Sweep, StartScheduled or
// ProduceOccurrences will have work (zero when there is none): a deadline,
// an approval or activation timeout, an expiry warning, a scheduled start,
// a recurring schedule's next occurrence (recur.Lead before it). It only
// reads.
//
// Except for the expiry warning (NextExpiryWarning), its cost does not grow
// with the number of live requests: every minimum is the first entry of the
// index requests_state (state, expires_at) for one state, or a scan of the
// few requests awaiting approval, their start or activation. (Before, one
// min() over every live request read them all: with 100,000 live grants it
// was a third of the server's CPU under load, as the sweeper calls it after
// every change.) A sweeper woken by every change calls
// NextDeadlineExceptWarnings instead, and reads the warning on a period.
func (s *Store) NextDeadline(ctx context.Context, activationTimeout time.Duration) (time.Time, error) {
	next, err := s.NextDeadlineExceptWarnings(ctx, activationTimeout)
	if err != nil {
		return time.Time{}, err
	}
	warn, err := s.NextExpiryWarning(ctx)
	if err != nil {
		return time.Time{}, err
	}
	return earliest(next, warn), nil
}

// earliest is the earlier of two instants, zero standing for none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// NextDeadlineExceptWarnings is NextDeadline without the next expiry
// warning (NextExpiryWarning). The warning's read is the one that is not
// bounded by an index minimum: it passes over every active request too short
// to be warned that expires before the first one that is (with 10-minute
// grants and the 10-minute default lead, every grant made by a busy server),
// so a sweeper woken by every change reads it on a period instead
// (server.sweepLoop): a warning is an announcement minutes ahead, and a few
// seconds late is harmless.
func (s *Store) NextDeadlineExceptWarnings(ctx context.Context, activationTimeout time.Duration) (time.Time, error) {
	var next1, next2 sql.NullInt64
	var parts []string
	for _, st := range access.LiveStates() {
		switch st {
		case access.PendingApproval:
			parts = append(parts, `SELECT min(approve_by) AS at FROM requests WHERE state = `+stateLit(st))
		case access.Scheduled:
			parts = append(parts, `SELECT min(starts_at) AS at FROM requests WHERE state = `+stateLit(st))
		default:
			parts = append(parts, `SELECT (SELECT expires_at FROM requests WHERE state = `+stateLit(st)+
				` AND expires_at IS NOT NULL ORDER BY state, expires_at LIMIT 1) AS at`)
		}
	}
	if err := s.db.QueryRowContext(ctx, `SELECT min(at) FROM (`+strings.Join(parts, " UNION ALL ")+`) AS live`).Scan(&next1); err != nil {
		return time.Time{}, fmt.Errorf("finding next deadline: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT min(created_at) FROM requests WHERE state = `+statePending).Scan(&next2); err != nil {
		return time.Time{}, fmt.Errorf("finding next activation deadline: %w", err)
	}
	var next time.Time
	if next1.Valid {
		next = fromMS(next1.Int64)
	}
	if next2.Valid {
		if t := fromMS(next2.Int64).Add(activationTimeout); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	occ, err := s.nextOccurrence(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if !occ.IsZero() && (next.IsZero() || occ.Before(next)) {
		next = occ
	}
	return next, nil
}

// CountRequests counts requests in a state.
func (s *Store) CountRequests(ctx context.Context, state access.State) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE state = $1`, string(state)).Scan(&n)
	return n, err
}

// TargetsWithAgentState lists the targets whose agent is recorded in state.
func (s *Store) TargetsWithAgentState(ctx context.Context, state string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM targets WHERE agent_state = $1 ORDER BY name`, state)
	if err != nil {
		return nil, fmt.Errorf("listing targets by agent state: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// unconfirmedRemovals is an SQL condition: a removal enforced by the
// target named by the parameter enforcer waits for its agent's
// confirmation (what confirmRemovals reads), served by the indexes
// requests_removal_unconfirmed and targets_gateway.
func unconfirmedRemovals(enforcer string) string {
	return `(EXISTS (SELECT 1 FROM requests WHERE removal_enforcer = ` + enforcer + ` AND removal_revision > 0 AND removal_confirmed_at IS NULL)
		OR EXISTS (SELECT 1 FROM targets WHERE ((name = ` + enforcer + ` AND gateway = '') OR gateway = ` + enforcer + `)
		AND policy_removed_revision > 0 AND policy_removal_confirmed_at IS NULL))`
}

// confirmRemovals records as confirmed, inside the caller's transaction,
// the removals enforced by enforcer's agent that its report of revision rev
// confirms: revoked (or denied, or failed) requests' grants, and removed
// policies of the enforcer and the targets behind it. It returns the
// targets whose requests or policy changed.
func confirmRemovals(ctx context.Context, tx *sql.Tx, enforcer string, rev int64, now time.Time) ([]string, error) {
	// The requests and the targets whose removal waits for this enforcer,
	// in one read (two before: one statement fewer on every report).
	rows, err := tx.QueryContext(ctx, `SELECT 0, id, target, removal_revision FROM requests
		WHERE removal_enforcer = $1 AND removal_revision > 0 AND removal_confirmed_at IS NULL
		UNION ALL SELECT 1, '', name, policy_removed_revision FROM targets
		WHERE ((name = $1 AND gateway = '') OR gateway = $1) AND policy_removed_revision > 0 AND policy_removal_confirmed_at IS NULL`, enforcer)
	if err != nil {
		return nil, fmt.Errorf("selecting unconfirmed removals: %w", err)
	}
	type pending struct {
		id, target string
		rev        int64
	}
	var reqs, pols []pending
	for rows.Next() {
		var (
			p    pending
			kind int
		)
		if err := rows.Scan(&kind, &p.id, &p.target, &p.rev); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading unconfirmed removal: %w", err)
		}
		if kind == 0 {
			reqs = append(reqs, p)
		} else {
			pols = append(pols, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var changed []string
	for _, p := range reqs {
		if !(access.Removal{Revision: p.rev, Confirmable: true}).ConfirmedBy(rev) {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE requests SET removal_confirmed_at = $1, version = version + 1 WHERE id = $2`, ms(now), p.id); err != nil {
			return nil, fmt.Errorf("confirming the removal of %s: %w", p.id, err)
		}
		touchRequest(tx, p.id)
		changed = append(changed, p.target)
	}

	for _, p := range pols {
		if !(access.Removal{Revision: p.rev, Confirmable: true}).ConfirmedBy(rev) {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET policy_removal_confirmed_at = $1 WHERE name = $2`, ms(now), p.target); err != nil {
			return nil, fmt.Errorf("confirming the policy removal of %s: %w", p.target, err)
		}
		changed = append(changed, p.target)
	}
	return changed, nil
}

// UnconfirmedRemovals counts, at now, the requests whose grants left the
// desired state but whose agent has not confirmed it yet and whose kernel
// deadline has not passed (they may still be open), and the targets whose
// policy removal is not confirmed yet (their ports may still be closed).
func (s *Store) UnconfirmedRemovals(ctx context.Context, now time.Time) (requests, policies int, err error) {
	// The deadline condition only narrows the scan (removals of removed
	// targets are never confirmed and would pile up); the domain decides.
	rows, err := s.db.QueryContext(ctx, `SELECT removal_revision, removal_enforcer, removal_at, expires_at FROM requests
		WHERE removal_revision > 0 AND removal_confirmed_at IS NULL AND expires_at > $1`, ms(now))
	if err != nil {
		return 0, 0, fmt.Errorf("counting unconfirmed removals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r            access.Removal
			enforcer     string
			at, deadline int64
		)
		if err := rows.Scan(&r.Revision, &enforcer, &at, &deadline); err != nil {
			return 0, 0, fmt.Errorf("reading unconfirmed removal: %w", err)
		}
		r.At, r.Deadline, r.Confirmable = fromMS(at), fromMS(deadline), enforcer != ""
		if r.State(now) == access.RemovalUnconfirmed {
			requests++
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	err = s.db.QueryRowContext(ctx, `SELECT count(*) FROM targets WHERE policy_removed_revision > 0 AND policy_removal_confirmed_at IS NULL`).Scan(&policies)
	if err != nil {
		return 0, 0, fmt.Errorf("counting unconfirmed policy removals: %w", err)
	}
	return requests, policies, nil
}

// AgentCredentialLive reports whether the agent credential tokenID is still
// target's: it is replaced when the target enrolls again and deleted with
// the target. A long-poll checks it before answering after its wait (the
// credential was checked when the call began, up to a poll's wait earlier).
func (s *Store) AgentCredentialLive(ctx context.Context, tokenID, target string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(s.pointCtx(ctx), `SELECT count(*) FROM tokens WHERE id = $1 AND kind = 'agent' AND subject = $2`, tokenID, target).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("checking the agent credential of %s: %w", target, err)
	}
	return n > 0, nil
}

// AgentTarget is the target of agent credential tokenID as an answer to
// its long-poll needs it, and whether that credential is still the
// target's, in one read (one committed state). A long-poll answering after
// its wait reads both (they were two statements per answer).
//
// The target has only what an answer to its agent is made of: its name,
// revision, mode, policy and creation time (the delta, the snapshot and the
// break-glass revocations read nothing else of it); the other fields are
// left zero. It is read on every agent exchange, and each column a
// statement returns costs the driver a name and a declared type per
// execution (modernc.org/sqlite's newRows): the 19 columns of GetTarget,
// with the labels' and addresses' decoding, were most of the read's cost
// (docs/benchmarks.md §37).
func (s *Store) AgentTarget(ctx context.Context, name, tokenID string) (Target, bool, error) {
	var r agentTargetRow
	err := s.db.QueryRowContext(s.pointCtx(ctx), `SELECT `+agentTargetColumns+` FROM targets t WHERE t.name = $1`, name, tokenID).
		Scan(r.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return Target{}, false, fmt.Errorf("target %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Target{}, false, fmt.Errorf("reading target %s: %w", name, err)
	}
	t, err := r.target()
	return t, r.live, err
}

// agentTargetColumns are what AgentTarget and AgentTargetChanges read of
// target t ($1 its name) and of agent credential $2: agentTargetRow's.
const agentTargetColumns = `t.name, t.policy, t.revision, t.mode, t.created_at,
	EXISTS (SELECT 1 FROM tokens WHERE id = $2 AND kind = 'agent' AND subject = $1)`

// agentTargetRow is a row of agentTargetColumns.
type agentTargetRow struct {
	t       Target
	pol     sql.NullString
	created int64
	live    bool
}

// dest is what a row of agentTargetColumns scans into.
func (r *agentTargetRow) dest() []any {
	return []any{&r.t.Name, &r.pol, &r.t.Revision, &r.t.Mode, &r.created, &r.live}
}

// target is the Target the row tells (its policy decoded through its memo).
func (r *agentTargetRow) target() (Target, error) {
	t := r.t
	if r.pol.Valid {
		var err error
		if t.Policy, err = decodePolicy(t.Name, r.pol.String); err != nil {
			return Target{}, err
		}
	}
	t.CreatedAt = fromMS(r.created)
	return t, nil
}
