package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/random"
)

// Request is an access request as stored.
type Request struct {
	ID           string
	Target       string
	Requester    string
	Source       netip.Prefix
	Ports        []policy.Port
	Duration     time.Duration
	Reason       string
	State        access.State
	Message      string
	Revision     int64
	CreatedAt    time.Time
	ActivatedAt  *time.Time
	ExpiresAt    time.Time
	EndedAt      *time.Time
	SupersededBy string
	Extended     []policy.Port
	ClientAddr   string
	// ApprovalsRequired is 0 for auto-approved requests.
	ApprovalsRequired int
	ApproveBy         *time.Time
	ApprovedAt        *time.Time
	Version           int64
	// Decisions are the approvals (and a denial) given so far.
	Decisions []Decision
	// ApprovalGroups are the approvals by group the request needs (fixed
	// at creation from its rules); Tally says where they stand.
	ApprovalGroups []access.GroupNeed
	Tally          access.Tally
	// WindowEnd is set when the grant's deadline was clipped to the end of
	// a rule's time window: that end.
	WindowEnd *time.Time
	// Removal is set when the request ended while its grants were still in
	// a kernel (see access.NeedsRemovalConfirmation); RemovalEnforcer names
	// the target whose agent must confirm it ("" when none will).
	Removal         *access.Removal
	RemovalEnforcer string
	// StartsAt is when a scheduled request asks for access from (nil: at
	// approval); its deadline is StartsAt + Duration.
	StartsAt *time.Time
}

// Decision is one approver's approval or denial.
type Decision struct {
	Approver string
	Decision string // approve | deny
	Reason   string
	At       time.Time
	// Member lists the request's approval groups the approver belonged to.
	Member []string
}

const requestColumns = `id, target, requester, source, ports, duration_ms, reason, state, message, revision,
	created_at, activated_at, expires_at, ended_at, superseded_by, extended, client_addr,
	approvals_required, approve_by, approved_at, version, removal_revision, removal_enforcer, removal_at, removal_confirmed_at,
	window_end, approval_groups, starts_at`

func scanRequest(r scanner) (Request, error) {
	var (
		q                       Request
		src, ports, ext, state  string
		durMS, created, expires int64
		activated, ended        sql.NullInt64
		approveBy, approved     sql.NullInt64
		removalRev              int64
		removalAt, confirmedAt  sql.NullInt64
		windowEnd               sql.NullInt64
		groups                  string
		startsAt                sql.NullInt64
	)
	if err := r.Scan(&q.ID, &q.Target, &q.Requester, &src, &ports, &durMS, &q.Reason, &state, &q.Message, &q.Revision,
		&created, &activated, &expires, &ended, &q.SupersededBy, &ext, &q.ClientAddr,
		&q.ApprovalsRequired, &approveBy, &approved, &q.Version, &removalRev, &q.RemovalEnforcer, &removalAt, &confirmedAt,
		&windowEnd, &groups, &startsAt); err != nil {
		return Request{}, err
	}
	var err error
	if q.Source, err = parseSource(src); err != nil {
		return Request{}, fmt.Errorf("decoding source of %s: %w", q.ID, err)
	}
	if q.Ports, err = decodePorts(ports); err != nil {
		return Request{}, fmt.Errorf("decoding ports of %s: %w", q.ID, err)
	}
	if q.Extended, err = decodePorts(ext); err != nil {
		return Request{}, fmt.Errorf("decoding extended ports of %s: %w", q.ID, err)
	}
	q.Duration = time.Duration(durMS) * time.Millisecond
	q.State = access.State(state)
	q.CreatedAt, q.ExpiresAt = fromMS(created), fromMS(expires)
	q.ActivatedAt, q.EndedAt = fromNullMS(activated), fromNullMS(ended)
	q.ApproveBy, q.ApprovedAt = fromNullMS(approveBy), fromNullMS(approved)
	q.WindowEnd = fromNullMS(windowEnd)
	if groups != "" {
		if err := json.Unmarshal([]byte(groups), &q.ApprovalGroups); err != nil {
			return Request{}, fmt.Errorf("decoding approval groups of %s: %w", q.ID, err)
		}
	}
	q.StartsAt = fromNullMS(startsAt)
	if removalRev > 0 && removalAt.Valid {
		q.Removal = &access.Removal{Revision: removalRev, At: fromMS(removalAt.Int64), Deadline: q.ExpiresAt,
			ConfirmedAt: fromNullMS(confirmedAt), Confirmable: q.RemovalEnforcer != ""}
	}
	return q, nil
}

// sourceString stores a request's or grant's source: "" for a bastion-only
// request, which names no source and opens nothing in the kernel.
func sourceString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// parseSource reads what sourceString wrote.
func parseSource(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	return netip.ParsePrefix(s)
}

