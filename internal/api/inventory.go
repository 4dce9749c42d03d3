package api

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/inventory"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// view describes target t for the API: its state, class and placement.
// gateways resolves the gateway of a target behind one (nil: look it up).
func (a *api) view(ctx context.Context, t store.Target, gateways map[string]store.Target, active map[string]int) wire.Target {
	out := toWireTarget(t)
	out.Gateway, out.Address, out.Mode, out.PublicAddress, out.Inventory = t.Gateway, t.Address, t.Mode, t.PublicAddress, hostToWire(t.Inventory)
	out.ActiveGrants = active[t.Name]
	out.PolicyETag = policyETag(t.Policy)
	f := inventory.Facts{HasPolicy: t.Policy != nil, Agent: t.AgentState, Inventory: t.Inventory, Behind: t.Gateway}
	if t.Policy != nil {
		for _, r := range t.Policy.Rules {
			if r.Protocol == policy.TCP {
				f.Protected = append(f.Protected, r.Number)
			}
		}
	}
	if t.Gateway != "" {
		g, ok := gateways[t.Gateway]
		if !ok {
			g, _ = a.Store.GetTarget(ctx, t.Gateway)
		}
		f.Agent, f.Inventory = g.AgentState, g.Inventory
		f.Addresses, f.GatewayPublic = t.BehindAddresses(), g.PublicAddress
		out.Agent.State = g.AgentState
		if t.PolicyRemoval != nil {
			out.PolicyRemoval = toWireRemoval(*t.PolicyRemoval, &g, a.Now())
		}
	} else if t.PolicyRemoval != nil {
		out.PolicyRemoval = toWireRemoval(*t.PolicyRemoval, &t, a.Now())
	}
	c := inventory.Classify(f)
	out.Class, out.ClassReason, out.Recommendation, out.Exposed = c.Class, c.Reason, c.Recommendation, c.Exposed
	return out
}

// createTargetSpec enrolls a target, possibly behind a gateway.
func (a *api) createTargetSpec(ctx context.Context, r *http.Request, p store.Principal, in wire.TargetCreate) (store.Target, string, error) {
	if in.Gateway != "" {
		if err := a.requireGatewayWrite(ctx, p, in.Gateway, "placing "+in.Name+" behind gateway "+in.Gateway); err != nil {
			return store.Target{}, "", err
		}
	}
	var addrs []string
	for _, s := range append([]string{in.Address}, in.Addresses...) {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(addrs, s) {
			addrs = append(addrs, s)
		}
	}
	return a.Store.CreateTargetSpec(ctx, a.actor(r, p), store.TargetSpec{Name: in.Name, Labels: in.Labels, Gateway: in.Gateway,
		Addresses: addrs, PublicAddress: in.PublicAddress}, a.Now(), a.EnrollTokenTTL)
}

// requireGatewayWrite refuses a change to what gateway gw enforces or
// publishes (placing a target behind it, publishing a port or choosing a
// mapped port on it) unless p may write policies on the gateway itself.
// Rights on the target alone are not enough: the gateway belongs to its
// owners, and a policy-admin of one target must not be able to put
// arbitrary addresses under its gate or open ports on its public address.
func (a *api) requireGatewayWrite(ctx context.Context, p store.Principal, gw, what string) error {
	ok, err := a.can(ctx, p, authz.WritePolicy, a.targetOf(ctx, gw))
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	return fmt.Errorf("%s needs the right to write policies on the gateway (%s) too, and %s has no role that allows %s on target %s: %w",
		what, authz.WritePolicy, p.Name(), authz.WritePolicy, gw, errForbidden)
}

// publishes lists the ports pol publishes ("22/tcp", or "22/tcp on mapped
// port 20022"), for the message of a refusal.
func publishes(pol policy.Policy) []string {
	var out []string
	for _, r := range pol.Rules {
		switch {
		case r.Publish && r.MappedPort != 0:
			out = append(out, fmt.Sprintf("%s on mapped port %d", r.Port, r.MappedPort))
		case r.Publish:
			out = append(out, r.Port.String())
		}
	}
	return out
}

