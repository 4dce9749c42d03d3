package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// Desired is an enforcer's desired state at an instant, as the store holds
// it: what its agent must enforce, in the domain's terms. The API turns it
// into the agent's entries; host and gateway mode are read alike.
type Desired struct {
	// Revision is the enforcer's, read before anything else: a change
	// committed between the reads carries a higher revision, so an agent
	// that applies this and reports Revision can never activate a request
	// whose grant it lacks.
	Revision int64
	// Gateway is set when the enforcer is a gateway: Targets are then the
	// targets behind it.
	Gateway bool
	// Targets are the targets the enforcer gates that have a policy: itself
	// (host mode) or those behind it, in name order.
	Targets []Enforced
	// Grants are the live grants on those targets at the instant, by id
	// (host mode: every live grant of the target).
	Grants []GrantRow
	// Published are the gateway's installed mappings of those targets.
	Published []Mapping
}

// Enforced is one target an enforcer gates.
type Enforced struct {
	Name   string
	Policy policy.Policy
	// Addresses are the addresses of a target behind a gateway, every one
	// of which is gated (nil in host mode: the host itself).
	Addresses []string
}

// Desired returns what enforcer's agent must enforce at now: the one read
// of the desired state, for a host and for a gateway. It holds every grant
// in memory; the agent's snapshot streams them instead (DesiredHead and
// DesiredGrants).
func (s *Store) Desired(ctx context.Context, enforcer string, now time.Time) (Desired, error) {
	d, err := s.DesiredHead(ctx, enforcer, now)
	if err != nil {
		return Desired{}, err
	}
	err = s.DesiredGrants(ctx, enforcer, d, now, func(gs []GrantRow) error {
		d.Grants = append(d.Grants, gs...)
		return nil
	})
	return d, err
}

// DesiredHead is Desired without the grants: the revision (read first), the
// enforced targets and their policies, the mappings. DesiredGrants reads
// the grants that go with it.
func (s *Store) DesiredHead(ctx context.Context, enforcer string, now time.Time) (Desired, error) {
	d, err := s.desiredHead(ctx, enforcer)
	if err != nil {
		return Desired{}, err
	}
	// The agent opens what it is told: only what is durable (syncer.go).
	if err := s.durable(ctx); err != nil {
		return Desired{}, err
	}
	return d, nil
}