func encodePorts(ps []policy.Port) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func decodePorts(js string) ([]policy.Port, error) {
	// encodePorts' own form (every request read decodes two: its ports
	// and its extended ports) without the JSON decoder; anything else
	// through it.
	if js == "[]" {
		return []policy.Port{}, nil
	}
	if inner, ok := strings.CutPrefix(js, `["`); ok {
		if inner, ok = strings.CutSuffix(inner, `"]`); ok && !strings.ContainsAny(inner, `\ `) {
			out := make([]policy.Port, 0, strings.Count(inner, `","`)+1)
			for v := range strings.SplitSeq(inner, `","`) {
				p, err := policy.ParsePort(v)
				if err != nil {
					out = nil
					break
				}
				out = append(out, p)
			}
			if out != nil {
				return out, nil
			}
		}
	}
	var s []string
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return nil, err
	}
	out := make([]policy.Port, 0, len(s))
	for _, v := range s {
		p, err := policy.ParsePort(v)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func newRequestID() string { return random.ID("r-", 10) }

// CreateRequest evaluates req against the target's policy and, if it fits,
// records it in one transaction: awaiting approval when a rule of its ports
// asks for approvers, otherwise approved at once (see grantRequest). A
// refusal is audited and returned as a *policy.DenyError or
// *policy.FieldError; it changes nothing else.
//
// The caps on live requests (limits.CheckLive) are decided in the same
// transaction as the insert, after it, so that an extension that supersedes
// the request it extends counts as no growth, and so that concurrent
// requests cannot overshoot: write transactions are serialized. A request
// over a cap is returned as a *policy.LimitError with nothing written, not
// even an audit event: the API audits such refusals, aggregated, so that a
// requester hammering at the cap cannot grow the trail one row per call.
func (s *Store) CreateRequest(ctx context.Context, actor Actor, target string, req policy.Request, limits policy.Limits, now time.Time) (Request, error) {
	return s.CreateRequestWith(ctx, actor, target, req, limits, now, RequestOptions{})
}

// RequestOptions are what a request may carry beyond policy.Request.
type RequestOptions struct {
	// Start is when the request asks for access from, already checked by
	// access.CheckStart (zero: at approval). A request with a start after
	// now that needs no approval is scheduled; one that needs approvers
	// waits for them and is scheduled by the last approval if that comes
	// before the start. Its deadline is Start + duration.
	Start time.Time
	// Subject is the requester's principals and token limit, and Token the
	// id of the token they asked with (the API's Principal.TokenID), kept
	// with every request for the re-check of its requester when it is
	// granted later than asked: at its last approval or its scheduled
	// start (requesterMayNot). A zero Subject records nothing.
	Subject authz.Subject
	Token   string
	// Schedule is the recurring schedule whose occurrence this is (""
	// for none): deleting it revokes the occurrences not started yet.
	Schedule string
}

// CreateRequestWith is CreateRequest with options (a scheduled start).
func (s *Store) CreateRequestWith(ctx context.Context, actor Actor, target string, req policy.Request, limits policy.Limits, now time.Time, opt RequestOptions) (Request, error) {
	var (
		refusal error
		wake    *relations
		created Request
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		// The answer is the request as this transaction wrote it (its
		// insert returns it): no read transaction of its own after the
		// commit. (A request that needs approvals has none yet; its tally
		// is read with them, below.)
		created, wake, refusal, err = s.createRequestTx(ctx, tx, actor, target, req, limits, now, opt)
		return err
	})
	if err != nil {
		return Request{}, err
	}
	if refusal != nil {
		return Request{}, refusal
	}
	if wake != nil {
		s.changedRelated(target, *wake)
	}
	if created.ApprovalsRequired > 0 {
		return s.GetRequest(ctx, created.ID)
	}
	return created, nil
}

