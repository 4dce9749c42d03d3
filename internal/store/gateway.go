package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/alert"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/inventory"
	"github.com/jitgate/jitgate/internal/policy"
)

// TargetSpec describes a target to enroll.
type TargetSpec struct {
	Name   string
	Labels map[string]string
	// Gateway and Addresses place the target behind a gateway target,
	// which enforces for it; such a target needs no agent and gets no
	// enrollment token. A dual-stack host has an address of each family:
	// every one is gated.
	Gateway   string
	Addresses []string
	// PublicAddress is, for a gateway, where clients reach its mappings.
	PublicAddress string
}

// MaxGatewayAddresses bounds the addresses of one target behind a gateway.
const MaxGatewayAddresses = 16

// MappedPortMin and MappedPortMax are where mapped ports are allocated on
// each gateway (the policy refuses explicit ones outside).
const (
	MappedPortMin = policy.MappedPortMin
	MappedPortMax = policy.MappedPortMax
)

// readGateway reads gw and checks it can enforce for targets behind it: it
// exists, is not itself behind a gateway, its agent runs in gateway mode
// and has reported its routes.
func readGateway(ctx context.Context, tx *sql.Tx, gw string) (Target, error) {
	g, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, gw))
	if errors.Is(err, sql.ErrNoRows) {
		return Target{}, &policy.FieldError{Field: "gateway", Reason: fmt.Sprintf("no target %q", gw)}
	}
	if err != nil {
		return Target{}, fmt.Errorf("reading gateway %s: %w", gw, err)
	}
	if g.Gateway != "" {
		return Target{}, &policy.FieldError{Field: "gateway", Reason: fmt.Sprintf("%s is itself behind gateway %s", gw, g.Gateway)}
	}
	if !g.IsGateway() {
		return Target{}, &policy.FieldError{Field: "gateway", Reason: fmt.Sprintf("%s is not a gateway: its agent must run with --mode gateway (it reports %q)", gw, orNone(g.Mode))}
	}
	if g.Inventory == nil || len(g.Inventory.Routes) == 0 {
		return Target{}, &policy.FieldError{Field: "address", Reason: fmt.Sprintf("gateway %s has not reported its routes yet", gw)}
	}
	return g, nil
}

// checkBehindGateway validates one address of a target placed behind
// gateway g: the gateway routes it, it is not one of the gateway's own
// addresses (traffic to those is not forwarded, so the forward-path gate
// never sees it), and it is not on the gateway's client side (clients
// there reach it directly: see inventory.ClientSide).
func checkBehindGateway(g Target, field, addr string) (netip.Addr, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, &policy.FieldError{Field: field, Reason: fmt.Sprintf("%q is not an IPv4 or IPv6 address", addr)}
	}
	a = a.Unmap()
	if !a.IsGlobalUnicast() {
		return netip.Addr{}, &policy.FieldError{Field: field, Reason: fmt.Sprintf("%s is not a unicast address a gateway forwards to", a)}
	}
	routed := slices.ContainsFunc(g.Inventory.Routes, func(r string) bool {
		p, err := netip.ParsePrefix(r)
		return err == nil && p.Contains(a)
	})
	if !routed {
		return netip.Addr{}, &policy.FieldError{Field: field, Reason: fmt.Sprintf("%s is not routed by gateway %s (it routes %s)", a, g.Name, strings.Join(g.Inventory.Routes, ", "))}
	}
	for _, own := range g.Addresses {
		if o, err := netip.ParseAddr(own); err == nil && o.Unmap() == a {
			return netip.Addr{}, &policy.FieldError{Field: field, Reason: fmt.Sprintf("%s is an address of gateway %s itself: a gateway gates what it forwards, not its own services", a, g.Name)}
		}
	}
	public, _ := netip.ParseAddr(g.PublicAddress)
	if b, ok := inventory.ClientSide(g.Inventory, public, a); ok {
		return netip.Addr{}, &policy.FieldError{Field: field, Reason: b.Explain(g.Name) + "; place it on a network behind the gateway"}
	}
	return a, nil
}

func orNone(s string) string {
	if s == "" {
		return "nothing yet"
	}
	return s
}

