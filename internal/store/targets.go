package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/inventory"
	"github.com/jitgate/jitgate/internal/policy"
)

// Agent states of a target.
const (
	AgentNever        = "never"
	AgentConnected    = "connected"
	AgentDisconnected = "disconnected"
)

// Target is a protected server as stored.
type Target struct {
	Name            string
	Labels          map[string]string
	Addresses       []string
	Policy          *policy.Policy
	Revision        int64
	AppliedRevision int64
	AgentState      string
	AgentSeenAt     *time.Time
	AgentError      string
	AgentVersion    string
	CreatedAt       time.Time
	// Gateway is the gateway target enforcing for this one, and Address its
	// first address behind it (Addresses lists them all, see
	// BehindAddresses); both empty for a target with its own agent.
	Gateway, Address string
	// Mode is what the target's agent reports: host or gateway ("" before).
	Mode string
	// PublicAddress is, for a gateway, where clients reach its DNAT mappings.
	PublicAddress string
	// Inventory is the agent's last report of its host (nil before). It is
	// shared between reads of the target (decodeInventory): read it only.
	Inventory *inventory.Host
	// PolicyRemoval is set while the target has no policy because one was
	// removed: removing it re-opens ports, which the enforcing agent
	// confirms as it confirms a revocation (see access.Removal).
	PolicyRemoval *access.Removal
}

// BehindAddresses returns the addresses of a target behind a gateway: all
// of them (Addresses; a dual-stack host has one of each family), or the one
// Address of a row written before targets had several. Nil for a target
// with its own agent.
func (t Target) BehindAddresses() []string {
	switch {
	case t.Gateway == "":
		return nil
	case len(t.Addresses) > 0:
		return t.Addresses
	case t.Address != "":
		return []string{t.Address}
	}
	return nil
}

// IsGateway reports whether the target's agent enforces for targets behind it.
func (t Target) IsGateway() bool { return t.Mode == ModeGateway }

// Agent modes.
const (
	ModeHost    = "host"
	ModeGateway = "gateway"
)

const targetColumns = `name, labels, addresses, policy, revision, applied_revision, agent_state, agent_seen_at, agent_error, agent_version, created_at,
	gateway, address, mode, public_address, inventory, policy_removed_revision, policy_removed_at, policy_removal_confirmed_at`

type scanner interface{ Scan(dest ...any) error }

func scanTarget(r scanner) (Target, error) {
	var (
		t             Target
		labels, addrs string
		pol, inv      sql.NullString
		seen          sql.NullInt64
		created       int64
		polRemovedRev int64
		polRemovedAt  sql.NullInt64
		polConfirmed  sql.NullInt64
	)
	if err := r.Scan(&t.Name, &labels, &addrs, &pol, &t.Revision, &t.AppliedRevision, &t.AgentState, &seen, &t.AgentError, &t.AgentVersion, &created,
		&t.Gateway, &t.Address, &t.Mode, &t.PublicAddress, &inv, &polRemovedRev, &polRemovedAt, &polConfirmed); err != nil {
		return Target{}, err
	}
	var raw *string
	if pol.Valid {
		raw = &pol.String
	}
	d, err := decodeTargetJSON(t.Name, labels, addrs, raw)
	if err != nil {
		return Target{}, err
	}
	t.Labels, t.Addresses, t.Policy = d.labels, d.addrs, d.policy
	if inv.Valid {
		h, err := decodeInventory(t.Name, inv.String)
		if err != nil {
			return Target{}, err
		}
		t.Inventory = h
	}
	t.AgentSeenAt, t.CreatedAt = fromNullMS(seen), fromMS(created)
	if polRemovedRev > 0 && polRemovedAt.Valid {
		t.PolicyRemoval = &access.Removal{Revision: polRemovedRev, At: fromMS(polRemovedAt.Int64), ConfirmedAt: fromNullMS(polConfirmed), Confirmable: true}
	}
	return t, nil
}