// createRequestTx is CreateRequestWith inside the caller's transaction. It
// returns the new request, the target's relations when its agents (or the
// sweeper) must be woken after the commit (nil: no one), and a refusal by
// the policy, which it audited (the transaction must still commit).
func (s *Store) createRequestTx(ctx context.Context, tx *sql.Tx, actor Actor, target string, req policy.Request, limits policy.Limits, now time.Time, opt RequestOptions) (created Request, wake *relations, refusal error, err error) {
	var rel relations
	err = func() error {
		t, before, err := targetForRequest(ctx, tx, target, actor.Name, &rel)
		if err != nil {
			return err
		}
		var pol policy.Policy
		if t.Policy != nil {
			pol = *t.Policy
		}
		if req.Source.IsValid() {
			req.Source = policy.Canonical(req.Source)
		}
		// A scheduled request is judged at its start, when the grant would
		// begin (the rules' time windows); StartScheduled judges it again
		// then. Otherwise at now, unless the caller names a later start.
		if opt.Start.After(now) {
			req.At = opt.Start
		} else if req.At.IsZero() {
			req.At = now
		}
		if refusal = limits.Evaluate(pol, req); refusal != nil {
			return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.RequestRefused,
				Target: target, Reason: req.Reason, Details: map[string]any{"error": refusal.Error(), "ports": encodePorts(req.Ports), "source": sourceString(req.Source)}})
		}
		id := newRequestID()
		need := pol.ApprovalsRequired(req.Ports)
		state := access.StartAt(need, opt.Start, now)
		deadline := access.GrantDeadline(opt.Start, now, req.Duration)
		var approveBy, startsAt sql.NullInt64
		if state == access.PendingApproval {
			by := access.ApproveBy(now, s.cfg.ApprovalTimeout)
			if !opt.Start.IsZero() && deadline.Before(by) {
				// Approved after its window it could open nothing.
				by = deadline
			}
			approveBy = sql.NullInt64{Int64: ms(by), Valid: true}
		}
		subject := ""
		if len(opt.Subject.Principals) > 0 {
			b, err := json.Marshal(askedBy{Subject: opt.Subject, Token: opt.Token})
			if err != nil {
				return fmt.Errorf("encoding the requester's subject: %w", err)
			}
			subject = string(b)
		}
		if !opt.Start.IsZero() {
			startsAt = sql.NullInt64{Int64: ms(opt.Start), Valid: true}
		}
		groups := encodeGroups(pol.ApprovalGroupsRequired(req.Ports))
		// A request approved at creation is granted before its row is
		// written, and the row is inserted as granted (its revision,
		// deadline, extended ports, approval time and version 2, as the
		// insert and the grant's UPDATE of it left it before): one
		// statement fewer on every request's path.
		var g grantWrite
		if state == access.Pending {
			r := Request{ID: id, Target: target, Requester: actor.Name, Source: req.Source, Ports: req.Ports, Duration: req.Duration,
				State: state, StartsAt: fromNullMS(startsAt)}
			if g, err = s.grantGrants(ctx, tx, r, t, now, true); err != nil {
				return err
			}
			g.set = append(g.set, set{"version", 2})
		}
		cols := `id, target, requester, source, ports, duration_ms, reason, state, created_at, client_addr, approvals_required,
			approve_by, approval_groups, starts_at, subject, schedule_id`
		args := []any{id, target, actor.Name, sourceString(req.Source), encodePorts(req.Ports), req.Duration.Milliseconds(), req.Reason,
			string(state), ms(now), actor.ClientAddr, need, approveBy, groups, startsAt, subject, opt.Schedule}
		if g.set == nil {
			g.set = []set{{"revision", 0}, {"expires_at", ms(deadline)}}
		}
		for _, c := range g.set {
			cols += ", " + c.column
			args = append(args, c.value)
		}
		marks := make([]string, len(args))
		for i := range marks {
			marks[i] = fmt.Sprintf("$%d", i+1)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO requests (`+cols+`) VALUES (`+strings.Join(marks, ", ")+`)`, args...); err != nil {
			return fmt.Errorf("inserting request: %w", err)
		}
		// The row as inserted is the request's answer (nothing later in
		// this transaction writes it), built from the values the insert
		// wrote rather than returned by it: RETURNING made SQLite collect
		// the row in a temporary table and hand back 28 named columns to
		// scan and decode again (TestCreatedRequestAsStored holds the two
		// equal).
		if created, err = insertedRequest(cols, args); err != nil {
			return err
		}
		details := map[string]any{"ports": encodePorts(req.Ports), "source": sourceString(req.Source), "duration": req.Duration.String()}
		if need > 0 {
			details["approvals_required"] = need
		}
		if groups != "" {
			details["approval_groups"] = groups
		}
		if state == access.Pending {
			if end, clipped := clipToWindows(pol, req.Ports, now, req.Duration); clipped {
				details["clipped_to_window_end"] = end.Format(time.RFC3339)
			}
		}
		if !opt.Start.IsZero() {
			details["starts_at"] = opt.Start.UTC().Format(time.RFC3339Nano)
		}
		// The new request is audited before the ones it supersedes, so the
		// trail never names a request before its creation.
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.RequestCreated,
			Target: target, RequestID: id, Reason: req.Reason, Details: details}); err != nil {
			return err
		}
		superseded := 0
		switch state {
		case access.Pending:
			touchRequest(tx, id)
			if superseded, err = s.supersedeAll(ctx, tx, g, id, actor, now); err != nil {
				return err
			}
			wake = &rel
		case access.Scheduled:
			// No grant yet; the change wakes the sweeper, which starts it.
			wake = &rel
		}
		// The requests this one superseded were the same requester's on the
		// same target (grants match on both), so both counts move alike.
		after := policy.Live{Requester: before.Requester + 1 - superseded, Target: before.Target + 1 - superseded}
		return limits.CheckLive(actor.Name, target, before, after)
	}()
	return created, wake, refusal, err
}

// insertedRequest is the request a new row holds: the row's columns cols
// (comma-separated, as createRequestTx inserts them) with their values
// args, and the table's defaults for the others, as scanRequest would read
// them back.
func insertedRequest(cols string, args []any) (Request, error) {
	r := Request{Version: 1, Extended: []policy.Port{}}
	for i, c := range strings.Split(cols, ",") {
		c = strings.TrimSpace(c)
		v := args[i]
		var err error
		switch c {
		case "id":
			r.ID = v.(string)
		case "target":
			r.Target = v.(string)
		case "requester":
			r.Requester = v.(string)
		case "source":
			r.Source, err = parseSource(v.(string))
		case "ports":
			r.Ports, err = decodePorts(v.(string))
		case "extended":
			r.Extended, err = decodePorts(v.(string))
		case "duration_ms":
			r.Duration = time.Duration(v.(int64)) * time.Millisecond
		case "reason":
			r.Reason = v.(string)
		case "state":
			r.State = access.State(v.(string))
		case "created_at":
			r.CreatedAt = fromMS(v.(int64))
		case "client_addr":
			r.ClientAddr = v.(string)
		case "approvals_required":
			r.ApprovalsRequired = v.(int)
		case "approve_by":
			r.ApproveBy = fromNullMS(v.(sql.NullInt64))
		case "approval_groups":
			if g := v.(string); g != "" {
				err = json.Unmarshal([]byte(g), &r.ApprovalGroups)
			}
		case "starts_at":
			r.StartsAt = fromNullMS(v.(sql.NullInt64))
		case "revision":
			r.Revision = toInt64(v)
		case "expires_at":
			r.ExpiresAt = fromMS(toInt64(v))
		case "approved_at":
			t := fromMS(toInt64(v))
			r.ApprovedAt = &t
		case "window_end":
			t := fromMS(toInt64(v))
			r.WindowEnd = &t
		case "version":
			r.Version = toInt64(v)
		case "subject", "schedule_id":
			// Not part of Request.
		default:
			return Request{}, fmt.Errorf("inserting request: no reading of column %s", c)
		}
		if err != nil {
			return Request{}, fmt.Errorf("decoding %s of the new request: %w", c, err)
		}
	}
	return r, nil
}

// toInt64 is an integer column's value as createRequestTx passes it.
func toInt64(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	}
	panic(fmt.Sprintf("store: %T is not an integer column's value", v))
}

// targetForRequest reads, in one statement, what a new request's
// transaction needs of its target: its name, gateway, labels, addresses and
// policy (the rest of the row is left zero: grantGrants uses no more), the
// live requests of requester on it and of it (countLive's counts, read by
// key), and its relations for the wake-up after the commit (rel). One read
// instead of three (the target, the counts, and the relations after the
// commit: changed), and 5 of the row's 19 columns scanned: on every
// request's path (docs/benchmarks.md §26).
func targetForRequest(ctx context.Context, tx *sql.Tx, target, requester string, rel *relations) (Target, policy.Live, error) {
	var (
		t             Target
		labels, addrs string
		pol           sql.NullString
		l             policy.Live
	)
	err := tx.QueryRowContext(ctx, `SELECT name, gateway, labels, addresses, policy,
		coalesce((SELECT n FROM live_requests WHERE target = $1 AND requester = $2), 0),
		coalesce((SELECT n FROM live_requests WHERE target = $1 AND requester = ''), 0),
		EXISTS (SELECT 1 FROM targets WHERE gateway = $1)
		FROM targets WHERE name = $1`, target, requester).Scan(&t.Name, &t.Gateway, &labels, &addrs, &pol, &l.Requester, &l.Target, &rel.behind)
	if errors.Is(err, sql.ErrNoRows) {
		return Target{}, policy.Live{}, fmt.Errorf("target %q: %w", target, ErrNotFound)
	}
	if err != nil {
		return Target{}, policy.Live{}, fmt.Errorf("reading target %s: %w", target, err)
	}
	var raw *string
	if pol.Valid {
		raw = &pol.String
	}
	d, err := decodeTargetJSON(t.Name, labels, addrs, raw)
	if err != nil {
		return Target{}, policy.Live{}, err
	}
	t.Labels, t.Addresses, t.Policy = d.labels, d.addrs, d.policy
	rel.gateway = t.Gateway
	return t, l, nil
}

// countLive returns the live requests of requester on target, and of
// target, as the triggers of migration 0011 keep them in live_requests (a
// count of the rows would cost what is live, inside the write lock).
func countLive(ctx context.Context, tx *sql.Tx, target, requester string) (policy.Live, error) {
	var l policy.Live
	err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(CASE WHEN requester = $2 THEN n END), 0), coalesce(sum(CASE WHEN requester = '' THEN n END), 0)
		FROM live_requests WHERE target = $1 AND requester IN ($2, '')`, target, requester).Scan(&l.Requester, &l.Target)
	if err != nil {
		return policy.Live{}, fmt.Errorf("counting live requests of %s on %s: %w", requester, target, err)
	}
	return l, nil
}

