package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/random"
)

// The kinds of break-glass alert.
const (
	BreakGlassOnline  = "online"
	BreakGlassOffline = "offline"
)

// BreakGlassAlert is one break-glass opening, open until reviewed.
type BreakGlassAlert struct {
	ID         string
	At         time.Time
	Kind       string // BreakGlassOnline | BreakGlassOffline
	Actor      string
	Target     string
	RequestID  string
	TokenID    string
	Source     string
	Ports      string
	Duration   time.Duration
	Reason     string
	ReviewedAt *time.Time
	ReviewedBy string
	ReviewNote string
}

const alertColumns = `id, at, kind, actor, target, request_id, token_id, source, ports, duration_ms, reason, reviewed_at, reviewed_by, review_note`

func scanAlert(r scanner) (BreakGlassAlert, error) {
	var (
		a        BreakGlassAlert
		at, dur  int64
		reviewed sql.NullInt64
	)
	if err := r.Scan(&a.ID, &at, &a.Kind, &a.Actor, &a.Target, &a.RequestID, &a.TokenID, &a.Source, &a.Ports, &dur, &a.Reason,
		&reviewed, &a.ReviewedBy, &a.ReviewNote); err != nil {
		return BreakGlassAlert{}, err
	}
	a.At, a.Duration = fromMS(at), time.Duration(dur)*time.Millisecond
	if reviewed.Valid {
		t := fromMS(reviewed.Int64)
		a.ReviewedAt = &t
	}
	return a, nil
}

func insertAlert(ctx context.Context, tx *sql.Tx, a BreakGlassAlert) error {
	return insertAlertUsed(ctx, tx, a, 0)
}

// insertAlertUsed inserts an alert with the time of the offline use it
// reports (milliseconds; 0 for an online opening).
func insertAlertUsed(ctx context.Context, tx *sql.Tx, a BreakGlassAlert, usedAt int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO breakglass_alerts (id, at, kind, actor, target, request_id, token_id, source, ports, duration_ms, reason, used_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		a.ID, ms(a.At), a.Kind, a.Actor, a.Target, a.RequestID, a.TokenID, a.Source, a.Ports, a.Duration.Milliseconds(), a.Reason, usedAt)
	if err != nil {
		return fmt.Errorf("recording break-glass alert: %w", err)
	}
	return nil
}

