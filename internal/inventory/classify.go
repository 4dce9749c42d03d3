// Package inventory sorts targets the way operators triage them: configured
// (a JIT policy is active), not configured (enrolled, no policy; flagged when
// management ports are open to anyone) and unsupported (the gate cannot be
// enforced, with the reason). It is pure: callers pass what the agents
// reported.
package inventory

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Classes of targets.
const (
	Configured    = "configured"
	NotConfigured = "not-configured"
	Unsupported   = "unsupported"
)

// Classes lists them, for validating filters.
var Classes = []string{Configured, NotConfigured, Unsupported}

// ManagementPorts are the ports the default policy gates and whose exposure
// is flagged: SSH, RDP, WinRM over HTTP and HTTPS.
var ManagementPorts = []uint16{22, 3389, 5985, 5986}

// Facts are what classification looks at.
type Facts struct {
	HasPolicy bool
	// Protected are the TCP ports the policy gates.
	Protected []uint16
	// Agent is the state of the agent that enforces for the target (its own,
	// or its gateway's): never, connected or disconnected.
	Agent string
	// Inventory is what that agent reported (nil: nothing yet).
	Inventory *Host
	// Behind is the gateway enforcing for the target, if any; Addresses
	// are then the target's addresses behind it and GatewayPublic the
	// gateway's public address.
	Behind        string
	Addresses     []string
	GatewayPublic string
}

// Result is a target's class, why, and a recommendation.
type Result struct {
	Class          string `json:"class"`
	Reason         string `json:"reason,omitempty"`
	Recommendation string `json:"recommendation,omitempty"`
	// Exposed are management ports listening on every address and not gated.
	Exposed []uint16 `json:"exposed,omitempty"`
}

// Classify sorts one target.
func Classify(f Facts) Result {
	if f.Inventory != nil && !f.Inventory.CanEnforce {
		reason := f.Inventory.Reason
		if reason == "" {
			reason = "the agent cannot program the firewall"
		}
		if f.Behind != "" {
			reason = fmt.Sprintf("its gateway %s cannot enforce: %s", f.Behind, reason)
		}
		return Result{Class: Unsupported, Reason: reason}
	}
	if f.Behind != "" {
		public, _ := netip.ParseAddr(f.GatewayPublic)
		for _, s := range f.Addresses {
			if a, err := netip.ParseAddr(s); err == nil {
				if b, ok := ClientSide(f.Inventory, public, a); ok {
					return Result{Class: Unsupported, Reason: b.Explain(f.Behind)}
				}
			}
		}
	}
	if f.HasPolicy {
		r := Result{Class: Configured}
		if f.Agent == "never" {
			r.Reason = "no agent has connected yet: the policy is not enforced"
		}
		return r
	}
	r := Result{Class: NotConfigured}
	if f.Behind == "" {
		r.Exposed = exposed(f.Inventory, f.Protected)
	}
	switch {
	case len(r.Exposed) > 0:
		r.Recommendation = fmt.Sprintf("enable JIT: management ports %s are open to anyone", joinPorts(r.Exposed))
	default:
		r.Recommendation = "enable JIT to close its management ports until someone asks"
	}
	return r
}

// exposed returns the management ports the host listens on for every
// address (0.0.0.0 or ::) that no rule gates.
func exposed(inv *Host, protected []uint16) []uint16 {
	if inv == nil {
		return nil
	}
	gated := map[uint16]bool{}
	for _, p := range protected {
		gated[p] = true
	}
	seen := map[uint16]bool{}
	for _, l := range inv.Listening {
		if !strings.EqualFold(l.Protocol, "tcp") || gated[l.Port] || seen[l.Port] {
			continue
		}
		a, err := netip.ParseAddr(l.Address)
		if err != nil || !a.IsUnspecified() {
			continue
		}
		for _, m := range ManagementPorts {
			if l.Port == m {
				seen[m] = true
			}
		}
	}
	out := make([]uint16, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}