// ReissueEnrollToken issues a new one-time enrollment token for the
// existing target name, to re-enroll its host (a reinstalled machine, a
// lost state directory) without removing the target and its policy and
// grants. Unused enrollment tokens of the target stop working; the agent
// credential keeps working until the new token is used (enrolling replaces
// it). A target behind a gateway has no agent of its own: ErrConflict.
func (s *Store) ReissueEnrollToken(ctx context.Context, actor Actor, name string, now time.Time, enrollTTL time.Duration) (string, error) {
	var token string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var gateway sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT gateway FROM targets WHERE name = $1`, name).Scan(&gateway)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading target %s: %w", name, err)
		}
		if gateway.String != "" {
			return fmt.Errorf("target %q is behind gateway %q and has no agent of its own (re-enroll the gateway): %w", name, gateway.String, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'enroll' AND subject = $1`, name); err != nil {
			return fmt.Errorf("retiring the unused enrollment tokens of %s: %w", name, err)
		}
		if token, err = insertToken(ctx, tx, KindEnroll, name, now, enrollTTL); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.EnrollTokenIssued, Target: name,
			Details: map[string]any{"expires_at": now.Add(enrollTTL).UTC().Format(time.RFC3339)}})
	})
	return token, err
}

// CreateTarget enrolls a target and returns its one-time enrollment token.
func (s *Store) CreateTarget(ctx context.Context, actor Actor, name string, labels map[string]string, now time.Time, enrollTTL time.Duration) (Target, string, error) {
	if err := policy.ValidateTargetName(name); err != nil {
		return Target{}, "", err
	}
	if err := policy.ValidateLabels(labels); err != nil {
		return Target{}, "", err
	}
	if labels == nil {
		labels = map[string]string{}
	}
	lb, _ := json.Marshal(labels)
	var token string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM targets WHERE name = $1`, name).Scan(&n); err != nil {
			return fmt.Errorf("checking target: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("target %q already exists: %w", name, ErrConflict)
		}
		// See CreateTargetSpec: a new target never inherits the credential
		// a removed one of the same name left behind.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'agent' AND subject = $1`, name); err != nil {
			return fmt.Errorf("deleting the old agent credential of %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO targets (name, labels, created_at) VALUES ($1, $2, $3)`, name, string(lb), ms(now)); err != nil {
			return fmt.Errorf("inserting target: %w", err)
		}
		var err error
		if token, err = insertToken(ctx, tx, KindEnroll, name, now, enrollTTL); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TargetAdded, Target: name,
			Details: map[string]any{"labels": labels}})
	})
	if err != nil {
		return Target{}, "", err
	}
	t, err := s.GetTarget(ctx, name)
	return t, token, err
}

