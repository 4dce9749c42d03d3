package store

import (
	"context"
	"fmt"
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
// of the desired state, for a host and for a gateway.
func (s *Store) Desired(ctx context.Context, enforcer string, now time.Time) (Desired, error) {
	t, err := s.GetTarget(ctx, enforcer)
	if err != nil {
		return Desired{}, err
	}
	d := Desired{Revision: t.Revision, Gateway: t.IsGateway()}
	if !d.Gateway {
		if t.Policy != nil {
			d.Targets = []Enforced{{Name: t.Name, Policy: *t.Policy}}
		}
		rows, err := s.db.QueryContext(ctx, `SELECT `+grantColumns+` FROM grants WHERE target = $1 AND expires_at > $2 ORDER BY id`, enforcer, ms(now))
		if err != nil {
			return Desired{}, fmt.Errorf("listing grants of %s: %w", enforcer, err)
		}
		if d.Grants, err = scanGrants(rows); err != nil {
			return Desired{}, err
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
	grows, err := s.db.QueryContext(ctx, `SELECT `+grantColumns+` FROM grants
		WHERE target IN (SELECT name FROM targets WHERE gateway = $1) AND expires_at > $2 ORDER BY id`, enforcer, ms(now))
	if err != nil {
		return Desired{}, fmt.Errorf("listing grants behind %s: %w", enforcer, err)
	}
	gs, err := scanGrants(grows)
	if err != nil {
		return Desired{}, fmt.Errorf("listing grants behind %s: %w", enforcer, err)
	}
	for _, g := range gs {
		if enforced[g.Target] {
			d.Grants = append(d.Grants, g)
		}
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
