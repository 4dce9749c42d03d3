package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// skewShift returns how much earlier server deadlines must be moved for the
// agent's clock, from a server answer stamped serverTime and received at the
// agent's localNow: the server clock's lead over the agent's, or 0 when the
// agent is ahead or the server sent no time.
//
// The estimate serverTime-localNow uses the time the answer was received, so
// it is low by the answer's one-way network delay (milliseconds): the server
// stamped serverTime slightly before localNow. The request's send time would
// bound it from the other side, but a long-poll is sent up to a whole wait
// earlier, which makes that bound useless.
func skewShift(serverTime, localNow time.Time) time.Duration {
	if serverTime.IsZero() {
		return 0
	}
	if s := serverTime.Sub(localNow); s > 0 {
		return s
	}
	return 0
}

// toRuleset turns a desired state into the Ruleset to apply, with every
// deadline moved shift earlier to put it into the agent's clock, so that a
// grant closes at the EARLIER of the two clocks' readings of its deadline.
//
// The server's deadlines are readings of the server's clock, while the kernel
// gets a timeout of Expires-now computed with the agent's clock. An agent
// whose clock is behind the server's by s would keep a grant open s too long,
// so each deadline moves s earlier: shift is skewShift's estimate of s (plus
// nextShift's hysteresis). An agent whose clock is ahead closes by its own
// reading, already the earlier one, so its shift is 0.
//
// Any malformed entry fails the whole conversion: applying part of a state
// could drop a protected port, and the previous state is safer than that.
// So does a state of another mode than the agent's own (mode), which would
// protect the wrong things.
func toRuleset(ds wire.DesiredState, shift time.Duration, mode firewall.Mode) (firewall.Ruleset, error) {
	dsMode, err := firewall.ParseMode(ds.Mode)
	if err != nil {
		return firewall.Ruleset{}, err
	}
	if dsMode != mode {
		return firewall.Ruleset{}, fmt.Errorf("%w: the server sent a %s-mode state but this agent runs in %s mode (--mode)", errModeMismatch, dsMode, mode)
	}
	gateway := mode == firewall.GatewayMode
	rs := firewall.Ruleset{
		Mode:       mode,
		Protected:  make([]firewall.PortKey, 0, len(ds.Protected)),
		Grants:     make([]firewall.Grant, 0, len(ds.Grants)),
		SampleRate: ds.BlockedSampleRate,
	}
	if rs.SampleRate < 0 {
		return firewall.Ruleset{}, fmt.Errorf("blocked_sample_rate %d is negative", rs.SampleRate)
	}
	for i, p := range ds.Protected {
		proto, err := parseProtocol(p.Protocol)
		if err != nil {
			return firewall.Ruleset{}, fmt.Errorf("protected[%d] %d/%s: %w", i, p.Port, p.Protocol, err)
		}
		if p.Port == 0 {
			return firewall.Ruleset{}, fmt.Errorf("protected[%d]: port 0 is not a port", i)
		}
		dest, err := parseDest(p.Destination, gateway)
		if err != nil {
			return firewall.Ruleset{}, fmt.Errorf("protected[%d] %d/%s: %w", i, p.Port, p.Protocol, err)
		}
		k := firewall.PortKey{Proto: proto, Port: p.Port, Dest: dest}
		rs.Protected = append(rs.Protected, k)
		if p.CloseEstablished {
			rs.CloseEstablished = append(rs.CloseEstablished, k)
		}
	}
	for i, g := range ds.Grants {
		gr, err := toGrant(g, shift, gateway)
		if err != nil {
			return firewall.Ruleset{}, fmt.Errorf("grants[%d] %w", i, err)
		}
		rs.Grants = append(rs.Grants, gr)
	}
	for i, m := range ds.Published {
		if !gateway {
			return firewall.Ruleset{}, fmt.Errorf("published[%d]: DNAT mappings need gateway mode", i)
		}
		proto, err := parseProtocol(m.Protocol)
		if err != nil {
			return firewall.Ruleset{}, fmt.Errorf("published[%d]: %w", i, err)
		}
		dest, err := parseDest(m.Destination, true)
		if err != nil {
			return firewall.Ruleset{}, fmt.Errorf("published[%d]: %w", i, err)
		}
		public, err := netip.ParseAddr(m.PublicAddress)
		if err != nil {
			return firewall.Ruleset{}, fmt.Errorf("published[%d]: public address %q is not an address", i, m.PublicAddress)
		}
		rs.Published = append(rs.Published, firewall.Mapping{
			Target: firewall.PortKey{Proto: proto, Port: m.Port, Dest: dest}, Public: public.Unmap(), PublicPort: m.MappedPort,
		})
	}
	if err := rs.Validate(); err != nil {
		return firewall.Ruleset{}, err
	}
	return rs, nil
}

// toGrant converts one grant entry, its deadline moved shift earlier (see
// toRuleset); a malformed entry is an error, which fails the whole state or
// delta it came with.
func toGrant(g wire.GrantEntry, shift time.Duration, gateway bool) (firewall.Grant, error) {
	proto, err := parseProtocol(g.Protocol)
	if err != nil {
		return firewall.Grant{}, fmt.Errorf("%s %d/%s: %w", g.Source, g.Port, g.Protocol, err)
	}
	if g.Port == 0 {
		return firewall.Grant{}, fmt.Errorf("%s: port 0 is not a port", g.Source)
	}
	src, err := parseSource(g.Source)
	if err != nil {
		return firewall.Grant{}, fmt.Errorf("%d/%s: %w", g.Port, g.Protocol, err)
	}
	dest, err := parseDest(g.Destination, gateway)
	if err != nil {
		return firewall.Grant{}, fmt.Errorf("%s %d/%s: %w", g.Source, g.Port, g.Protocol, err)
	}
	if g.ExpiresAt.IsZero() {
		return firewall.Grant{}, fmt.Errorf("%s %d/%s: no deadline", g.Source, g.Port, g.Protocol)
	}
	return firewall.Grant{Source: src, Dest: dest, Proto: proto, Port: g.Port, Expires: g.ExpiresAt.Add(-shift)}, nil
}

// errModeMismatch marks a desired state of the other mode.
var errModeMismatch = errors.New("mode mismatch")

// parseDest reads a destination: required in gateway mode, refused in host
// mode (where the destination is the agent's own host).
func parseDest(s string, gateway bool) (netip.Addr, error) {
	if !gateway {
		if s != "" {
			return netip.Addr{}, fmt.Errorf("destination %q in host mode", s)
		}
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("destination %q: gateway mode needs the destination's address", s)
	}
	return a.Unmap().WithZone(""), nil
}

func parseProtocol(s string) (firewall.Protocol, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return firewall.TCP, nil
	case "udp":
		return firewall.UDP, nil
	}
	return 0, fmt.Errorf("protocol %q: must be tcp or udp", s)
}

// parseSource reads a CIDR prefix; a bare address is accepted as the prefix
// holding only itself.
func parseSource(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("source %q: not an address or CIDR prefix", s)
		}
		a = a.Unmap().WithZone("")
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("source %q: not an address or CIDR prefix", s)
	}
	return p, nil
}