// CreateTargetSpec enrolls a target. It returns the one-time enrollment
// token, or "" for a target behind a gateway (it has no agent).
func (s *Store) CreateTargetSpec(ctx context.Context, actor Actor, spec TargetSpec, now time.Time, enrollTTL time.Duration) (Target, string, error) {
	if err := policy.ValidateTargetName(spec.Name); err != nil {
		return Target{}, "", err
	}
	if err := policy.ValidateLabels(spec.Labels); err != nil {
		return Target{}, "", err
	}
	if (spec.Gateway == "") != (len(spec.Addresses) == 0) {
		return Target{}, "", &policy.FieldError{Field: "address", Reason: "a target behind a gateway needs both gateway and address"}
	}
	if len(spec.Addresses) > MaxGatewayAddresses {
		return Target{}, "", &policy.FieldError{Field: "addresses", Reason: fmt.Sprintf("at most %d addresses", MaxGatewayAddresses)}
	}
	if spec.PublicAddress != "" {
		if _, err := netip.ParseAddr(spec.PublicAddress); err != nil {
			return Target{}, "", &policy.FieldError{Field: "public_address", Reason: fmt.Sprintf("%q is not an address", spec.PublicAddress)}
		}
	}
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	lb, _ := json.Marshal(spec.Labels)
	var token string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM targets WHERE name = $1`, spec.Name).Scan(&n); err != nil {
			return fmt.Errorf("checking target: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("target %q already exists: %w", spec.Name, ErrConflict)
		}
		addrs := []string{}
		if spec.Gateway != "" {
			g, err := readGateway(ctx, tx, spec.Gateway)
			if err != nil {
				return err
			}
			taken, err := addressesBehind(ctx, tx, spec.Gateway)
			if err != nil {
				return err
			}
			for i, raw := range spec.Addresses {
				field := "address"
				if len(spec.Addresses) > 1 {
					field = fmt.Sprintf("addresses[%d]", i)
				}
				a, err := checkBehindGateway(g, field, raw)
				if err != nil {
					return err
				}
				if slices.Contains(addrs, a.String()) {
					return &policy.FieldError{Field: field, Reason: fmt.Sprintf("%s is listed twice", a)}
				}
				if other, ok := taken[a.String()]; ok {
					return fmt.Errorf("target %s behind %s already has address %s: %w", other, spec.Gateway, a, ErrConflict)
				}
				addrs = append(addrs, a.String())
			}
		}
		// A removed target of the same name keeps its agent credential (it
		// tells the old agent to stand down, see RemoveTarget); the new
		// target must not inherit it.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'agent' AND subject = $1`, spec.Name); err != nil {
			return fmt.Errorf("deleting the old agent credential of %s: %w", spec.Name, err)
		}
		al, _ := json.Marshal(addrs)
		if _, err := tx.ExecContext(ctx, `INSERT INTO targets (name, labels, created_at, gateway, address, addresses, public_address) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			spec.Name, string(lb), ms(now), spec.Gateway, firstOr(addrs, ""), string(al), spec.PublicAddress); err != nil {
			return fmt.Errorf("inserting target: %w", err)
		}
		if spec.Gateway == "" {
			var err error
			if token, err = insertToken(ctx, tx, KindEnroll, spec.Name, now, enrollTTL); err != nil {
				return err
			}
		}
		details := map[string]any{"labels": spec.Labels}
		if spec.Gateway != "" {
			details["gateway"], details["address"], details["addresses"] = spec.Gateway, addrs[0], addrs
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TargetAdded, Target: spec.Name, Details: details})
	})
	if err != nil {
		return Target{}, "", err
	}
	t, err := s.GetTarget(ctx, spec.Name)
	return t, token, err
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// addressesBehind maps every address of the targets behind gw to its target.
func addressesBehind(ctx context.Context, tx *sql.Tx, gw string) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE gateway = $1`, gw)
	if err != nil {
		return nil, fmt.Errorf("listing targets behind %s: %w", gw, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		t, err := scanTarget(rows)
		if err != nil {
			return nil, fmt.Errorf("reading target behind %s: %w", gw, err)
		}
		for _, a := range t.BehindAddresses() {
			out[a] = t.Name
		}
	}
	return out, rows.Err()
}