func (s *Store) desiredHead(ctx context.Context, enforcer string) (Desired, error) {
	t, err := s.GetTarget(ctx, enforcer)
	if err != nil {
		return Desired{}, err
	}
	d := Desired{Revision: t.Revision, Gateway: t.IsGateway()}
	if !d.Gateway {
		if t.Policy != nil {
			d.Targets = []Enforced{{Name: t.Name, Policy: *t.Policy}}
		}
		return d, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE gateway = $1 AND policy IS NOT NULL ORDER BY name`, enforcer)
	if err != nil {
		return Desired{}, fmt.Errorf("listing targets behind %s: %w", enforcer, err)
	}
	enforced := map[string]bool{}
	for rows.Next() {
		bt, err := scanTarget(rows)
		if err != nil {
			rows.Close()
			return Desired{}, fmt.Errorf("reading target behind %s: %w", enforcer, err)
		}
		d.Targets = append(d.Targets, Enforced{Name: bt.Name, Policy: *bt.Policy, Addresses: bt.BehindAddresses()})
		enforced[bt.Name] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Desired{}, fmt.Errorf("listing targets behind %s: %w", enforcer, err)
	}
	ms, err := s.Mappings(ctx, enforcer, true)
	if err != nil {
		return Desired{}, err
	}
	for _, m := range ms {
		if enforced[m.Target] && m.Published() {
			d.Published = append(d.Published, m)
		}
	}
	return d, nil
}

// desiredChunk is how many grants DesiredGrants reads per query.
var desiredChunk = 10000

// DesiredGrants hands each of the grants live at now that go with head (of
// DesiredHead) to each, in id order, desiredChunk at a time: one query per
// chunk, from the id after the last one read (keyset), so that no query
// holds a connection or a read transaction for the whole state and no
// caller holds every grant at once. The slice is reused: each must not
// keep it. A grant committed after head was read may be included (its
// revision is above head's, so the agent asks again anyway); one removed
// meanwhile may be missing or not, as with one query.
func (s *Store) DesiredGrants(ctx context.Context, enforcer string, head Desired, now time.Time, each func([]GrantRow) error) error {
	// Only the columns the snapshot reads: a host's rows are all its own
	// (no target column), and whose grant it is (request, requester) only
	// a rule reached through the bastion needs. At a million grants each
	// text column read costs the server ~0.2 s of an agent's restart.
	owner := false
	for _, e := range head.Targets {
		for _, r := range e.Policy.Rules {
			owner = owner || r.Access.Bastion()
		}
	}
	cols := desiredColumns(head.Gateway, owner)
	query := `SELECT ` + cols + ` FROM grants WHERE target = $1 AND expires_at > $2 AND id > $3 ORDER BY id LIMIT $4`
	var enforced map[string]bool
	if head.Gateway {
		query = `SELECT ` + cols + ` FROM grants
		WHERE target IN (SELECT name FROM targets WHERE gateway = $1) AND expires_at > $2 AND id > $3 ORDER BY id LIMIT $4`
		enforced = map[string]bool{}
		for _, e := range head.Targets {
			enforced[e.Name] = true
		}
	}
	var (
		after int64
		gs    []GrantRow
	)
	for {
		rows, err := s.db.QueryContext(ctx, query, enforcer, ms(now), after, desiredChunk)
		if err != nil {
			return fmt.Errorf("listing grants of %s: %w", enforcer, err)
		}
		if gs, err = scanDesiredGrants(rows, gs[:0], enforcer, head.Gateway, owner); err != nil {
			return fmt.Errorf("listing grants of %s: %w", enforcer, err)
		}
		if len(gs) == 0 {
			return nil
		}
		after = gs[len(gs)-1].ID
		full := len(gs) == desiredChunk
		if head.Gateway {
			gs = slices.DeleteFunc(gs, func(g GrantRow) bool { return !enforced[g.Target] })
		}
		if len(gs) > 0 {
			// The agent opens what it is told: only what is durable
			// (syncer.go).
			if err := s.durable(ctx); err != nil {
				return err
			}
			if err := each(gs); err != nil {
				return err
			}
		}
		if !full {
			return nil
		}
	}
}

// desiredColumns are the columns DesiredGrants reads (scanDesiredGrants):
// the target behind a gateway (a host's rows are its own), whose grant it
// is when a rule is reached through the bastion (owner).
func desiredColumns(gateway, owner bool) string {
	cols := `id, source, protocol, port, expires_at`
	if gateway {
		cols += `, target`
	}
	if owner {
		cols += `, request_id, requester`
	}
	return cols
}

// scanDesiredGrants reads rows of desiredColumns(gateway, owner) into gs
// (reused: a chunk of a million grants' snapshot at a time) and closes
// them; a host's rows get enforcer as their target.
func scanDesiredGrants(rows *sql.Rows, gs []GrantRow, enforcer string, gateway, owner bool) ([]GrantRow, error) {
	defer rows.Close()
	var (
		g          GrantRow
		src, proto string
		port       int
		exp        int64
	)
	dest := []any{&g.ID, &src, &proto, &port, &exp}
	if gateway {
		dest = append(dest, &g.Target)
	}
	if owner {
		dest = append(dest, &g.RequestID, &g.Requester)
	}
	for rows.Next() {
		g = GrantRow{Target: enforcer}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("reading grant: %w", err)
		}
		var err error
		if g.Source, err = parseSource(src); err != nil {
			return nil, fmt.Errorf("decoding grant source %q: %w", src, err)
		}
		g.Port, g.ExpiresAt = policy.Port{Number: uint16(port), Protocol: policy.Protocol(proto)}, fromMS(exp)
		gs = append(gs, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading grants: %w", err)
	}
	return gs, nil
}
