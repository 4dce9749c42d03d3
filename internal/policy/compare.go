package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Change is one difference between a target's policy and the policy that
// replaces it. Compare decides, in this one place, what counts as a change
// and which changes weaken the gate, so that the API, the CLI's apply and
// bulk actions all say the same thing and none can weaken a policy silently.
type Change struct {
	// Port is the rule the change is in.
	Port Port
	// Field is the setting that changes (the JSON name: "approval",
	// "allowed_sources", "justification.min_length", ...), or "" when the
	// whole rule is added (From is "") or dropped (To is "").
	Field string
	// From and To say the setting before and after, in words.
	From, To string
	// Weaker is true when the new setting lets someone or something through
	// that the old one stopped: a dropped rule, a longer maximum, a wider
	// source, fewer approvals, a laxer justification, sessions kept open at
	// expiry, a port published on a gateway.
	Weaker bool
}

// Dropped reports whether the change removes the rule: its port is no longer
// gated.
func (c Change) Dropped() bool { return c.Field == "" && c.To == "" }

// String says the change in one line, such as
// "22/tcp approval: manual (2 approvals) -> auto (weaker)".
func (c Change) String() string {
	var s string
	switch {
	case c.Field == "" && c.From == "":
		s = fmt.Sprintf("%s: new rule (%s)", c.Port, c.To)
	case c.Dropped():
		s = fmt.Sprintf("%s: rule dropped: the port is no longer gated", c.Port)
	default:
		s = fmt.Sprintf("%s %s: %s -> %s", c.Port, c.Field, c.From, c.To)
	}
	if c.Weaker {
		s += " (weaker)"
	}
	return s
}

// Compare lists what replacing old by pol changes: the changed settings of
// each rule in pol's order, then the rules pol drops in old's order. A nil
// old means the target had no policy: every rule is new, and nothing is
// weaker (ports that were open become gated). Both policies are expected to
// be normalized (Normalize); the limits say how wide a per-request source
// may be, to judge a rule that moves from per-request sources to a list.
// Compare is empty exactly when old and pol hold the same rules (in any
// order).
func (l Limits) Compare(old *Policy, pol Policy) []Change {
	var out []Change
	var prev Policy
	if old != nil {
		prev = *old
	}
	for _, r := range pol.Rules {
		o, ok := prev.Rule(r.Port)
		if !ok {
			out = append(out, Change{Port: r.Port, To: describeRule(r)})
			continue
		}
		out = append(out, l.compareRule(o, r)...)
	}
	for _, o := range prev.Rules {
		if _, ok := pol.Rule(o.Port); !ok {
			out = append(out, Change{Port: o.Port, From: describeRule(o), Weaker: true})
		}
	}
	return out
}

// Weaker returns the changes that weaken the gate.
func Weaker(changes []Change) []Change {
	var out []Change
	for _, c := range changes {
		if c.Weaker {
			out = append(out, c)
		}
	}
	return out
}

// DroppedPorts returns the ports whose rules the changes drop.
func DroppedPorts(changes []Change) []Port {
	var out []Port
	for _, c := range changes {
		if c.Dropped() {
			out = append(out, c.Port)
		}
	}
	return out
}