// allocateMappings gives every published rule of target (behind gw) a
// mapped port on gw: the one the rule asks for, else the one it had, else the
// lowest free one. Mappings stay stable per (target, protocol, port).
func allocateMappings(ctx context.Context, tx *sql.Tx, gw, target string, pol policy.Policy) error {
	for _, r := range pol.Rules {
		if !r.Publish {
			continue
		}
		var current int
		err := tx.QueryRowContext(ctx, `SELECT mapped_port FROM mappings WHERE target = $1 AND protocol = $2 AND port = $3`,
			target, string(r.Protocol), int(r.Number)).Scan(&current)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reading mapping: %w", err)
		}
		want := int(r.MappedPort)
		if want == 0 && current != 0 {
			continue
		}
		if want != 0 && want == current {
			continue
		}
		if want != 0 {
			var owner string
			var port int
			err := tx.QueryRowContext(ctx, `SELECT target, port FROM mappings WHERE gateway = $1 AND protocol = $2 AND mapped_port = $3`,
				gw, string(r.Protocol), want).Scan(&owner, &port)
			if err == nil {
				return fmt.Errorf("mapped port %d/%s of gateway %s is taken by %s %d/%s: %w", want, r.Protocol, gw, owner, port, r.Protocol, ErrConflict)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("checking mapped port: %w", err)
			}
		} else {
			rows, err := tx.QueryContext(ctx, `SELECT mapped_port FROM mappings WHERE gateway = $1 AND protocol = $2 ORDER BY mapped_port`, gw, string(r.Protocol))
			if err != nil {
				return fmt.Errorf("listing mapped ports: %w", err)
			}
			want = MappedPortMin
			for rows.Next() {
				var p int
				if err := rows.Scan(&p); err != nil {
					rows.Close()
					return fmt.Errorf("listing mapped ports: %w", err)
				}
				if p == want {
					want++
				}
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return fmt.Errorf("listing mapped ports: %w", err)
			}
			if want > MappedPortMax {
				return fmt.Errorf("gateway %s has no free mapped port left in %d-%d: %w", gw, MappedPortMin, MappedPortMax, ErrConflict)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO mappings (gateway, target, protocol, port, mapped_port) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (target, protocol, port) DO UPDATE SET mapped_port = excluded.mapped_port, gateway = excluded.gateway`,
			gw, target, string(r.Protocol), int(r.Number), want); err != nil {
			return fmt.Errorf("storing mapping: %w", err)
		}
	}
	return nil
}

// dropUnpublished deletes target's mappings whose port pol does not publish
// (nil pol: all of them). Unpublishing a port must end its DNAT mapping and
// the contact information shown for it; a mapping left behind would keep
// being installed on the gateway (and, for a port no longer protected at
// all, make the gateway's whole ruleset invalid).
func dropUnpublished(ctx context.Context, tx *sql.Tx, target string, pol *policy.Policy) error {
	rows, err := tx.QueryContext(ctx, `SELECT protocol, port FROM mappings WHERE target = $1`, target)
	if err != nil {
		return fmt.Errorf("listing mappings of %s: %w", target, err)
	}
	var stale []policy.Port
	for rows.Next() {
		var (
			proto string
			port  int
		)
		if err := rows.Scan(&proto, &port); err != nil {
			rows.Close()
			return fmt.Errorf("reading mapping: %w", err)
		}
		p := policy.Port{Number: uint16(port), Protocol: policy.Protocol(proto)}
		if pol == nil || !slices.ContainsFunc(pol.Rules, func(r policy.Rule) bool { return r.Publish && r.Port == p }) {
			stale = append(stale, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing mappings of %s: %w", target, err)
	}
	for _, p := range stale {
		if _, err := tx.ExecContext(ctx, `DELETE FROM mappings WHERE target = $1 AND protocol = $2 AND port = $3`, target, string(p.Protocol), int(p.Number)); err != nil {
			return fmt.Errorf("deleting mapping of %s %s: %w", target, p, err)
		}
	}
	return nil
}

// Mapping is a published port of a target behind a gateway.
type Mapping struct {
	Gateway, Target string
	Port            policy.Port
	MappedPort      uint16
	PublicAddress   string
	// Destination is the target's address the mapping forwards to: its
	// first address of the public address's family ("" when it has none,
	// or the gateway has no public address: then nothing is published).
	Destination string
}

// Published reports whether the gateway installs the mapping.
func (m Mapping) Published() bool { return m.PublicAddress != "" && m.Destination != "" }

// AddressOfFamily returns the first address in addrs of the family of
// like (IPv6 when v6), or "".
func AddressOfFamily(addrs []string, v6 bool) string {
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() == v6 {
			return s
		}
	}
	return ""
}

// Mappings lists the mappings of a target (or of every target behind a
// gateway when gateway is true).
func (s *Store) Mappings(ctx context.Context, name string, gateway bool) ([]Mapping, error) {
	col := "m.target"
	if gateway {
		col = "m.gateway"
	}
	rows, err := s.db.QueryContext(ctx, `SELECT m.gateway, m.target, m.protocol, m.port, m.mapped_port, g.public_address, t.address, t.addresses
		FROM mappings m JOIN targets g ON g.name = m.gateway JOIN targets t ON t.name = m.target WHERE `+col+` = $1 ORDER BY m.target, m.port`, name)
	if err != nil {
		return nil, fmt.Errorf("listing mappings: %w", err)
	}
	defer rows.Close()
	var out []Mapping
	for rows.Next() {
		var (
			m              Mapping
			proto          string
			port, mapped   int
			address, addrs string
		)
		if err := rows.Scan(&m.Gateway, &m.Target, &proto, &port, &mapped, &m.PublicAddress, &address, &addrs); err != nil {
			return nil, fmt.Errorf("reading mapping: %w", err)
		}
		m.Port, m.MappedPort = policy.Port{Number: uint16(port), Protocol: policy.Protocol(proto)}, uint16(mapped)
		t := Target{Gateway: m.Gateway, Address: address}
		if err := json.Unmarshal([]byte(addrs), &t.Addresses); err != nil {
			return nil, fmt.Errorf("decoding addresses of %s: %w", m.Target, err)
		}
		if pub, err := netip.ParseAddr(m.PublicAddress); err == nil {
			m.Destination = AddressOfFamily(t.BehindAddresses(), pub.Unmap().Is6())
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RecordAgentReport stores what an agent reports besides its revision: its
// mode, inventory and blocked-attempt counters and samples. A source seen
// threshold times or more within an hour on one target raises an audited
// "possible brute force" event, at most once an hour per source.
func (s *Store) RecordAgentReport(ctx context.Context, target string, r AgentReport, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return s.recordAgentReport(ctx, tx, target, r, now) })
}

// recordAgentReport is RecordAgentReport inside the caller's transaction.
func (s *Store) recordAgentReport(ctx context.Context, tx *sql.Tx, target string, r AgentReport, now time.Time) error {
	if r.Mode != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET mode = $1 WHERE name = $2`, r.Mode, target); err != nil {
			return fmt.Errorf("recording mode: %w", err)
		}
	}
	if r.Inventory != nil {
		b, _ := json.Marshal(r.Inventory)
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET inventory = $1 WHERE name = $2`, string(b), target); err != nil {
			return fmt.Errorf("recording inventory: %w", err)
		}
	}
	for _, c := range r.Blocked {
		if _, err := tx.ExecContext(ctx, `INSERT INTO blocked_counters (target, destination, protocol, port, packets, connections, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (target, destination, protocol, port)
				DO UPDATE SET packets = excluded.packets, connections = excluded.connections, updated_at = excluded.updated_at`,
			target, c.Destination, c.Protocol, int(c.Port), int64(c.Packets), int64(c.Connections), ms(now)); err != nil {
			return fmt.Errorf("recording blocked counters: %w", err)
		}
	}
	hour := now.Truncate(time.Hour)
	for _, b := range r.BlockedSources {
		if b.Count <= 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO blocked_sources (target, destination, protocol, port, source, hour, count, last_seen)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (target, destination, protocol, port, source, hour)
				DO UPDATE SET count = blocked_sources.count + excluded.count, last_seen = excluded.last_seen`,
			target, b.Destination, b.Protocol, int(b.Port), b.Source, ms(hour), b.Count, ms(b.LastSeen)); err != nil {
			return fmt.Errorf("recording blocked sources: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM blocked_sources WHERE hour < $1`, ms(now.Add(-25*time.Hour))); err != nil {
		return fmt.Errorf("pruning blocked sources: %w", err)
	}
	if len(r.BlockedSources) == 0 || s.cfg.BruteForceThreshold <= 0 {
		return nil
	}
	// Whether a source is suspect is alert.BruteForce's to decide; the
	// store only adds up its attempts within the window and remembers
	// its last alert.
	rows, err := tx.QueryContext(ctx, `SELECT b.source, sum(b.count), max(a.at) FROM blocked_sources b
			LEFT JOIN brute_force_alerts a ON a.target = b.target AND a.source = b.source
			WHERE b.target = $1 AND b.last_seen > $2 GROUP BY b.source ORDER BY b.source`, target, ms(now.Add(-alert.BruteForceWindow)))
	if err != nil {
		return fmt.Errorf("checking for brute force: %w", err)
	}
	type hit struct {
		src string
		n   int
	}
	var hits []hit
	for rows.Next() {
		var (
			h    hit
			last sql.NullInt64
		)
		if err := rows.Scan(&h.src, &h.n, &last); err != nil {
			rows.Close()
			return fmt.Errorf("reading blocked attempts: %w", err)
		}
		var lastAlert time.Time
		if last.Valid {
			lastAlert = fromMS(last.Int64)
		}
		if alert.BruteForce(h.n, s.cfg.BruteForceThreshold, lastAlert, now) {
			hits = append(hits, h)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("checking for brute force: %w", err)
	}
	for _, h := range hits {
		if _, err := tx.ExecContext(ctx, `INSERT INTO brute_force_alerts (target, source, at) VALUES ($1, $2, $3)
				ON CONFLICT (target, source) DO UPDATE SET at = excluded.at`, target, h.src, ms(now)); err != nil {
			return fmt.Errorf("recording alert: %w", err)
		}
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.BruteForceSuspected, Target: target,
			Reason:  fmt.Sprintf("possible brute force: %d blocked attempts from %s within an hour", h.n, h.src),
			Details: map[string]any{"source": h.src, "attempts": h.n, "threshold": s.cfg.BruteForceThreshold}}); err != nil {
			return err
		}
	}
	return nil
}

// AgentReport is what an agent reports besides its revision, as the store
// records it (the API converts its wire form).
type AgentReport struct {
	// Mode is the mode the agent runs in: ModeHost or ModeGateway ("":
	// not reported).
	Mode string
	// Inventory describes the host; nil: unchanged.
	Inventory *inventory.Host
	// Blocked are the gate's counters, cumulative since it was built.
	Blocked []BlockedCounter
	// BlockedSources are sampled sources of blocked attempts since the
	// previous report.
	BlockedSources []BlockedSource
}

// BlockedCounter counts what a gate dropped on one protected port.
type BlockedCounter struct {
	// Destination is the protected address behind a gateway ("" on a host).
	Destination string
	Protocol    string
	Port        uint16
	Packets     uint64
	// Connections counts new connection attempts (TCP SYN, first UDP
	// packet).
	Connections uint64
}

// BlockedSource is a sampled source of blocked attempts.
type BlockedSource struct {
	Source      string
	Destination string
	Protocol    string
	Port        uint16
	Count       int
	LastSeen    time.Time
}

// TargetBlocked is one counter of the gate of Target (AllBlocked).
type TargetBlocked struct {
	Target string
	BlockedCounter
}

// Blocked is what a target's gate dropped: counters per protected port and
// the top sources of the last 24 hours.
type Blocked struct {
	Counters []BlockedCounter
	Sources  []BlockedSource
}

// BlockedFor returns the blocked attempts on target t: its own gate's, or,
// behind a gateway, the gateway's for its address and for its published
// (public address, mapped port) endpoints.
func (s *Store) BlockedFor(ctx context.Context, t Target, now time.Time, top int) (Blocked, error) {
	gate := t.Name
	type endpoint struct {
		dest string
		port int // 0: any port of dest
	}
	eps := []endpoint{{"", 0}}
	if t.Gateway != "" {
		gate = t.Gateway
		eps = nil
		for _, a := range t.BehindAddresses() {
			eps = append(eps, endpoint{a, 0})
		}
		ms, err := s.Mappings(ctx, t.Name, false)
		if err != nil {
			return Blocked{}, err
		}
		for _, m := range ms {
			if m.Published() {
				eps = append(eps, endpoint{m.PublicAddress, int(m.MappedPort)})
			}
		}
	}
	var out Blocked
	for _, ep := range eps {
		rows, err := s.db.QueryContext(ctx, `SELECT protocol, port, packets, connections FROM blocked_counters
			WHERE target = $1 AND destination = $2 AND ($3 = 0 OR port = $3) ORDER BY port, protocol`, gate, ep.dest, ep.port)
		if err != nil {
			return Blocked{}, fmt.Errorf("reading blocked counters: %w", err)
		}
		for rows.Next() {
			var (
				c           BlockedCounter
				port        int
				pkts, conns int64
			)
			if err := rows.Scan(&c.Protocol, &port, &pkts, &conns); err != nil {
				rows.Close()
				return Blocked{}, err
			}
			c.Destination, c.Port, c.Packets, c.Connections = ep.dest, uint16(port), uint64(pkts), uint64(conns)
			out.Counters = append(out.Counters, c)
		}
		rows.Close()
		rows, err = s.db.QueryContext(ctx, `SELECT source, protocol, port, sum(count), max(last_seen) FROM blocked_sources
			WHERE target = $1 AND destination = $2 AND ($3 = 0 OR port = $3) AND last_seen > $4 GROUP BY source, protocol, port
			ORDER BY sum(count) DESC, source LIMIT $5`, gate, ep.dest, ep.port, ms(now.Add(-24*time.Hour)), top)
		if err != nil {
			return Blocked{}, fmt.Errorf("reading blocked sources: %w", err)
		}
		for rows.Next() {
			var (
				b     BlockedSource
				port  int
				count int
				last  int64
			)
			if err := rows.Scan(&b.Source, &b.Protocol, &port, &count, &last); err != nil {
				rows.Close()
				return Blocked{}, err
			}
			b.Destination, b.Port, b.Count, b.LastSeen = ep.dest, uint16(port), count, fromMS(last)
			out.Sources = append(out.Sources, b)
		}
		rows.Close()
	}
	sort.SliceStable(out.Sources, func(i, j int) bool { return out.Sources[i].Count > out.Sources[j].Count })
	if len(out.Sources) > top {
		out.Sources = out.Sources[:top]
	}
	return out, nil
}

// revisionOwner is the target whose revision a change of target advances:
// its gateway when it has one.
func revisionOwner(ctx context.Context, tx *sql.Tx, target string) (string, error) {
	var gw string
	err := tx.QueryRowContext(ctx, `SELECT gateway FROM targets WHERE name = $1`, target).Scan(&gw)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("target %q: %w", target, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading target %s: %w", target, err)
	}
	if gw != "" {
		return gw, nil
	}
	return target, nil
}

// changed tells the change feed about targets after a commit, together
// with their gateways and the targets behind them, so waiting agents and
// clients of any of them wake up.
func (s *Store) changed(targets ...string) {
	// Wake the targets' own watchers first (the agent of a host target is
	// the one waiting on the grant path); their relations cost queries.
	s.feed.publish(targets...)
	seen := map[string]bool{}
	for _, t := range targets {
		seen[t] = true
	}
	var all []string
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			all = append(all, n)
		}
	}
	ctx := context.Background()
	for _, t := range targets {
		// One read for both relations: the target's own row names its
		// gateway, the others are the targets behind it.
		rows, err := s.db.QueryContext(ctx, `SELECT gateway FROM targets WHERE name = $1
			UNION ALL SELECT name FROM targets WHERE gateway = $1`, t)
		if err == nil {
			for rows.Next() {
				var n string
				if rows.Scan(&n) == nil {
					add(n)
				}
			}
			rows.Close()
		}
	}
	if len(all) > 0 {
		s.feed.publish(all...)
	}
}