// grantRequest turns an approved request into grants, inside the caller's
// transaction: one grant row per port with the deadline now + duration (the
// clock starts at approval, not at the ask), the target's revision advanced,
// and the request pending until its agent confirms. A grant the same
// requester already holds for the same (source, protocol, port) is extended
// (never shortened) and moves to this request; a request left with no grants
// becomes superseded. It returns how many requests it superseded.
func (s *Store) grantRequest(ctx context.Context, tx *sql.Tx, id string, actor Actor, now time.Time) (int, error) {
	return s.grantRequestWindows(ctx, tx, id, actor, now, true)
}

// grantRequestWindows is grantRequest; without windows (a break-glass:
// an emergency does not wait for a window) the rules' time windows neither
// refuse nor clip the grant.
func (s *Store) grantRequestWindows(ctx context.Context, tx *sql.Tx, id string, actor Actor, now time.Time, windows bool) (int, error) {
	r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, id))
	if err != nil {
		return 0, fmt.Errorf("reading request %s: %w", id, err)
	}
	// The rules' time windows are checked again at the grant's start (an
	// approval may come after the window closed) and clip its deadline.
	t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, r.Target))
	if err != nil {
		return 0, fmt.Errorf("reading policy of %s: %w", r.Target, err)
	}
	return s.grantRead(ctx, tx, r, t, actor, now, windows)
}