// defaultPolicy is what "enable JIT" applies: the management ports over
// TCP for the default duration.
func (a *api) defaultPolicy() policy.Policy {
	var p policy.Policy
	for _, port := range inventory.ManagementPorts {
		p.Rules = append(p.Rules, policy.Rule{Port: policy.Port{Number: port, Protocol: policy.TCP}, MaxDuration: a.Limits.DefaultRuleDuration})
	}
	return p
}

// parseSelector reads a label selector (policy.ParseSelector: one syntax
// for every ?selector=, the enable body and the CLI's -l).
func parseSelector(s string) (policy.Selector, error) {
	sel, err := policy.ParseSelector(s)
	if err != nil {
		return nil, err
	}
	return sel, nil
}

// enablePolicy applies the default policy to every target the selector
// matches (or the request names) that has no policy yet and can be gated.
// It never overwrites a target's own policy and skips unsupported targets,
// saying why for each: the console's "Enable JIT on selected" names its
// selection here, so a policy set since the page loaded is kept. Only
// targets the caller may read match (others are never named to it). It
// changes nothing unless the caller may set policies on all matching
// targets; a selector that matches nothing is an error. With ?dry_run=true
// it says what it would do and changes nothing.
func (a *api) enablePolicy(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.PolicyEnable
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if !in.Default {
		return invalidField("default", "must be true: only the default policy (22, 3389, 5985, 5986/tcp, %s) is applied in bulk", a.Limits.DefaultRuleDuration)
	}
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	var match []store.Target
	if in.Targets != nil {
		if in.Selector != "" {
			return invalidField("targets", "give either a selector or target names, not both")
		}
		if match, err = a.namedTargets(r, p, in.Targets); err != nil {
			return err
		}
	} else if match, err = a.selectTargets(r, p, in.Selector); err != nil {
		return err
	}
	gateways, err := a.targetsByName(r.Context())
	if err != nil {
		return err
	}
	for _, t := range match {
		if err := a.require(r.Context(), p, authz.WritePolicy, authzTarget(t)); err != nil {
			return err
		}
	}
	pol, err := a.Limits.Normalize(a.defaultPolicy())
	if err != nil {
		return err
	}
	out := wire.PolicyEnableResult{DryRun: dry, Enabled: []wire.PolicyResult{}, Skipped: []wire.PolicySkip{}}
	for _, t := range match {
		if v := a.view(r.Context(), t, gateways, nil); v.Class == inventory.Unsupported {
			out.Skipped = append(out.Skipped, wire.PolicySkip{Target: t.Name, Reason: "unsupported: " + v.ClassReason})
			continue
		}
		res, err := a.Store.SetPolicyWith(r.Context(), a.actor(r, p), t.Name, pol, a.Now(), store.PolicyOptions{DryRun: dry, KeepExisting: true, Compare: a.Limits.Compare})
		if err != nil {
			return fmt.Errorf("setting the default policy on %s: %w", t.Name, err)
		}
		if res.Kept {
			out.Skipped = append(out.Skipped, wire.PolicySkip{Target: t.Name,
				Reason: fmt.Sprintf("already has a policy (%s); change it with policy set or apply", portList(*res.Old))})
			continue
		}
		out.Enabled = append(out.Enabled, a.policyResult(t.Name, res, pol, dry))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// targetsByName maps every target by name (the views look gateways up).
func (a *api) targetsByName(ctx context.Context) (map[string]store.Target, error) {
	ts, err := a.Store.ListTargets(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]store.Target, len(ts))
	for _, t := range ts {
		m[t.Name] = t
	}
	return m, nil
}

// namedTargets looks up the targets a bulk action names, once each, in the
// order given. A name that does not exist or that the caller may not read
// refuses the whole action, with the same answer either way (targetFor).
func (a *api) namedTargets(r *http.Request, p store.Principal, names []string) ([]store.Target, error) {
	if len(names) == 0 {
		return nil, invalidField("targets", "names no target")
	}
	seen := map[string]bool{}
	var out []store.Target
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		t, err := a.targetFor(r.Context(), p, authz.ReadTarget, n)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// selectTargets lists the targets the caller may read that a label
// selector matches; matching none is an error.
func (a *api) selectTargets(r *http.Request, p store.Principal, selector string) ([]store.Target, error) {
	if strings.TrimSpace(selector) == "" {
		// An empty selector would match every target.
		return nil, invalidField("selector", "required: name the targets with KEY=VALUE[,KEY=VALUE...], such as group=prod")
	}
	sel, err := parseSelector(selector)
	if err != nil {
		return nil, err
	}
	ts, err := a.Store.ListTargets(r.Context())
	if err != nil {
		return nil, err
	}
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return nil, err
	}
	var match []store.Target
	for _, t := range ts {
		// Targets the caller cannot read do not exist for it: they are not
		// matched, so neither the results nor a refusal name them.
		if authz.Allowed(bs, p.Authz(), authz.ReadTarget, authzTarget(t)) && sel.Matches(t.Labels) {
			match = append(match, t)
		}
	}
	if len(match) == 0 {
		return nil, invalidField("selector", "%s matches no target", selector)
	}
	return match, nil
}

// portList names a policy's ports, "22/tcp, 3389/tcp".
func portList(pol policy.Policy) string {
	s := make([]string, len(pol.Rules))
	for i, r := range pol.Rules {
		s[i] = r.Port.String()
	}
	return strings.Join(s, ", ")
}

// checkSourceFamily refuses a source that cannot reach a target behind a
// gateway: the target needs an address of the source's family (no NAT64).
// The grant then opens the target's addresses of that family only.
func checkSourceFamily(t store.Target, src netip.Prefix) error {
	addrs := t.BehindAddresses()
	if len(addrs) == 0 || store.AddressOfFamily(addrs, policy.Canonical(src).Addr().Is6()) != "" {
		return nil
	}
	return invalidField("source", "%s cannot reach %s, whose address behind gateway %s is %s", src, t.Name, t.Gateway, strings.Join(addrs, ", "))
}

// toWireMappings lists a target's published ports.
func toWireMappings(ms []store.Mapping) []wire.Mapping {
	out := make([]wire.Mapping, 0, len(ms))
	for _, m := range ms {
		if !m.Published() {
			continue
		}
		out = append(out, wire.Mapping{Destination: m.Destination, Protocol: string(m.Port.Protocol), Port: m.Port.Number,
			PublicAddress: m.PublicAddress, MappedPort: m.MappedPort})
	}
	return out
}

// connectFor says how to reach a request's ports: through the gateway's
// mapped ports when they are published, else at the target's address.
func (a *api) connectFor(ctx context.Context, req store.Request, t store.Target) []string {
	if t.Gateway == "" {
		return connectHints(req.Target, pickAddress(t.Addresses, req.Source.Addr().Is6()), req.Ports)
	}
	ms, _ := a.Store.Mappings(ctx, t.Name, false)
	v6 := policy.Canonical(req.Source).Addr().Is6()
	direct := store.AddressOfFamily(t.BehindAddresses(), v6)
	var out []string
	for _, p := range req.Ports {
		// A mapping helps only a source of the public address's family.
		i := slices.IndexFunc(ms, func(m store.Mapping) bool {
			pub, err := netip.ParseAddr(m.PublicAddress)
			return m.Port == p && m.Published() && err == nil && pub.Unmap().Is6() == v6
		})
		if i < 0 {
			out = append(out, connectHints(req.Target, direct, []policy.Port{p})...)
			continue
		}
		m := ms[i]
		host := m.PublicAddress
		if ad, err := netip.ParseAddr(host); err == nil && ad.Is6() {
			host = "[" + host + "]"
		}
		if p.Number == 22 && p.Protocol == policy.TCP {
			out = append(out, fmt.Sprintf("ssh -p %d %s   (%s:%d/tcp on gateway %s, forwarded to %s:%d)", m.MappedPort, m.PublicAddress, host, m.MappedPort, t.Gateway, m.Destination, p.Number))
			continue
		}
		out = append(out, fmt.Sprintf("%s:%d/%s   (on gateway %s, forwarded to %s:%d)", host, m.MappedPort, p.Protocol, t.Gateway, m.Destination, p.Number))
	}
	return out
}

// lastHour is used to bound sampled blocked sources shown with a target.
const blockedTop = 10

func (a *api) blockedOf(ctx context.Context, t store.Target, now time.Time) *wire.Blocked {
	b, err := a.Store.BlockedFor(ctx, t, now, blockedTop)
	if err != nil {
		a.Logger.Error("reading blocked attempts", "target", t.Name, "err", err)
		return nil
	}
	return toWireBlocked(b)
}