// GetTarget returns one target.
func (s *Store) GetTarget(ctx context.Context, name string) (Target, error) {
	t, err := scanTarget(s.db.QueryRowContext(s.pointCtx(ctx), `SELECT `+targetColumns+` FROM targets WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Target{}, fmt.Errorf("target %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Target{}, fmt.Errorf("reading target %s: %w", name, err)
	}
	return t, nil
}

// RequestTarget is GetTarget for a new request's handler (api.createRequest):
// only the columns it uses are read, those of the authorization (name,
// labels), the policy (a bastion-only port), the addresses (the source's
// family) and the answer's connection hints (gateway, address, creation
// time); the rest of the Target is left zero. The request's transaction
// reads the target again for its own decisions (targetForRequest). 7
// columns of 19: the driver fetches each column's name and type for every
// statement, and GetTarget decoded the agent's inventory too, on every
// request's path (docs/benchmarks.md §36).
func (s *Store) RequestTarget(ctx context.Context, name string) (Target, error) {
	var (
		t             Target
		labels, addrs string
		pol           sql.NullString
		created       int64
	)
	err := s.db.QueryRowContext(s.pointCtx(ctx), `SELECT name, labels, addresses, policy, gateway, address, created_at FROM targets WHERE name = $1`, name).
		Scan(&t.Name, &labels, &addrs, &pol, &t.Gateway, &t.Address, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Target{}, fmt.Errorf("target %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Target{}, fmt.Errorf("reading target %s: %w", name, err)
	}
	var raw *string
	if pol.Valid {
		raw = &pol.String
	}
	d, err := decodeTargetJSON(t.Name, labels, addrs, raw)
	if err != nil {
		return Target{}, err
	}
	t.Labels, t.Addresses, t.Policy, t.CreatedAt = d.labels, d.addrs, d.policy, fromMS(created)
	return t, nil
}

// ListTargets returns all targets by name.
func (s *Store) ListTargets(ctx context.Context) ([]Target, error) {
	return s.ListTargetsAfter(ctx, "", -1)
}

// ListTargetsAfter is a page of ListTargets (keyset paging): at most limit
// targets (all for limit < 0) whose names sort after after.
func (s *Store) ListTargetsAfter(ctx context.Context, after string, limit int) ([]Target, error) {
	q, args := `SELECT `+targetColumns+` FROM targets WHERE name > $1 ORDER BY name`, []any{after}
	if limit >= 0 {
		q, args = q+` LIMIT $2`, append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing targets: %w", err)
	}
	defer rows.Close()
	var out []Target
	for rows.Next() {
		t, err := scanTarget(rows)
		if err != nil {
			return nil, fmt.Errorf("reading target: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RemoveTarget deletes a target and revokes its live requests. What
// happens to its firewall table, as docs/design.md and 'jitgate target
// remove' say:
//   - A target with its own agent: its agent credential is kept, but every
//     agent call now answers 410 Gone (the target is not found). On its next
//     contact — at once if it is connected, whenever it comes back
//     otherwise — the agent deletes its table (the ports it protected are
//     open again) and its credential, and stops. Until then the kernel keeps
//     the table as it was: protected ports stay closed, and the grants of
//     the revoked requests stay open until their kernel deadline at the
//     latest. No agent will confirm those revocations (removal_enforcer is
//     cleared), so they show as unconfirmed until that deadline. Adding a
//     target of the same name later deletes the old credential first.
//     An agent whose host's table was last programmed by the agent of
//     another target leaves that table alone.
//   - A target behind a gateway: the gateway's revision advances without
//     the target's grants, protection and mappings, and the gateway's agent
//     confirms the revocations as usual.
func (s *Store) RemoveTarget(ctx context.Context, actor Actor, name string, now time.Time) error {
	var gateway string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var behind int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM targets WHERE gateway = $1`, name).Scan(&behind); err != nil {
			return fmt.Errorf("checking targets behind %s: %w", name, err)
		}
		if behind > 0 {
			return fmt.Errorf("%d targets are behind gateway %s: remove them first: %w", behind, name, ErrConflict)
		}
		err := tx.QueryRowContext(ctx, `SELECT gateway FROM targets WHERE name = $1`, name).Scan(&gateway)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading target %s: %w", name, err)
		}
		// End the requests while the target (and so its enforcer) is still
		// known: their removals are recorded against the enforcer's revision.
		if err := s.endLiveRequests(ctx, tx, `target = $1`, []any{name}, access.Revoke, "target removed", actor, audit.RequestRevoked, now); err != nil {
			return err
		}
		if gateway != "" {
			// The gateway stops protecting and mapping the target.
			if _, err := bumpRevision(ctx, tx, gateway); err != nil {
				return err
			}
		} else {
			// The agent of a removed target stands down instead of
			// reporting: none of its removals will be confirmed.
			if _, err := tx.ExecContext(ctx, `UPDATE requests SET removal_enforcer = '' WHERE removal_enforcer = $1 AND removal_confirmed_at IS NULL`, name); err != nil {
				return fmt.Errorf("marking removals of %s unconfirmable: %w", name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM mappings WHERE target = $1`, name); err != nil {
			return fmt.Errorf("deleting mappings of %s: %w", name, err)
		}
		// Its schedules go with it: a host enrolled later under the same
		// name must not inherit its recurring access.
		if err := s.deleteSchedulesOf(ctx, tx, name, actor, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM targets WHERE name = $1`, name); err != nil {
			return fmt.Errorf("deleting target: %w", err)
		}
		// The agent credential stays (see above): it now only earns 410.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'enroll' AND subject = $1`, name); err != nil {
			return fmt.Errorf("deleting the enrollment token of %s: %w", name, err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TargetRemoved, Target: name})
	})
	if err == nil && gateway != "" {
		s.changed(name, gateway)
	} else if err == nil {
		s.changed(name) // wakes the agent's long-poll, which answers 410
	}
	return err
}

