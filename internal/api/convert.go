package api

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/inventory"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

func toWirePolicy(p policy.Policy) wire.Policy {
	out := wire.Policy{Rules: make([]wire.PortRule, len(p.Rules))}
	for i, r := range p.Rules {
		srcs := make([]string, len(r.AllowedSources))
		for j, s := range r.AllowedSources {
			srcs[j] = s.String()
		}
		out.Rules[i] = wire.PortRule{Port: r.Number, Protocol: string(r.Protocol), AllowedSources: srcs, MaxDuration: wire.Duration(r.MaxDuration),
			Approval: &wire.Approval{Mode: r.Approval.Mode, Approvals: r.Approval.Approvals}, CloseEstablished: r.CloseEstablished,
			Publish: r.Publish, MappedPort: r.MappedPort, Access: string(r.Access), IdleTimeout: wire.Duration(r.IdleTimeout),
			Logins: r.Logins, Record: r.Record, RecordInput: r.RecordInput, Windows: r.Windows}
		for _, g := range r.ApprovalGroups {
			out.Rules[i].Approvals = append(out.Rules[i].Approvals, wire.GroupApproval{From: g.From, Count: g.Count})
		}
		if j := r.Justification; j != (policy.Justification{}) {
			out.Rules[i].Justification = &wire.Justification{Required: j.Required, MinLength: j.MinLength, Pattern: j.Pattern}
		}
	}
	return out
}

// fromWirePolicy parses a policy; field errors name the JSON path.
func fromWirePolicy(p wire.Policy) (policy.Policy, error) {
	out := policy.Policy{Rules: make([]policy.Rule, len(p.Rules))}
	for i, r := range p.Rules {
		rule := policy.Rule{Port: policy.Port{Number: r.Port, Protocol: policy.Protocol(r.Protocol)}, MaxDuration: time.Duration(r.MaxDuration),
			CloseEstablished: r.CloseEstablished, Publish: r.Publish, MappedPort: r.MappedPort, Access: policy.Access(r.Access),
			IdleTimeout: time.Duration(r.IdleTimeout), Logins: r.Logins, Record: r.Record, RecordInput: r.RecordInput, Windows: r.Windows}
		for j, g := range r.Approvals {
			if kind, name, _ := strings.Cut(g.From, ":"); kind == "role" {
				if _, err := authz.ParseRole(name); err != nil {
					return policy.Policy{}, invalidField(fmt.Sprintf("rules[%d].approvals[%d].from", i, j), "%v", err)
				}
			}
			rule.ApprovalGroups = append(rule.ApprovalGroups, policy.GroupApproval{From: g.From, Count: g.Count})
		}
		if r.Approval != nil {
			rule.Approval = policy.Approval{Mode: r.Approval.Mode, Approvals: r.Approval.Approvals}
		}
		if j := r.Justification; j != nil {
			rule.Justification = policy.Justification{Required: j.Required, MinLength: j.MinLength, Pattern: j.Pattern}
		}
		for j, s := range r.AllowedSources {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				return policy.Policy{}, invalidField(fmt.Sprintf("rules[%d].allowed_sources[%d]", i, j), "%q is not a CIDR prefix such as 198.51.100.0/24 or 2001:db8::/48", s)
			}
			rule.AllowedSources = append(rule.AllowedSources, pfx)
		}
		out.Rules[i] = rule
	}
	return out, nil
}

func toWireTarget(t store.Target) wire.Target {
	out := wire.Target{
		Name: t.Name, Labels: t.Labels, Addresses: t.Addresses, CreatedAt: t.CreatedAt,
		Agent: wire.AgentStatus{State: t.AgentState, LastSeen: t.AgentSeenAt, Revision: t.Revision,
			AppliedRevision: t.AppliedRevision, Error: t.AgentError, Version: t.AgentVersion},
	}
	if t.Policy != nil {
		p := toWirePolicy(*t.Policy)
		out.Policy = &p
	}
	return out
}