// grantRead is grantRequestWindows with the request r and its target t as
// read in tx (a new request's transaction has both in hand: it does not
// read them again).
func (s *Store) grantRead(ctx context.Context, tx *sql.Tx, r Request, t Target, actor Actor, now time.Time, windows bool) (int, error) {
	id := r.ID
	g, err := s.grantGrants(ctx, tx, r, t, now, windows)
	if err != nil {
		return 0, err
	}
	if r.State == access.Pending {
		// Approved at creation (no approvers): it starts pending, so no
		// state changes here.
		q, args := "UPDATE requests SET version = version + 1", []any{}
		for _, g := range g.set {
			args = append(args, g.value)
			q += fmt.Sprintf(", %s = $%d", g.column, len(args))
		}
		args = append(args, id)
		if _, err := tx.ExecContext(ctx, q+fmt.Sprintf(" WHERE id = $%d", len(args)), args...); err != nil {
			return 0, fmt.Errorf("granting request %s: %w", id, err)
		}
		touchRequest(tx, id)
	} else if _, err := transition(ctx, tx, id, r.State, r.Version, grantEvent(r.State), g.set...); err != nil {
		return 0, fmt.Errorf("granting request %s: %w", id, err)
	}
	return s.supersedeAll(ctx, tx, g, id, actor, now)
}

// grantWrite is what granting a request writes into its row (set), the
// requests whose grants it took over (previous), and the key its grants
// share with theirs (holder).
type grantWrite struct {
	set      []set
	previous map[string]bool
	holder   grantHolder
}

// grantHolder is what every grant of a request shares with the request:
// its target, requester and source (a grant moves to a newer request only
// when that request holds the same key: grantGrants). The grants of a
// request are found by it and their request_id, a prefix of the unique
// index grants_key, instead of an index on request_id that every new grant
// wrote a page of (migration 0037).
type grantHolder struct{ target, requester, source string }

// The statements on the grants of a request, by its grantHolder ($1..$3)
// and its id ($4): seeks on grants_key (TestGrantsOfRequestByHolder).
const (
	countGrantsOf  = `SELECT count(*) FROM grants WHERE target = $1 AND requester = $2 AND source = $3 AND request_id = $4`
	deleteGrantsOf = `DELETE FROM grants WHERE target = $1 AND requester = $2 AND source = $3 AND request_id = $4 RETURNING id, expires_at`
)

// grantGrants is the part of grantRead before the request's own row: the
// rules' windows checked, the enforcer's revision advanced and logged, a
// grant row per port added or extended. A new request's row is inserted
// with what it returns (createRequestTx: no UPDATE of the row just
// inserted); any other request's row is updated with it (grantRead). Of t
// it uses the name, the gateway and the policy only (a new request's
// transaction reads no more: targetForRequest).
func (s *Store) grantGrants(ctx context.Context, tx *sql.Tx, r Request, t Target, now time.Time, windows bool) (grantWrite, error) {
	id := r.ID
	var pol policy.Policy
	if t.Policy != nil {
		pol = *t.Policy
	}
	if !windows {
		pol.Rules = slices.Clone(pol.Rules)
		for i := range pol.Rules {
			pol.Rules[i].Windows = nil
		}
	}
	if _, _, err := pol.CheckWindows(r.Ports, now); err != nil {
		return grantWrite{}, err
	}
	// A scheduled request keeps its window: start + duration, whenever it
	// is granted (access.GrantDeadline), clipped like any other.
	var start time.Time
	if r.StartsAt != nil {
		start = *r.StartsAt
	}
	asked, clipped := clipToWindows(pol, r.Ports, now, access.GrantDeadline(start, now, r.Duration).Sub(now))
	enforcer := t.Name
	if t.Gateway != "" {
		enforcer = t.Gateway
	}
	rev, err := advanceOwner(ctx, tx, enforcer)
	if err != nil {
		return grantWrite{}, err
	}
	// The revision's kind and every grant it touched, logged at the end in
	// one statement.
	logged := []int64{changeGrants}
	expires := asked
	var extended []policy.Port
	previous := map[string]bool{}
	for _, p := range r.Ports {
		var (
			gid    int64
			oldReq string
			oldExp int64
		)
		// A new grant is one statement; only when the requester holds the
		// grant already (the insert does nothing) is it read and extended.
		err := tx.QueryRowContext(ctx, `INSERT INTO grants (request_id, target, requester, source, protocol, port, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (target, requester, source, protocol, port) DO NOTHING RETURNING id`,
			id, r.Target, r.Requester, sourceString(r.Source), string(p.Protocol), int(p.Number), ms(asked)).Scan(&gid)
		if err == nil {
			logged = append(logged, gid)
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return grantWrite{}, fmt.Errorf("inserting grant: %w", err)
		}
		err = tx.QueryRowContext(ctx, `SELECT id, request_id, expires_at FROM grants
			WHERE target = $1 AND requester = $2 AND source = $3 AND protocol = $4 AND port = $5`,
			r.Target, r.Requester, sourceString(r.Source), string(p.Protocol), int(p.Number)).Scan(&gid, &oldReq, &oldExp)
		if err != nil {
			return grantWrite{}, fmt.Errorf("looking up live grant: %w", err)
		}
		exp := access.Extend(fromMS(oldExp), asked)
		if _, err := tx.ExecContext(ctx, `UPDATE grants SET request_id = $1, expires_at = $2 WHERE id = $3`, id, ms(exp), gid); err != nil {
			return grantWrite{}, fmt.Errorf("extending grant: %w", err)
		}
		logged = append(logged, gid)
		expires = access.Extend(expires, exp)
		extended = append(extended, p)
		previous[oldReq] = true
	}
	if err := logChanges(ctx, tx, enforcer, rev, logged...); err != nil {
		return grantWrite{}, err
	}
	g := grantWrite{set: []set{{"revision", rev}, {"expires_at", ms(expires)}, {"extended", encodePorts(extended)}, {"approved_at", ms(now)}},
		previous: previous, holder: grantHolder{r.Target, r.Requester, sourceString(r.Source)}}
	if clipped {
		g.set = append(g.set, set{"window_end", ms(asked)})
	}
	return g, nil
}

