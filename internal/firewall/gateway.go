package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Mode says what a gate protects.
type Mode uint8

const (
	// HostMode protects the services of the host the gate runs on (the
	// input path). It is the zero value.
	HostMode Mode = iota
	// GatewayMode protects destinations behind a router, in the forward
	// path, and publishes DNAT mappings to granted sources only.
	GatewayMode
)

func (m Mode) String() string {
	switch m {
	case HostMode:
		return "host"
	case GatewayMode:
		return "gateway"
	}
	return fmt.Sprintf("mode-%d", uint8(m))
}

// ParseMode reads "host" (or "", the default) and "gateway".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "host":
		return HostMode, nil
	case "gateway":
		return GatewayMode, nil
	}
	return 0, fmt.Errorf("mode %q: must be host or gateway", s)
}

// DefaultSampleRate is how many blocked attempts per second a gate samples
// for their sources when the ruleset does not say.
const DefaultSampleRate = 10

// Mapping publishes a protected destination port on an address and port of
// the gateway (DNAT). Only sources granted Target are translated; every other
// packet to Public:PublicPort is dropped.
type Mapping struct {
	// Target is the protected (destination, protocol, port) reached.
	Target PortKey
	// Public and PublicPort are where clients connect, on the gateway.
	Public     netip.Addr
	PublicPort uint16
}

// PublicKey is the (public address, protocol, public port) clients connect to.
func (m Mapping) PublicKey() PortKey {
	return PortKey{Proto: m.Target.Proto, Port: m.PublicPort, Dest: m.Public}
}

func (m Mapping) String() string {
	return fmt.Sprintf("%s -> %s", m.PublicKey(), m.Target)
}

// Translation is one DNAT entry: sources From..To connecting to the
// mapping's public endpoint are translated to its target until Expires.
type Translation struct {
	From, To netip.Addr
	Mapping  Mapping
	Expires  time.Time
}

// Translations derives the DNAT entries live at now: for each published
// mapping, one entry per grant element of its target, with the element's
// range and deadline. They are disjoint per public endpoint because the
// elements of one target are.
func (r Ruleset) Translations(now time.Time) []Translation {
	if len(r.Published) == 0 {
		return nil
	}
	byTarget := map[PortKey][]Element{}
	for _, e := range r.Elements(now) {
		byTarget[e.PortKey()] = append(byTarget[e.PortKey()], e)
	}
	var out []Translation
	for _, m := range r.SortedPublished() {
		for _, e := range byTarget[m.Target] {
			if e.From.Is4() != m.Public.Is4() {
				continue
			}
			out = append(out, Translation{From: e.From, To: e.To, Mapping: m, Expires: e.Expires})
		}
	}
	SortTranslations(out)
	return out
}

// SortedPublished returns the mappings deduplicated and sorted by public
// endpoint.
func (r Ruleset) SortedPublished() []Mapping {
	out := slices.Clone(r.Published)
	slices.SortFunc(out, CompareMappings)
	return slices.Compact(out)
}

// CompareMappings orders mappings by public endpoint, then target.
func CompareMappings(a, b Mapping) int {
	if c := ComparePorts(a.PublicKey(), b.PublicKey()); c != 0 {
		return c
	}
	return ComparePorts(a.Target, b.Target)
}

// SortTranslations sorts by public endpoint, family and first address.
func SortTranslations(ts []Translation) {
	slices.SortFunc(ts, func(a, b Translation) int {
		if c := CompareMappings(a.Mapping, b.Mapping); c != 0 {
			return c
		}
		if a.From.BitLen() != b.From.BitLen() {
			return a.From.BitLen() - b.From.BitLen()
		}
		return a.From.Compare(b.From)
	})
}

// ErrInvalidRuleset wraps the errors of Validate.
var ErrInvalidRuleset = errors.New("invalid ruleset")

// Validate checks what Elements cannot normalise away: destinations where
// the mode wants them and nowhere else, and mappings that a kernel can
// install. Backends refuse an invalid ruleset and change nothing. Grants are
// not checked: a grant that matches no protected port is simply not
// installed.
func (r Ruleset) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidRuleset, fmt.Sprintf(format, args...))
	}
	switch r.Mode {
	case HostMode:
		for _, p := range append(slices.Clone(r.Protected), r.CloseEstablished...) {
			if p.Dest.IsValid() {
				return bad("host mode: port %s has a destination", p)
			}
		}
		for _, g := range r.Grants {
			if g.Dest.IsValid() {
				return bad("host mode: grant to %s has a destination", g.Key())
			}
		}
		if len(r.Published) > 0 {
			return bad("host mode: DNAT mappings need gateway mode")
		}
	case GatewayMode:
		protected := map[PortKey]bool{}
		for _, p := range r.Protected {
			if !validDest(p.Dest) {
				return bad("gateway mode: protected port %s needs a destination address", p)
			}
			protected[p] = true
		}
		public := map[PortKey]Mapping{}
		for _, m := range r.SortedPublished() {
			if !protected[m.Target] {
				return bad("mapping %s: its target is not protected", m)
			}
			if !validDest(m.Public) || m.Public.Is4() != m.Target.Dest.Is4() {
				return bad("mapping %s: the public address must be an address of the target's family", m)
			}
			if m.PublicPort == 0 {
				return bad("mapping %s: public port 0", m)
			}
			if other, ok := public[m.PublicKey()]; ok {
				return bad("mappings %s and %s publish the same address and port", other, m)
			}
			public[m.PublicKey()] = m
		}
	default:
		return bad("unknown mode %s", r.Mode)
	}
	if r.SampleRate < 0 {
		return bad("sample rate %d is negative", r.SampleRate)
	}
	return nil
}

func validDest(a netip.Addr) bool {
	return a.IsValid() && a.Zone() == "" && !a.Is4In6() && !a.IsUnspecified()
}

// Translates reports where a new connection from src to public:port passes
// a gateway at now: the mapping's target if src is granted it, else ok is
// false (the packet is dropped, or not published at all).
func (s State) Translates(src, public netip.Addr, proto Protocol, port uint16, now time.Time) (target PortKey, ok bool) {
	src, public = src.Unmap(), public.Unmap()
	k := PortKey{Proto: proto, Port: port, Dest: public}
	for _, t := range s.Translations {
		if t.Mapping.PublicKey() == k && now.Before(t.Expires) && inRange(src, t.From, t.To) {
			return t.Mapping.Target, true
		}
	}
	return PortKey{}, false
}

// Blocked counts what a gate dropped on one protected port, or on one
// published endpoint (then Port.Dest is the public address and Port.Port
// the public port), since the gate was built.
type Blocked struct {
	Port      PortKey
	Published bool
	// Packets counts every dropped packet; Connections the new connection
	// attempts among them (a TCP SYN, retransmissions included, or a UDP
	// packet of no known flow).
	Packets, Connections uint64
}

// BlockedCounter is implemented by backends that count what the gate drops.
type BlockedCounter interface {
	// Blocked reads the counters, sorted by port. It only reads.
	Blocked(ctx context.Context) ([]Blocked, error)
}

// Sample is one blocked attempt the gate sampled.
type Sample struct {
	Source, Dest netip.Addr
	Proto        Protocol
	Port         uint16
	At           time.Time
}

// Prober is implemented by backends that can tell whether they are able to
// enforce at all (kernel support, privileges) without changing anything.
type Prober interface {
	Probe(ctx context.Context) error
}