// SetPolicy replaces a target's policy (already normalised by the caller).
// Setting the policy it already has changes nothing and reports false.
func (s *Store) SetPolicy(ctx context.Context, actor Actor, name string, pol policy.Policy, now time.Time) (bool, error) {
	res, err := s.SetPolicyWith(ctx, actor, name, pol, now, PolicyOptions{})
	return res.Changed, err
}

// PolicyOptions change how SetPolicyWith replaces a policy.
type PolicyOptions struct {
	// DryRun runs every check (placement, mapped ports) in a transaction
	// that is then rolled back: nothing is written, no revision is bumped,
	// no audit event is recorded.
	DryRun bool
	// KeepExisting leaves a target that already has a policy alone (bulk
	// actions never overwrite one); the outcome says Kept. It is decided
	// in the same transaction as the write, so a policy set concurrently
	// is not overwritten either.
	KeepExisting bool
	// Compare, when set, lists the changes from the old policy; the audit
	// event records those that weaken the gate ("weakened"), so that the
	// trail says it too. The API passes policy.Limits.Compare.
	Compare func(old *policy.Policy, pol policy.Policy) []policy.Change
	// Precondition, when set, is asked about the target's policy as the
	// transaction read it (nil: none) before anything is written; its error
	// ends the call and nothing changes. The API checks an If-Match here,
	// so two editors cannot overwrite each other's policy.
	Precondition func(old *policy.Policy) error
}

// PolicyOutcome is what SetPolicyWith did, or in a dry run would do.
type PolicyOutcome struct {
	// Old is the policy the target had (nil: none).
	Old *policy.Policy
	// Changed is false when the target already had this policy, or kept
	// its own (Kept).
	Changed bool
	Kept    bool
	// Stored is the target's policy after the call (in a dry run: as it
	// is), as stored: its entity tag is the API's ETag.
	Stored *policy.Policy
}

// errDryRun rolls a dry run's transaction back.
var errDryRun = errors.New("dry run")