// supersedeAll ends the requests in g.previous that were left without
// grants (superseded by id), and returns how many it ended.
func (s *Store) supersedeAll(ctx context.Context, tx *sql.Tx, g grantWrite, id string, actor Actor, now time.Time) (int, error) {
	superseded := 0
	for old := range g.previous {
		ended, err := s.supersedeIfEmpty(ctx, tx, old, g.holder, id, actor, now)
		if err != nil {
			return 0, err
		}
		if ended {
			superseded++
		}
	}
	return superseded, nil
}

// targetPolicy reads a target's policy inside tx (empty when it has none).
func targetPolicy(ctx context.Context, tx *sql.Tx, target string) (policy.Policy, error) {
	t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, target))
	if err != nil {
		return policy.Policy{}, fmt.Errorf("reading policy of %s: %w", target, err)
	}
	if t.Policy == nil {
		return policy.Policy{}, nil
	}
	return *t.Policy, nil
}

// clipToWindows is the deadline of a grant of d on ports starting at now
// under pol's time windows, and whether a window's end cut it. Windows that
// are closed at now are the caller's to refuse (CheckWindows).
func clipToWindows(pol policy.Policy, ports []policy.Port, now time.Time, d time.Duration) (time.Time, bool) {
	end, limited, err := pol.CheckWindows(ports, now)
	if err != nil {
		limited = false
	}
	return policy.ClipDeadline(now, d, end, limited)
}

// encodeGroups stores a request's approvals by group ("" for none).
func encodeGroups(gs []policy.GroupApproval) string {
	if len(gs) == 0 {
		return ""
	}
	b, _ := json.Marshal(groupNeeds(gs))
	return string(b)
}

// groupNeeds is a policy's approvals by group as access tallies them.
func groupNeeds(gs []policy.GroupApproval) []access.GroupNeed {
	needs := make([]access.GroupNeed, len(gs))
	for i, g := range gs {
		needs[i] = access.GroupNeed{From: g.From, Count: g.Count}
	}
	return needs
}

// grantEvent is the event that gives grants to a request in state s: a
// scheduled request begins, one awaiting approval is approved.
func grantEvent(s access.State) access.Event {
	if s == access.Scheduled {
		return access.Begin
	}
	return access.Approve
}

// supersedeIfEmpty ends a request whose grants all moved to a newer one, and
// reports whether it did. Its grants share key with the newer one's (they
// moved to it because they matched): grantHolder.
func (s *Store) supersedeIfEmpty(ctx context.Context, tx *sql.Tx, id string, key grantHolder, by string, actor Actor, now time.Time) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, countGrantsOf, key.target, key.requester, key.source, id).Scan(&n); err != nil {
		return false, fmt.Errorf("counting grants of %s: %w", id, err)
	}
	if n > 0 {
		return false, nil
	}
	var (
		state, target string
		version       int64
	)
	if err := tx.QueryRowContext(ctx, `SELECT state, target, version FROM requests WHERE id = $1`, id).Scan(&state, &target, &version); err != nil {
		return false, fmt.Errorf("reading request %s: %w", id, err)
	}
	if _, err := access.Next(access.State(state), access.Supersede); err != nil {
		return false, nil // already ended: nothing to supersede
	}
	if _, err := transition(ctx, tx, id, access.State(state), version, access.Supersede,
		set{"superseded_by", by}, set{"ended_at", ms(now)}, set{"message", "extended by request " + by}); err != nil {
		return false, fmt.Errorf("superseding %s: %w", id, err)
	}
	return true, s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.RequestSuperseded,
		Target: target, RequestID: id, Details: map[string]any{"superseded_by": by}})
}

// endLiveRequests moves the live requests (awaiting approval, pending or
// active) matching where (a condition on the requests table with $1..
// placeholders) by event ev (access.Next says to what; a request the event
// does not apply to is refused, and the whole transaction with it) with
// message, deletes their grants and audits each. A request whose grants were still in a kernel
// (access.NeedsRemovalConfirmation) takes them out of the desired state: the
// revision of its enforcer advances (once per call) and the request records
// it, so that its agent confirms the removal as it confirms an activation.
func (s *Store) endLiveRequests(ctx context.Context, tx *sql.Tx, where string, args []any, ev access.Event, message string, actor Actor, action audit.Action, now time.Time) error {
	_, err := s.endSomeLiveRequests(ctx, tx, where, args, 0, ev, message, actor, action, now)
	return err
}