// OpenBreakGlass records an online break-glass on target in one
// transaction: req is evaluated against the target's policy like any
// request (its source and duration limits hold), but no approver is waited
// for; the request is approved at once, audited as breakglass.opened (every
// webhook gets it) and an alert is raised. The caller checked the role and
// access.CheckBreakGlass. A refusal is audited (request.refused) and
// returned as a *policy.DenyError or *policy.FieldError.
func (s *Store) OpenBreakGlass(ctx context.Context, actor Actor, target string, req policy.Request, limits policy.Limits, now time.Time) (Request, BreakGlassAlert, error) {
	var (
		id      string
		refusal error
		alert   BreakGlassAlert
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, target))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", target, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading target %s: %w", target, err)
		}
		var pol policy.Policy
		if t.Policy != nil {
			pol = *t.Policy
		}
		// An emergency does not wait for a rule's time window (a
		// documented choice, docs/design.md "Break-glass"): the windows
		// are left out; the rule's sources and maximum still hold. Kept
		// in, every break-glass on a windowed rule was refused (the
		// request carries no start to check them at), inside the window
		// or not.
		pol.Rules = slices.Clone(pol.Rules)
		for i := range pol.Rules {
			pol.Rules[i].Windows = nil
		}
		if !req.Source.IsValid() {
			refusal = &policy.FieldError{Field: "source", Reason: "break-glass opens a source in the kernel: give an address or prefix"}
		} else {
			req.Source = policy.Canonical(req.Source)
			refusal = limits.Evaluate(pol, req)
		}
		if refusal != nil {
			return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.RequestRefused,
				Target: target, Reason: req.Reason, Details: map[string]any{"error": refusal.Error(), "ports": encodePorts(req.Ports),
					"source": sourceString(req.Source), "breakglass": true}})
		}
		before, err := countLive(ctx, tx, target, actor.Name)
		if err != nil {
			return err
		}
		id = newRequestID()
		_, err = tx.ExecContext(ctx, `INSERT INTO requests (id, target, requester, source, ports, duration_ms, reason, state, revision,
			created_at, expires_at, client_addr, approvals_required, approve_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, 0, NULL)`,
			id, target, actor.Name, sourceString(req.Source), encodePorts(req.Ports), req.Duration.Milliseconds(), req.Reason,
			string(access.Start(0)), ms(now), ms(access.Deadline(now, req.Duration)), actor.ClientAddr)
		if err != nil {
			return fmt.Errorf("inserting break-glass request: %w", err)
		}
		alert = BreakGlassAlert{ID: random.ID("bga-", 10), At: fromMS(ms(now)), Kind: BreakGlassOnline, Actor: actor.Name, Target: target,
			RequestID: id, Source: sourceString(req.Source), Ports: encodePorts(req.Ports), Duration: req.Duration, Reason: req.Reason}
		if err := insertAlert(ctx, tx, alert); err != nil {
			return err
		}
		superseded, err := s.grantRequestWindows(ctx, tx, id, actor, now, false)
		if err != nil {
			return err
		}
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.BreakGlassOpened,
			Target: target, RequestID: id, Reason: req.Reason, Details: map[string]any{"ports": encodePorts(req.Ports),
				"source": sourceString(req.Source), "duration": req.Duration.String(), "alert": alert.ID}}); err != nil {
			return err
		}
		// The caps on live requests hold for break-glass too (as in
		// CreateRequest): one role cannot flood a target's state.
		after := policy.Live{Requester: before.Requester + 1 - superseded, Target: before.Target + 1 - superseded}
		return limits.CheckLive(actor.Name, target, before, after)
	})
	if err != nil {
		return Request{}, BreakGlassAlert{}, err
	}
	if refusal != nil {
		return Request{}, BreakGlassAlert{}, refusal
	}
	s.changed(target)
	r, err := s.GetRequest(ctx, id)
	return r, alert, err
}