// SetPolicyWith replaces a target's policy (already normalised by the
// caller) as SetPolicy does, with options.
func (s *Store) SetPolicyWith(ctx context.Context, actor Actor, name string, pol policy.Policy, now time.Time, opts PolicyOptions) (PolicyOutcome, error) {
	var out PolicyOutcome
	err := s.tx(ctx, func(tx *sql.Tx) error {
		t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading target %s: %w", name, err)
		}
		out.Old, out.Stored = t.Policy, t.Policy
		if opts.Precondition != nil {
			if err := opts.Precondition(t.Policy); err != nil {
				return err
			}
		}
		if t.Policy != nil && opts.KeepExisting {
			out.Kept = true
			return nil
		}
		if t.Policy != nil && t.Policy.Equal(pol) {
			return nil
		}
		if err := checkPolicyPlacement(t, pol); err != nil {
			return err
		}
		if err := dropUnpublished(ctx, tx, name, &pol); err != nil {
			return err
		}
		if t.Gateway != "" {
			if err := allocateMappings(ctx, tx, t.Gateway, name, pol); err != nil {
				return err
			}
		}
		if opts.DryRun {
			out.Changed = true
			return errDryRun
		}
		b, err := json.Marshal(pol)
		if err != nil {
			return fmt.Errorf("encoding policy: %w", err)
		}
		// A new policy ends any pending policy removal: the target is
		// protected again from this revision on.
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET policy = $1, policy_removed_revision = 0, policy_removed_at = NULL,
			policy_removal_confirmed_at = NULL WHERE name = $2`, string(b), name); err != nil {
			return fmt.Errorf("updating policy of %s: %w", name, err)
		}
		if err := policyBump(ctx, tx, t, pol, now); err != nil {
			return err
		}
		out.Changed, out.Stored = true, &pol
		ports := make([]string, len(pol.Rules))
		for i, r := range pol.Rules {
			ports[i] = r.Port.String()
		}
		details := map[string]any{"ports": ports, "policy": json.RawMessage(b)}
		if opts.Compare != nil {
			var weakened []string
			for _, c := range policy.Weaker(opts.Compare(t.Policy, pol)) {
				weakened = append(weakened, c.String())
			}
			if len(weakened) > 0 {
				details["weakened"] = weakened
			}
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.PolicySet, Target: name,
			Details: details})
	})
	if errors.Is(err, errDryRun) {
		return out, nil
	}
	if err == nil && out.Changed {
		s.changed(name)
	}
	return out, err
}

// RemovePolicy removes a target's policy: its ports are no longer protected
// once its agent applies the new revision; until the agent confirms it,
// Target.PolicyRemoval says the removal is unconfirmed.
func (s *Store) RemovePolicy(ctx context.Context, actor Actor, name string, now time.Time) error {
	return s.RemovePolicyIf(ctx, actor, name, now, nil)
}

// RemovePolicyIf is RemovePolicy run only when precondition (nil: none)
// accepts the policy the target has, checked in the write transaction, as
// PolicyOptions.Precondition is for SetPolicyWith: the API's If-Match, so
// that a removal confirmed against one policy does not remove another
// editor's newer one.
func (s *Store) RemovePolicyIf(ctx context.Context, actor Actor, name string, now time.Time, precondition func(old *policy.Policy) error) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var pol sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT policy FROM targets WHERE name = $1`, name).Scan(&pol)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading target %s: %w", name, err)
		}
		if !pol.Valid {
			return fmt.Errorf("target %q has no policy: %w", name, ErrNotFound)
		}
		if precondition != nil {
			var old policy.Policy
			if err := json.Unmarshal([]byte(pol.String), &old); err != nil {
				return fmt.Errorf("decoding policy of %s: %w", name, err)
			}
			if err := precondition(&old); err != nil {
				return err
			}
		}
		rev, err := bumpRevision(ctx, tx, name)
		if err != nil {
			return err
		}
		if err := dropUnpublished(ctx, tx, name, nil); err != nil {
			return err
		}
		// Removing the policy re-opens ports: a change its agent confirms
		// by reporting rev (see confirmRemovals).
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET policy = NULL, policy_removed_revision = $1, policy_removed_at = $2,
			policy_removal_confirmed_at = NULL WHERE name = $3`, rev, ms(now), name); err != nil {
			return fmt.Errorf("removing policy of %s: %w", name, err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.PolicyRemoved, Target: name})
	})
	if err == nil {
		s.changed(name)
	}
	return err
}

// checkPolicyPlacement refuses what a target's placement cannot enforce:
// published ports and family-crossing sources need a gateway; a target
// behind a gateway is reached over its addresses' families only (no NAT64),
// so every allowed source must be of the family of one of its addresses.
func checkPolicyPlacement(t Target, pol policy.Policy) error {
	var has4, has6 bool
	for _, s := range t.BehindAddresses() {
		if a, err := netip.ParseAddr(s); err == nil {
			has4, has6 = has4 || a.Is4(), has6 || a.Is6()
		}
	}
	for i, r := range pol.Rules {
		field := fmt.Sprintf("rules[%d]", i)
		if r.Publish && t.Gateway == "" {
			return &policy.FieldError{Field: field + ".publish", Reason: fmt.Sprintf("%s is not behind a gateway: only such targets have ports to publish", t.Name)}
		}
		if t.Gateway == "" || !(has4 || has6) {
			continue
		}
		for j, src := range r.AllowedSources {
			if src.Addr().Is4() && !has4 || src.Addr().Is6() && !has6 {
				fam := "IPv4"
				if has6 {
					fam = "IPv6"
				}
				return &policy.FieldError{Field: fmt.Sprintf("%s.allowed_sources[%d]", field, j),
					Reason: fmt.Sprintf("%s cannot reach %s at its %s address %s", src, t.Name, fam, strings.Join(t.BehindAddresses(), ", "))}
			}
		}
	}
	return nil
}

// policyBump advances the revision of t's enforcer for t's new policy pol,
// in the transaction that writes it. For a host target (its own enforcer)
// the change is logged as a rule change (changeRules) with the live grants
// whose kernel or bastion entries the new rules change: those on a port
// whose rule appeared, went, or now opens another way (Access). An agent
// is then sent the new protected ports and those grants only, not the whole
// state. A target behind a gateway, or a gateway (whose protected ports
// and mappings come from every target behind it), is logged as needing a
// snapshot, as before.
func policyBump(ctx context.Context, tx *sql.Tx, t Target, pol policy.Policy, now time.Time) error {
	if t.Gateway != "" || t.IsGateway() {
		_, err := bumpRevision(ctx, tx, t.Name)
		return err
	}
	owner, rev, err := bump(ctx, tx, t.Name, changeRules)
	if err != nil {
		return err
	}
	var old policy.Policy
	if t.Policy != nil {
		old = *t.Policy
	}
	for _, p := range entryPortsChanged(old, pol) {
		rows, err := tx.QueryContext(ctx, `SELECT id FROM grants WHERE target = $1 AND protocol = $2 AND port = $3 AND expires_at > $4`,
			t.Name, string(p.Protocol), int(p.Number), ms(now))
		if err != nil {
			return fmt.Errorf("reading the grants of %s on %s: %w", t.Name, p, err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("reading the grants of %s on %s: %w", t.Name, p, err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading the grants of %s on %s: %w", t.Name, p, err)
		}
		for _, id := range ids {
			if err := logGrant(ctx, tx, owner, rev, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// entryPortsChanged lists the ports on which a grant opens differently
// under policy b than under a: a rule on one side only, or another Access.
// (The rest of a rule shapes the protected port, sent whole with a rule
// change, or the next request, not the entries of a grant.)
func entryPortsChanged(a, b policy.Policy) []policy.Port {
	var out []policy.Port
	seen := map[policy.Port]bool{}
	for _, p := range [][]policy.Rule{a.Rules, b.Rules} {
		for _, r := range p {
			if seen[r.Port] {
				continue
			}
			seen[r.Port] = true
			ra, okA := a.Rule(r.Port)
			rb, okB := b.Rule(r.Port)
			if okA != okB || ra.Access != rb.Access {
				out = append(out, r.Port)
			}
		}
	}
	return out
}

// decodedInventories keeps the last decoded inventory of each target by its
// stored text: every read of a target (each agent poll answer, each request)
// decoded the agent's inventory (sockets, routes, host keys), which almost
// no caller reads: 4 % of the server's CPU under load. A Target's Inventory
// is shared between reads and must not be modified (no caller does).
var decodedInventories = struct {
	sync.Mutex
	m map[string]decodedInventory
}{m: map[string]decodedInventory{}}

type decodedInventory struct {
	raw  string
	host *inventory.Host
}

// maxDecodedInventories bounds decodedInventories (it is emptied beyond).
const maxDecodedInventories = 1 << 16

func decodeInventory(target, raw string) (*inventory.Host, error) {
	decodedInventories.Lock()
	d, ok := decodedInventories.m[target]
	decodedInventories.Unlock()
	if ok && d.raw == raw {
		return d.host, nil
	}
	h := new(inventory.Host)
	if err := json.Unmarshal([]byte(raw), h); err != nil {
		return nil, fmt.Errorf("decoding inventory of %s: %w", target, err)
	}
	decodedInventories.Lock()
	if len(decodedInventories.m) >= maxDecodedInventories {
		decodedInventories.m = map[string]decodedInventory{}
	}
	decodedInventories.m[target] = decodedInventory{raw: raw, host: h}
	decodedInventories.Unlock()
	return h, nil
}