// compareRule lists the differences between two rules for the same port.
// Every field of Rule is compared here (a reflection test checks that a
// new field cannot be forgotten).
func (l Limits) compareRule(o, r Rule) []Change {
	var out []Change
	add := func(field, from, to string, weaker bool) {
		out = append(out, Change{Port: r.Port, Field: field, From: from, To: to, Weaker: weaker})
	}
	if o.MaxDuration != r.MaxDuration {
		add("max_duration", FormatDuration(o.MaxDuration), FormatDuration(r.MaxDuration), r.MaxDuration > o.MaxDuration)
	}
	if !samePrefixes(o.AllowedSources, r.AllowedSources) {
		add("allowed_sources", describeSources(o.AllowedSources), describeSources(r.AllowedSources), l.widens(o.AllowedSources, r.AllowedSources))
	}
	if o.Approval != r.Approval {
		add("approval", describeApproval(o.Approval), describeApproval(r.Approval), approvalsOf(r.Approval) < approvalsOf(o.Approval))
	}
	oj, rj := o.Justification, r.Justification
	if oj.Required != rj.Required {
		// A minimum length also makes a reason required (see check).
		add("justification.required", onOff(oj.Required), onOff(rj.Required), oj.Required && rj.MinLength == 0)
	}
	if oj.MinLength != rj.MinLength {
		add("justification.min_length", strconv.Itoa(oj.MinLength), strconv.Itoa(rj.MinLength), rj.MinLength < oj.MinLength)
	}
	if oj.Pattern != rj.Pattern {
		// Any other pattern may accept a reason the old one refused: only
		// adding a pattern where there was none is surely not weaker.
		add("justification.pattern", describePattern(oj.Pattern), describePattern(rj.Pattern), oj.Pattern != "")
	}
	if o.CloseEstablished != r.CloseEstablished {
		add("close_established", onOff(o.CloseEstablished), onOff(r.CloseEstablished), o.CloseEstablished)
	}
	if o.Publish != r.Publish {
		// Publishing makes the port reachable on the gateway's public
		// address: more clients can reach it once granted.
		add("publish", onOff(o.Publish), onOff(r.Publish), r.Publish)
	}
	if o.MappedPort != r.MappedPort {
		add("mapped_port", describeMapped(o.MappedPort), describeMapped(r.MappedPort), false)
	}
	if o.IdleTimeout != r.IdleTimeout {
		// Longer, or none where there was one: an idle session lives on.
		add("idle_timeout", describeIdle(o.IdleTimeout), describeIdle(r.IdleTimeout),
			r.IdleTimeout == 0 || (o.IdleTimeout != 0 && r.IdleTimeout > o.IdleTimeout))
	}
	if !slices.Equal(o.Logins, r.Logins) {
		// A login the old rule did not name lets a certificate in as one
		// more user; removing logins only narrows.
		added := false
		for _, l := range r.Logins {
			added = added || !slices.Contains(o.Logins, l)
		}
		add("logins", describeLogins(o.Logins), describeLogins(r.Logins), added)
	}
	if o.Record != r.Record {
		// Not recording lets sessions go unseen (and raw tunnels in).
		add("record", onOff(o.Record), onOff(r.Record), o.Record)
	}
	if o.RecordInput != r.RecordInput {
		add("record_input", onOff(o.RecordInput), onOff(r.RecordInput), o.RecordInput)
	}
	if !slices.Equal(o.Windows, r.Windows) {
		// Weaker when the new windows admit a start the old ones refused:
		// no windows where there were some, or a wider or new window.
		add("windows", describeWindows(o.Windows), describeWindows(r.Windows), windowsWiden(o.Windows, r.Windows))
	}
	if !slices.Equal(o.ApprovalGroups, r.ApprovalGroups) {
		// Weaker when a group the old rule asked for is asked for less or
		// no more; adding a group or raising a count only narrows.
		weaker := false
		for _, g := range o.ApprovalGroups {
			i := slices.IndexFunc(r.ApprovalGroups, func(n GroupApproval) bool { return n.From == g.From })
			weaker = weaker || i < 0 || r.ApprovalGroups[i].Count < g.Count
		}
		add("approvals", describeGroups(o.ApprovalGroups), describeGroups(r.ApprovalGroups), weaker)
	}
	if oa, ra := accessOf(o.Access), accessOf(r.Access); oa != ra {
		// Weaker when it adds a way in: direct->both, bastion->both,
		// bastion->direct (the port opens to addresses again).
		add("access", string(oa), string(ra), (!oa.Direct() && ra.Direct()) || (!oa.Bastion() && ra.Bastion()))
	}
	return out
}

// widens reports whether the sources to lets a requester name a source that
// from refused. An empty list means per request: any single address (or a
// prefix no wider than the per-request limit) from anywhere.
func (l Limits) widens(from, to []netip.Prefix) bool {
	if len(to) == 0 {
		return len(from) > 0
	}
	for _, p := range to {
		if len(from) == 0 {
			limit := l.PerRequestBits4
			if p.Addr().Is6() {
				limit = l.PerRequestBits6
			}
			if p.Bits() < limit {
				return true
			}
			continue
		}
		inside := false
		for _, q := range from {
			if Contains(q, p) {
				inside = true
				break
			}
		}
		if !inside {
			return true
		}
	}
	return false
}

// approvalsOf is how many approvals an approval mode needs.
func approvalsOf(a Approval) int {
	if a.Mode == Manual {
		return max(a.Approvals, 1)
	}
	return 0
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func describeRule(r Rule) string {
	s := fmt.Sprintf("max %s, sources %s, approval %s", FormatDuration(r.MaxDuration), describeSources(r.AllowedSources), describeApproval(r.Approval))
	if r.CloseEstablished {
		s += ", close established"
	}
	if r.Publish {
		s += ", published"
	}
	if a := accessOf(r.Access); a != AccessDirect {
		s += ", access " + string(a)
	}
	if len(r.ApprovalGroups) > 0 {
		s += ", approvals " + describeGroups(r.ApprovalGroups)
	}
	if len(r.Windows) > 0 {
		s += ", windows " + describeWindows(r.Windows)
	}
	return s
}

func describeWindows(ws []string) string {
	if len(ws) == 0 {
		return "always"
	}
	return strings.Join(ws, "; ")
}

func describeGroups(gs []GroupApproval) string {
	if len(gs) == 0 {
		return "none"
	}
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = fmt.Sprintf("%d from %s", g.Count, g.From)
	}
	return strings.Join(s, ", ")
}

func describeIdle(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return FormatDuration(d)
}

func describeLogins(ls []string) string {
	if len(ls) == 0 {
		return "none"
	}
	return strings.Join(ls, ",")
}

// accessOf reads "" as direct, as Normalize does.
func accessOf(a Access) Access {
	if a == "" {
		return AccessDirect
	}
	return a
}

func describeSources(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "per request"
	}
	return joinPrefixes(ps)
}

func describeApproval(a Approval) string {
	if a.Mode == Manual {
		n := max(a.Approvals, 1)
		if n == 1 {
			return "manual (1 approval)"
		}
		return fmt.Sprintf("manual (%d approvals)", n)
	}
	return Auto
}

func describePattern(p string) string {
	if p == "" {
		return "none"
	}
	return strconv.Quote(p)
}

func describeMapped(p uint16) string {
	if p == 0 {
		return "allocated"
	}
	return strconv.Itoa(int(p))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// FormatDuration writes a duration the shortest way Go's ParseDuration
// reads back: "3h", "1h30m", "90s", not "3h0m0s".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