func portStrings(ps []policy.Port) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// toWireRequest describes a request; callers add how to connect (connectFor),
// which needs the target.
func toWireRequest(r store.Request) wire.Request {
	out := wire.Request{
		ID: r.ID, Target: r.Target, Requester: r.Requester, Source: sourceString(r.Source), Ports: portStrings(r.Ports),
		Duration: wire.Duration(r.Duration), Reason: r.Reason, State: string(r.State), Message: r.Message,
		CreatedAt: r.CreatedAt, ActivatedAt: r.ActivatedAt, ExpiresAt: r.ExpiresAt, EndedAt: r.EndedAt,
		SupersededBy: r.SupersededBy, ApprovalsRequired: r.ApprovalsRequired, ApproveBy: r.ApproveBy, ApprovedAt: r.ApprovedAt,
		Version: r.Version, StartsAt: r.StartsAt,
	}
	for _, d := range r.Decisions {
		out.Decisions = append(out.Decisions, wire.Decision{Approver: d.Approver, Decision: d.Decision, Reason: d.Reason, At: d.At, Member: d.Member})
	}
	for _, g := range r.ApprovalGroups {
		out.ApprovalGroups = append(out.ApprovalGroups, wire.GroupApproval{From: g.From, Count: g.Count})
	}
	if r.State == access.PendingApproval {
		for _, g := range r.Tally.Missing {
			out.MissingApprovals = append(out.MissingApprovals, wire.GroupApproval{From: g.From, Count: g.Count})
		}
	}
	out.WindowEnd = r.WindowEnd
	if len(r.Extended) > 0 {
		out.Extended = portStrings(r.Extended)
	}
	return out
}

// toWireRemoval describes removal r at now. enforcer is the target whose
// agent must confirm it (nil when none will: the target was removed).
func toWireRemoval(r access.Removal, enforcer *store.Target, now time.Time) *wire.Removal {
	out := &wire.Removal{State: string(r.State(now)), Revision: r.Revision, Since: r.At, ConfirmedAt: r.ConfirmedAt}
	if !r.Deadline.IsZero() {
		d := r.Deadline
		out.ClosesBy = &d
	}
	if r.Confirmable && enforcer != nil && enforcer.Name != "" {
		out.Agent, out.AgentState, out.AgentLastSeen = enforcer.Name, enforcer.AgentState, enforcer.AgentSeenAt
	}
	return out
}

// pickAddress prefers an address of the requester's family.
func pickAddress(addrs []string, v6 bool) string {
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() == v6 && a.IsGlobalUnicast() {
			return s
		}
	}
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.IsGlobalUnicast() {
			return s
		}
	}
	return ""
}

// connectHints says how to reach each granted port with the usual client.
func connectHints(target, addr string, ports []policy.Port) []string {
	host := addr
	if host == "" {
		host = target
	}
	bracket := host
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		bracket = "[" + host + "]"
	}
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		switch {
		case p.Protocol == policy.TCP && p.Number == 22:
			out = append(out, fmt.Sprintf("ssh %s", host))
		case p.Protocol == policy.TCP && p.Number == 3389:
			out = append(out, fmt.Sprintf("mstsc /v:%s:3389  (or: xfreerdp /v:%s:3389)", bracket, bracket))
		case p.Protocol == policy.TCP && p.Number == 5985:
			out = append(out, fmt.Sprintf("Enter-PSSession -ComputerName %s -Port 5985", host))
		case p.Protocol == policy.TCP && p.Number == 5986:
			out = append(out, fmt.Sprintf("Enter-PSSession -ComputerName %s -Port 5986 -UseSSL", host))
		case p.Protocol == policy.TCP:
			out = append(out, fmt.Sprintf("%s:%d/tcp", bracket, p.Number))
		default:
			out = append(out, fmt.Sprintf("%s:%d/%s", bracket, p.Number, p.Protocol))
		}
	}
	return out
}

func toWireAudit(e audit.Event) wire.AuditEvent {
	return wire.AuditEvent{ID: e.ID, At: e.At, Actor: e.Actor, Action: string(e.Action), Target: e.Target,
		RequestID: e.RequestID, ClientAddr: e.ClientAddr, Reason: e.Reason, Details: e.Details}
}

// sourceString writes a request's source: "" for a bastion-only request.
func sourceString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// hostFromWire is the domain form of an agent's inventory (nil stays nil:
// unchanged).
func hostFromWire(in *wire.Inventory) *inventory.Host {
	if in == nil {
		return nil
	}
	out := &inventory.Host{Hostname: in.Hostname, CanEnforce: in.CanEnforce, Reason: in.Reason, Kernel: in.Kernel,
		Routes: in.Routes, SSHHostKeys: in.SSHHostKeys}
	for _, l := range in.Listening {
		out.Listening = append(out.Listening, inventory.Listener{Address: l.Address, Port: l.Port, Protocol: l.Protocol, Process: l.Process})
	}
	for _, l := range in.Links {
		out.Links = append(out.Links, inventory.Link{Name: l.Name, Prefixes: l.Prefixes, Default: l.Default})
	}
	return out
}