// relations are a target's relations as a write transaction read them
// (targetForRequest): its gateway ("" for none), and whether any target is
// behind it.
type relations struct {
	gateway string
	behind  bool
}

// changedRelated is changed for one target whose relations the committed
// transaction read (rel): the feed learns the same targets, without the
// read after the commit, unless targets are behind it (their names are
// read then, by changed).
func (s *Store) changedRelated(target string, rel relations) {
	if rel.behind {
		s.changed(target)
		return
	}
	s.feed.publish(target)
	if rel.gateway != "" && rel.gateway != target {
		s.feed.publish(rel.gateway)
	}
}

// ActiveCounts counts active requests per target.
func (s *Store) ActiveCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT target, count(*) FROM requests WHERE state = `+stateActive+` GROUP BY target`)
	if err != nil {
		return nil, fmt.Errorf("counting active requests: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			t string
			n int
		)
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		out[t] = n
	}
	return out, rows.Err()
}

// AllBlocked sums the blocked counters per gate and destination, for metrics.
func (s *Store) AllBlocked(ctx context.Context) ([]TargetBlocked, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT target, destination, protocol, port, packets, connections FROM blocked_counters ORDER BY target, destination, port`)
	if err != nil {
		return nil, fmt.Errorf("reading blocked counters: %w", err)
	}
	defer rows.Close()
	var out []TargetBlocked
	for rows.Next() {
		var (
			e           TargetBlocked
			port        int
			pkts, conns int64
		)
		if err := rows.Scan(&e.Target, &e.Destination, &e.Protocol, &port, &pkts, &conns); err != nil {
			return nil, err
		}
		e.Port, e.Packets, e.Connections = uint16(port), uint64(pkts), uint64(conns)
		out = append(out, e)
	}
	return out, rows.Err()
}