// endSomeLiveRequests is endLiveRequests for at most limit requests (0: all),
// oldest first; it returns how many it ended. The sweeper ends requests in
// bounded transactions with it.
func (s *Store) endSomeLiveRequests(ctx context.Context, tx *sql.Tx, where string, args []any, limit int, ev access.Event, message string, actor Actor, action audit.Action, now time.Time) (int, error) {
	q := `SELECT id, target, requester, source, state, expires_at, version FROM requests WHERE state IN (` + liveStates + `) AND ` + where + ` ORDER BY created_at, id`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("selecting requests to end: %w", err)
	}
	type row struct {
		id, target, requester, source, state string
		expires, version                     int64
	}
	var ended []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.target, &r.requester, &r.source, &r.state, &r.expires, &r.version); err != nil {
			rows.Close()
			return 0, fmt.Errorf("reading request: %w", err)
		}
		ended = append(ended, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	type removal struct {
		enforcer string
		rev      int64
	}
	removals := map[string]removal{} // by target
	// removalFor advances the revision of target's enforcer once per call,
	// for a change of grants only (the deleted ones are logged with it).
	removalFor := func(target string) (removal, error) {
		rm, ok := removals[target]
		if !ok {
			var err error
			if rm.enforcer, rm.rev, err = bumpForGrants(ctx, tx, target); err != nil {
				return rm, err
			}
			removals[target] = rm
		}
		return rm, nil
	}
	for _, r := range ended {
		to, err := transition(ctx, tx, r.id, access.State(r.state), r.version, ev, set{"message", message}, set{"ended_at", ms(now)})
		if err != nil {
			return 0, fmt.Errorf("ending request %s: %w", r.id, err)
		}
		live, err := deleteGrants(ctx, tx, r.id, grantHolder{r.target, r.requester, r.source}, now)
		if err != nil {
			return 0, err
		}
		confirm := access.NeedsRemovalConfirmation(access.State(r.state), to, fromMS(r.expires), now)
		if confirm || len(live) > 0 {
			// A live grant leaves the desired state: a new revision, which
			// names it in the change log.
			rm, err := removalFor(r.target)
			if err != nil {
				return 0, err
			}
			for _, gid := range live {
				if err := logGrant(ctx, tx, rm.enforcer, rm.rev, gid); err != nil {
					return 0, err
				}
			}
		}
		if confirm {
			rm := removals[r.target]
			if _, err := tx.ExecContext(ctx, `UPDATE requests SET removal_revision = $1, removal_enforcer = $2, removal_at = $3 WHERE id = $4`,
				rm.rev, rm.enforcer, ms(now), r.id); err != nil {
				return 0, fmt.Errorf("recording the removal of %s: %w", r.id, err)
			}
		}
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: action,
			Target: r.target, RequestID: r.id, Reason: message, Details: map[string]any{"from": r.state}}); err != nil {
			return 0, err
		}
	}
	return len(ended), nil
}

// deleteGrants deletes the grants of request id (whose target, requester
// and source are key: grantHolder) and returns those that were still live
// at now (in the desired state until this change).
func deleteGrants(ctx context.Context, tx *sql.Tx, id string, key grantHolder, now time.Time) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, deleteGrantsOf, key.target, key.requester, key.source, id)
	if err != nil {
		return nil, fmt.Errorf("deleting grants of %s: %w", id, err)
	}
	defer rows.Close()
	var live []int64
	for rows.Next() {
		var gid, exp int64
		if err := rows.Scan(&gid, &exp); err != nil {
			return nil, fmt.Errorf("deleting grants of %s: %w", id, err)
		}
		if exp > ms(now) {
			live = append(live, gid)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("deleting grants of %s: %w", id, err)
	}
	return live, nil
}