// hostToWire is the wire form of a stored inventory.
func hostToWire(in *inventory.Host) *wire.Inventory {
	if in == nil {
		return nil
	}
	out := &wire.Inventory{Hostname: in.Hostname, CanEnforce: in.CanEnforce, Reason: in.Reason, Kernel: in.Kernel,
		Routes: in.Routes, SSHHostKeys: in.SSHHostKeys}
	for _, l := range in.Listening {
		out.Listening = append(out.Listening, wire.Listener{Address: l.Address, Port: l.Port, Protocol: l.Protocol, Process: l.Process})
	}
	for _, l := range in.Links {
		out.Links = append(out.Links, wire.Link{Name: l.Name, Prefixes: l.Prefixes, Default: l.Default})
	}
	return out
}

// fromWireReport is what the store records of an agent's report.
func fromWireReport(in wire.AgentReport) store.AgentReport {
	out := store.AgentReport{Mode: in.Mode, Inventory: hostFromWire(in.Inventory)}
	for _, c := range in.Blocked {
		out.Blocked = append(out.Blocked, store.BlockedCounter{Destination: c.Destination, Protocol: c.Protocol, Port: c.Port,
			Packets: c.Packets, Connections: c.Connections})
	}
	for _, b := range in.BlockedSources {
		out.BlockedSources = append(out.BlockedSources, store.BlockedSource{Source: b.Source, Destination: b.Destination, Protocol: b.Protocol,
			Port: b.Port, Count: b.Count, LastSeen: b.LastSeen})
	}
	return out
}

func toWireCounter(c store.BlockedCounter) wire.BlockedCounter {
	return wire.BlockedCounter{Destination: c.Destination, Protocol: c.Protocol, Port: c.Port, Packets: c.Packets, Connections: c.Connections}
}

// toWireBlocked shows what a target's gate dropped (empty lists, not null).
func toWireBlocked(b store.Blocked) *wire.Blocked {
	out := &wire.Blocked{Counters: []wire.BlockedCounter{}, TopSources: []wire.BlockedSource{}}
	for _, c := range b.Counters {
		out.Counters = append(out.Counters, toWireCounter(c))
	}
	for _, s := range b.Sources {
		out.TopSources = append(out.TopSources, wire.BlockedSource{Source: s.Source, Destination: s.Destination, Protocol: s.Protocol,
			Port: s.Port, Count: s.Count, LastSeen: s.LastSeen})
	}
	return out
}

// appendEntries appends what an agent is sent for live grant g, by the rule
// of its port in the policy of its target (pol) as it stands now: a kernel
// entry (host mode; behind a gateway, one per address of the target of the
// source's family, which is all a packet can reach: no NAT64) unless the
// grant is bastion-only (no source) or its port is reached only through the
// bastion, and a bastion entry (behind a gateway, one per address of the
// target, which the gateway's relay dials itself) when the rule allows the
// bastion. A grant on a port no rule names adds nothing. Every entry carries
// the grant's id, by which a delta replaces it.
func appendEntries(grants []wire.GrantEntry, bastion []wire.BastionGrant, g store.GrantRow, pol policy.Policy, addrs []string, gateway bool) ([]wire.GrantEntry, []wire.BastionGrant) {
	r, ok := pol.Rule(g.Port)
	if !ok {
		return grants, bastion
	}
	proto, port := string(g.Port.Protocol), g.Port.Number
	if !gateway {
		if r.Access.Direct() && g.Source.IsValid() {
			grants = append(grants, wire.GrantEntry{ID: g.ID, Source: g.Source.String(), Protocol: proto, Port: port, ExpiresAt: g.ExpiresAt})
		}
		if r.Access.Bastion() {
			bastion = append(bastion, wire.BastionGrant{GrantID: g.ID, RequestID: g.RequestID, Principal: g.Requester, Protocol: proto, Port: port,
				ExpiresAt: g.ExpiresAt})
		}
		return grants, bastion
	}
	if r.Access.Bastion() {
		for _, a := range addrs {
			bastion = append(bastion, wire.BastionGrant{GrantID: g.ID, RequestID: g.RequestID, Principal: g.Requester, Protocol: proto, Port: port,
				ExpiresAt: g.ExpiresAt, Destination: a})
		}
	}
	if !g.Source.IsValid() || !r.Access.Direct() {
		return grants, bastion
	}
	v6 := policy.Canonical(g.Source).Addr().Is6()
	for _, a := range addrs {
		if d, err := netip.ParseAddr(a); err == nil && d.Unmap().Is6() == v6 {
			grants = append(grants, wire.GrantEntry{ID: g.ID, Source: g.Source.String(), Protocol: proto, Port: port, ExpiresAt: g.ExpiresAt, Destination: a})
		}
	}
	return grants, bastion
}