// BreakGlassAlerts lists the alerts, newest first; open only: those not
// reviewed yet. At most 500.
func (s *Store) BreakGlassAlerts(ctx context.Context, open bool, target string) ([]BreakGlassAlert, error) {
	q := `SELECT ` + alertColumns + ` FROM breakglass_alerts WHERE ($1 = '' OR target = $1)`
	if open {
		q += ` AND reviewed_at IS NULL`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY at DESC, id LIMIT 500`, target)
	if err != nil {
		return nil, fmt.Errorf("listing break-glass alerts: %w", err)
	}
	defer rows.Close()
	out := []BreakGlassAlert{}
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, fmt.Errorf("reading break-glass alert: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// ReviewBreakGlassAlert marks alert id reviewed by actor, audited. A
// reviewed alert stays reviewed: reviewing it again is ErrConflict.
func (s *Store) ReviewBreakGlassAlert(ctx context.Context, actor Actor, id, note string, now time.Time) (BreakGlassAlert, error) {
	var a BreakGlassAlert
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		a, err = scanAlert(tx.QueryRowContext(ctx, `SELECT `+alertColumns+` FROM breakglass_alerts WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("break-glass alert %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading break-glass alert %s: %w", id, err)
		}
		if a.ReviewedAt != nil {
			return fmt.Errorf("break-glass alert %s was already reviewed by %s: %w", id, a.ReviewedBy, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE breakglass_alerts SET reviewed_at = $1, reviewed_by = $2, review_note = $3 WHERE id = $4 AND reviewed_at IS NULL`,
			ms(now), actor.Name, note, id); err != nil {
			return fmt.Errorf("reviewing break-glass alert %s: %w", id, err)
		}
		t := fromMS(ms(now))
		a.ReviewedAt, a.ReviewedBy, a.ReviewNote = &t, actor.Name, note
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.BreakGlassReviewed,
			Target: a.Target, RequestID: a.RequestID, Reason: note, Details: map[string]any{"alert": id, "kind": a.Kind, "token": a.TokenID}})
	})
	return a, err
}

// BreakGlassToken is what the server keeps of an offline token it issued
// (never its text, which only the admin who issued it saw).
type BreakGlassToken struct {
	access.Token
	RevokedAt  *time.Time
	RevokedBy  string
	UsedAt     *time.Time
	UsedTarget string
}

// IssueBreakGlassToken records an issued token, audited. The caller signs it.
func (s *Store) IssueBreakGlassToken(ctx context.Context, actor Actor, t access.Token) error {
	targets, _ := json.Marshal(t.Targets)
	ports, _ := json.Marshal(t.Ports)
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO breakglass_tokens (id, targets, ports, max_duration_ms, issued_at, issued_by, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, t.ID, string(targets), string(ports), t.MaxDuration.Milliseconds(), ms(t.IssuedAt), actor.Name, ms(t.ExpiresAt)); err != nil {
			return fmt.Errorf("recording break-glass token: %w", err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: t.IssuedAt, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.BreakGlassTokenIssued,
			Details: map[string]any{"token": t.ID, "targets": t.Targets, "ports": t.Ports, "max_duration": t.MaxDuration.String(),
				"expires_at": t.ExpiresAt.UTC().Format(time.RFC3339)}})
	})
}

const bgTokenColumns = `id, targets, ports, max_duration_ms, issued_at, issued_by, expires_at, revoked_at, revoked_by, used_at, used_target`

func scanBGToken(r scanner) (BreakGlassToken, error) {
	var (
		t                       BreakGlassToken
		targets, ports          string
		maxDur, issued, expires int64
		revoked, used           sql.NullInt64
	)
	if err := r.Scan(&t.ID, &targets, &ports, &maxDur, &issued, &t.IssuedBy, &expires, &revoked, &t.RevokedBy, &used, &t.UsedTarget); err != nil {
		return BreakGlassToken{}, err
	}
	if err := json.Unmarshal([]byte(targets), &t.Targets); err != nil {
		return BreakGlassToken{}, fmt.Errorf("decoding targets of token %s: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(ports), &t.Ports); err != nil {
		return BreakGlassToken{}, fmt.Errorf("decoding ports of token %s: %w", t.ID, err)
	}
	t.MaxDuration, t.IssuedAt, t.ExpiresAt = time.Duration(maxDur)*time.Millisecond, fromMS(issued), fromMS(expires)
	if revoked.Valid {
		v := fromMS(revoked.Int64)
		t.RevokedAt = &v
	}
	if used.Valid {
		v := fromMS(used.Int64)
		t.UsedAt = &v
	}
	return t, nil
}

// BreakGlassTokens lists the issued tokens, newest first (at most 1000).
func (s *Store) BreakGlassTokens(ctx context.Context) ([]BreakGlassToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+bgTokenColumns+` FROM breakglass_tokens ORDER BY issued_at DESC, id LIMIT 1000`)
	if err != nil {
		return nil, fmt.Errorf("listing break-glass tokens: %w", err)
	}
	defer rows.Close()
	out := []BreakGlassToken{}
	for rows.Next() {
		t, err := scanBGToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeBreakGlassToken revokes token id, audited, and advances the
// revision of every existing target it names, so that their agents are sent
// the revocation at once (DesiredState.BreakGlassRevoked). Revoking a
// revoked token is ErrConflict.
func (s *Store) RevokeBreakGlassToken(ctx context.Context, actor Actor, id string, now time.Time) (BreakGlassToken, error) {
	var t BreakGlassToken
	var bumped []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = scanBGToken(tx.QueryRowContext(ctx, `SELECT `+bgTokenColumns+` FROM breakglass_tokens WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("break-glass token %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading break-glass token %s: %w", id, err)
		}
		if t.RevokedAt != nil {
			return fmt.Errorf("break-glass token %s is already revoked: %w", id, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE breakglass_tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3`, ms(now), actor.Name, id); err != nil {
			return fmt.Errorf("revoking break-glass token %s: %w", id, err)
		}
		v := fromMS(ms(now))
		t.RevokedAt, t.RevokedBy = &v, actor.Name
		bumped = bumped[:0]
		for _, target := range t.Targets {
			_, err := bumpRevision(ctx, tx, target)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			default:
				bumped = append(bumped, target)
			}
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.BreakGlassTokenRevoked,
			Details: map[string]any{"token": id, "targets": t.Targets}})
	})
	if err != nil {
		return BreakGlassToken{}, err
	}
	s.changed(bumped...)
	return t, nil
}

// RevokedBreakGlassTokens lists, for the agents of target, the ids of
// unexpired tokens naming it that are revoked, or were used on another
// target (single use across targets: the other agents then refuse it), or
// were used on target itself and the use has surely ended (its time plus
// the token's maximum duration is past): the agent's log refuses a second
// use, but a host whose log lost the use (restored from a snapshot taken
// before it, reinstalled) would accept it again. Not before the use ended:
// a revocation closes the opening it made. Tokens issued before target was
// created are listed too: they were issued for an earlier target of that
// name (a token is issued for existing targets only), and must not open
// another machine enrolled under it. An expired token is refused anyway,
// so the list stays bounded by the live ones.
func (s *Store) RevokedBreakGlassTokens(ctx context.Context, target string, now time.Time) ([]string, error) {
	var created int64
	switch err := s.db.QueryRowContext(ctx, `SELECT created_at FROM targets WHERE name = $1`, target).Scan(&created); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("reading target %s: %w", target, err)
	}
	return s.revokedBreakGlassTokens(ctx, target, created, now)
}

// RevokedBreakGlassTokensOf is RevokedBreakGlassTokens for target t as the
// caller just read it (the agent's long-poll has it): its creation time is
// not read again.
func (s *Store) RevokedBreakGlassTokensOf(ctx context.Context, t Target, now time.Time) ([]string, error) {
	// Read with every agent answer; the unexpired break-glass tokens that
	// are revoked or used are few (issued by hand): a point read
	// (pointCtx).
	return s.revokedBreakGlassTokens(s.pointCtx(ctx), t.Name, ms(t.CreatedAt), now)
}

func (s *Store) revokedBreakGlassTokens(ctx context.Context, target string, created int64, now time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, targets FROM breakglass_tokens
		WHERE (revoked_at IS NOT NULL OR issued_at < $3 OR (used_at IS NOT NULL AND (used_target <> $2 OR used_at + max_duration_ms <= $1)))
		AND expires_at > $1 ORDER BY id`, ms(now), target, created)
	if err != nil {
		return nil, fmt.Errorf("listing revoked break-glass tokens: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, targets string
		if err := rows.Scan(&id, &targets); err != nil {
			return nil, fmt.Errorf("reading revoked break-glass token: %w", err)
		}
		var ts []string
		if err := json.Unmarshal([]byte(targets), &ts); err != nil {
			return nil, fmt.Errorf("decoding targets of token %s: %w", id, err)
		}
		for _, t := range ts {
			if t == target {
				out = append(out, id)
				break
			}
		}
	}
	return out, rows.Err()
}

// BreakGlassUse is an offline use an agent reports.
type BreakGlassUse struct {
	TokenID  string
	Operator string // who ran it on the host (the local user), for the record
	Source   string
	Port     uint16
	Protocol string
	Duration time.Duration
	Reason   string
	UsedAt   time.Time
	// Verified is set when the server checked the token text the agent
	// sent against its own key (the agent sends it: the server trusts no
	// agent's word for which token it was).
	Verified bool
}

// RecordBreakGlassUse records that target's agent opened access with an
// offline token: audited as breakglass.used (every webhook gets it), an
// alert raised, and the token marked used so that it cannot be used on
// another target once that target's agent hears of it. Reporting the same
// use again changes nothing (the agent retries until it is acknowledged);
// a use of a token already used on another target, or of a revoked or
// unknown one, is recorded all the same (the access happened) with the
// anomaly in the details.
func (s *Store) RecordBreakGlassUse(ctx context.Context, target string, u BreakGlassUse, now time.Time) (BreakGlassAlert, bool, error) {
	var (
		alert  BreakGlassAlert
		fresh  bool
		others []string
	)
	alertToken := u.TokenID
	if !u.Verified {
		// Kept apart from the verified uses of the token with that id: an
		// unverified report must not pass for one (or pre-empt it).
		alertToken += " (unverified)"
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// One use per (token, target, time of use): a report retried is
		// the same use; another time is another access (a host that lost
		// its log used the token again), recorded with its anomaly.
		existing, err := scanAlert(tx.QueryRowContext(ctx, `SELECT `+alertColumns+` FROM breakglass_alerts WHERE token_id = $1 AND target = $2 AND used_at = $3`,
			alertToken, target, ms(u.UsedAt)))
		if err == nil {
			alert = existing
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reading break-glass use of %s: %w", u.TokenID, err)
		}
		fresh = true
		details := map[string]any{"token": u.TokenID, "source": u.Source, "ports": fmt.Sprintf("%d/%s", u.Port, u.Protocol),
			"duration": u.Duration.String(), "used_at": u.UsedAt.UTC().Format(time.RFC3339Nano), "operator": u.Operator, "verified": u.Verified}
		tok, err := scanBGToken(tx.QueryRowContext(ctx, `SELECT `+bgTokenColumns+` FROM breakglass_tokens WHERE id = $1`, u.TokenID))
		switch {
		case !u.Verified:
			// Nothing the token says is trusted: the use is recorded, the
			// token (if one has that id) is not marked used.
			details["anomaly"] = "token does not verify against this server's key (signed by a previous or another server's key, or forged; the host's key file may have been replaced)"
		case errors.Is(err, sql.ErrNoRows):
			details["anomaly"] = "token unknown to this server"
		case err != nil:
			return fmt.Errorf("reading break-glass token %s: %w", u.TokenID, err)
		default:
			if tok.UsedAt != nil && tok.UsedTarget != target {
				details["anomaly"] = "token already used on " + tok.UsedTarget
			} else if tok.UsedAt != nil && ms(*tok.UsedAt) != ms(u.UsedAt) {
				details["anomaly"] = "token used again on this target (first used " + tok.UsedAt.UTC().Format(time.RFC3339) + "; the host's log had lost that use)"
			} else if tok.RevokedAt != nil && tok.RevokedAt.Before(u.UsedAt) {
				details["anomaly"] = "token revoked before its use (the agent had not heard of it)"
			}
			if tok.UsedAt == nil {
				if _, err := tx.ExecContext(ctx, `UPDATE breakglass_tokens SET used_at = $1, used_target = $2 WHERE id = $3`, ms(u.UsedAt), target, u.TokenID); err != nil {
					return fmt.Errorf("marking break-glass token %s used: %w", u.TokenID, err)
				}
				// The token's other targets are sent it as revoked at once.
				others = others[:0]
				for _, other := range tok.Targets {
					if other == target {
						continue
					}
					_, err := bumpRevision(ctx, tx, other)
					switch {
					case errors.Is(err, ErrNotFound):
					case err != nil:
						return err
					default:
						others = append(others, other)
					}
				}
			}
		}
		actor := "agent:" + target
		if u.Operator != "" {
			actor = u.Operator + "@" + target
		}
		alert = BreakGlassAlert{ID: random.ID("bga-", 10), At: fromMS(ms(now)), Kind: BreakGlassOffline, Actor: actor, Target: target,
			TokenID: alertToken, Source: u.Source, Ports: fmt.Sprintf(`["%d/%s"]`, u.Port, u.Protocol), Duration: u.Duration, Reason: u.Reason}
		if err := insertAlertUsed(ctx, tx, alert, ms(u.UsedAt)); err != nil {
			return err
		}
		details["alert"] = alert.ID
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor, Action: audit.BreakGlassUsed, Target: target, Reason: u.Reason, Details: details})
	})
	if err != nil {
		return BreakGlassAlert{}, false, err
	}
	s.changed(append(others, target)...)
	return alert, fresh, nil
}