// GetRequest returns one request.
func (s *Store) GetRequest(ctx context.Context, id string) (Request, error) {
	ctx = s.pointCtx(ctx)
	q, err := scanRequest(s.db.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, fmt.Errorf("request %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Request{}, fmt.Errorf("reading request %s: %w", id, err)
	}
	if q.ApprovalsRequired > 0 {
		if q.Decisions, err = s.decisions(ctx, id); err != nil {
			return Request{}, err
		}
		q.Tally = tally(q)
	}
	return q, nil
}

// RequestFilter selects requests; zero fields match everything.
type RequestFilter struct {
	Target    string
	Requester string
	States    []access.State
	Limit     int
	// After continues a listing (keyset paging): only the requests that
	// come after this one in the order of ListRequests.
	After *RequestKey
}

// RequestKey is a request's place in the order of ListRequests (newest
// first, then by id).
type RequestKey struct {
	CreatedAt time.Time
	ID        string
}

// RequestKeyOf is r's place in the order of ListRequests.
func RequestKeyOf(r Request) RequestKey { return RequestKey{r.CreatedAt, r.ID} }

// ListRequests returns requests newest first.
func (s *Store) ListRequests(ctx context.Context, f RequestFilter) ([]Request, error) {
	if f.Limit <= 0 || f.Limit > 100000 { // the API asks at most a page of 10,000 and one more
		f.Limit = 1000
	}
	q := `SELECT ` + requestColumns + ` FROM requests WHERE 1 = 1`
	var args []any
	if f.Target != "" {
		args = append(args, f.Target)
		q += fmt.Sprintf(" AND target = $%d", len(args))
	}
	if f.Requester != "" {
		args = append(args, f.Requester)
		q += fmt.Sprintf(" AND requester = $%d", len(args))
	}
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, st := range f.States {
			args = append(args, string(st))
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		q += " AND state IN (" + strings.Join(ph, ", ") + ")"
	}
	if f.After != nil {
		args = append(args, ms(f.After.CreatedAt), f.After.ID)
		at, id := len(args)-1, len(args)
		q += fmt.Sprintf(" AND (created_at < $%d OR created_at = $%d AND id > $%d)", at, at, id)
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY created_at DESC, id LIMIT $%d", len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing requests: %w", err)
	}
	defer rows.Close()
	var out []Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("reading request: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	// A request awaiting approvals by group says which groups are still
	// missing, in lists too (the approvals page); only those few load
	// their decisions.
	for i, r := range out {
		if r.State == access.PendingApproval && len(r.ApprovalGroups) > 0 {
			if out[i].Decisions, err = s.decisions(ctx, r.ID); err != nil {
				return nil, err
			}
			out[i].Tally = tally(out[i])
		}
	}
	return out, nil
}

// RevokeRequest ends a live request at once; its grants leave the desired
// state in the same transaction. Until its agent confirms, the request
// reports the removal as unconfirmed (Request.Removal).
//
// Revocation wins the race with extension: asking again for a live grant
// moves it to the newer request (grantRequest), so revoking a request also
// revokes every live request that carries one of its grants now — the one
// that superseded it, and any that took over only some of its ports. It
// returns the request asked for when it was live, otherwise the request
// that carried its grants (its ID differs: the caller must say so), so that
// the removal the caller reports is the one that closes the ports.
func (s *Store) RevokeRequest(ctx context.Context, actor Actor, id, reason string, now time.Time) (Request, error) {
	var (
		target   string
		reported string
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var state string
		err := tx.QueryRowContext(ctx, `SELECT state, target FROM requests WHERE id = $1`, id).Scan(&state, &target)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("request %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading request %s: %w", id, err)
		}
		carriers, err := grantCarriers(ctx, tx, id)
		if err != nil {
			return err
		}
		var ids []any
		if _, err := access.Next(access.State(state), access.Revoke); err == nil {
			ids, reported = append(ids, id), id
		}
		for _, c := range carriers {
			ids = append(ids, c)
		}
		if len(ids) == 0 {
			_, err := access.Next(access.State(state), access.Revoke)
			return fmt.Errorf("cannot revoke %s: %w (%w)", id, err, ErrConflict)
		}
		if reported == "" {
			reported = carriers[len(carriers)-1]
		}
		msg := "revoked by " + actor.Name
		if reason != "" {
			msg += ": " + reason
		}
		// Their grants leave the desired state (endLiveRequests advances the
		// revision its agent must confirm).
		marks := make([]string, len(ids))
		for i := range ids {
			marks[i] = fmt.Sprintf("$%d", i+1)
		}
		if err := s.endLiveRequests(ctx, tx, `id IN (`+strings.Join(marks, ", ")+`)`, ids, access.Revoke, msg, actor, audit.RequestRevoked, now); err != nil {
			return err
		}
		if reported == id && len(carriers) > 0 {
			// Some of its ports were carried by extensions with a later
			// deadline: its removal (Removal.Deadline is expires_at) may
			// say "closed by the kernel" only once those have passed too.
			if _, err := tx.ExecContext(ctx, `UPDATE requests SET expires_at = (SELECT max(expires_at) FROM requests WHERE `+
				`id IN (`+strings.Join(marks, ", ")+`)) WHERE id = $`+fmt.Sprint(len(ids)+1), append(ids, id)...); err != nil {
				return fmt.Errorf("recording the kernel deadline of %s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return Request{}, err
	}
	s.changed(target)
	return s.GetRequest(ctx, reported)
}

// grantCarriers returns the live requests that carry grants of request id
// now, oldest first: grantRequest moves a live grant of the same requester,
// target, source and port to the request that asks for it again (recording
// the port in its extended list), and ends the old request as superseded
// when none is left; the grant may move on again. A later live request of
// the same requester, target and source that extended one of the ports of
// id, or of a request that carried them, carries it.
func grantCarriers(ctx context.Context, tx *sql.Tx, id string) ([]string, error) {
	var (
		target, requester, source string
		approved                  sql.NullInt64
		portsJS                   string
	)
	if err := tx.QueryRowContext(ctx, `SELECT target, requester, source, approved_at, ports FROM requests WHERE id = $1`, id).
		Scan(&target, &requester, &source, &approved, &portsJS); err != nil {
		return nil, fmt.Errorf("reading request %s: %w", id, err)
	}
	if !approved.Valid {
		return nil, nil // never granted: nothing to carry
	}
	ports, err := decodePorts(portsJS)
	if err != nil {
		return nil, fmt.Errorf("decoding ports of %s: %w", id, err)
	}
	carried := map[policy.Port]bool{}
	for _, p := range ports {
		carried[p] = true
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, extended FROM requests
		WHERE target = $1 AND requester = $2 AND source = $3 AND state IN (`+grantStates+`) AND approved_at >= $4 AND id <> $5
		ORDER BY approved_at, created_at, id`, target, requester, source, approved.Int64, id)
	if err != nil {
		return nil, fmt.Errorf("finding the requests that extended %s: %w", id, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var cid, extJS string
		if err := rows.Scan(&cid, &extJS); err != nil {
			return nil, fmt.Errorf("reading extension of %s: %w", id, err)
		}
		ext, err := decodePorts(extJS)
		if err != nil {
			return nil, fmt.Errorf("decoding extended ports of %s: %w", cid, err)
		}
		if slices.ContainsFunc(ext, func(p policy.Port) bool { return carried[p] }) {
			out = append(out, cid)
		}
	}
	return out, rows.Err()
}
