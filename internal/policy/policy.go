// Package policy holds the JIT policy of a target and decides whether an
// access request fits it. It is pure: no I/O, and time comes in as arguments.
package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/text"
)

// Protocol is the transport protocol of a port rule.
type Protocol string

// The protocols a port rule may name.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// ParseProtocol accepts "tcp" or "udp" in any case.
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(strings.ToLower(strings.TrimSpace(s))); p {
	case TCP, UDP:
		return p, nil
	}
	return "", fmt.Errorf("protocol %q: must be tcp or udp", s)
}

// Port names one protocol port, written "22/tcp".
type Port struct {
	Number   uint16   `json:"port"`
	Protocol Protocol `json:"protocol"`
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Number, p.Protocol) }

// ParsePort parses "22", "22/tcp" or "53/udp"; a bare number means TCP.
func ParsePort(s string) (Port, error) {
	num, proto, found := strings.Cut(strings.TrimSpace(s), "/")
	p := Port{Protocol: TCP}
	if found {
		pr, err := ParseProtocol(proto)
		if err != nil {
			return Port{}, fmt.Errorf("port %q: %w", s, err)
		}
		p.Protocol = pr
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return Port{}, fmt.Errorf("port %q: must be a number from 1 to 65535, optionally followed by /tcp or /udp", s)
	}
	p.Number = uint16(n)
	return p, nil
}

// Rule is one port rule of a policy.
type Rule struct {
	Port
	// AllowedSources are the prefixes a requested source must lie inside.
	// Empty means "per request": the requester names the source, no wider
	// than Limits.PerRequestBits.
	AllowedSources []netip.Prefix `json:"allowed_sources"`
	// MaxDuration caps a grant on this port.
	MaxDuration time.Duration `json:"max_duration"`
	// Approval says who must agree before the port opens.
	Approval Approval `json:"approval"`
	// Justification constrains the requester's reason.
	Justification Justification `json:"justification"`
	// CloseEstablished makes expiry and revocation also end established
	// sessions (off by default, as Azure keeps them).
	CloseEstablished bool `json:"close_established,omitempty"`
	// Publish, for a target behind a gateway, maps the port on the gateway's
	// public address (DNAT); MappedPort asks for a given mapped port, else
	// one is allocated.
	Publish    bool   `json:"publish,omitempty"`
	MappedPort uint16 `json:"mapped_port,omitempty"`
	// Access says how a grant on this port may be used: directly from the
	// granted source address (a kernel element; the default), only through
	// jitgate's bastion relay (nothing is opened in the kernel), or both.
	Access Access `json:"access,omitempty"`
	// IdleTimeout ends a bastion session in which no byte moved either way
	// for this long (0: never idle out). Only rules reachable through the
	// bastion take one: the kernel path keeps no sessions.
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
	// Logins are the user names on the target that jitgate's SSH
	// certificate authority may sign a certificate for, on a grant for this
	// port (sshd's TrustedUserCAKeys then lets the holder in as one of them
	// until the grant's deadline). Empty: no certificates; people log in
	// with their own keys.
	Logins []string `json:"logins,omitempty"`
	// Record makes every session on this port go through a path the
	// server records (its SSH terminal: the browser's, or jitgate ssh's):
	// output always, in asciicast v2 under the data directory. Raw
	// tunnels to the port are refused, since the server cannot see into
	// them. Only a port reached through the bastion alone may be recorded:
	// a direct grant would be a way around the recorder.
	Record bool `json:"record,omitempty"`
	// RecordInput also records what the person types (passwords typed at
	// a prompt included: keystrokes are not echoed, but they are input).
	RecordInput bool `json:"record_input,omitempty"`
	// Windows, when not empty, are the only times a grant on this port may
	// start ("Mon-Fri 08:00-18:00 Europe/Berlin", see Window), and a grant
	// ends at the latest when its window closes. Kept in canonical form.
	Windows []string `json:"windows,omitempty"`
	// ApprovalGroups, when not empty, ask for approvals from each of
	// several groups or roles: Count distinct approvers from each, never the
	// requester, and no one approver counted for two groups. Such a rule's
	// approval is manual and needs at least the sum of the counts.
	ApprovalGroups []GroupApproval `json:"approvals,omitempty"`
}

// GroupApproval asks for Count approvals from approvers who are members of
// a group ("group:dba", an SSO group reaching a token's principals) or who
// hold a role in a scope covering the target ("role:approver").
type GroupApproval struct {
	From  string `json:"from"`
	Count int    `json:"count"`
}

// CheckApproverSet checks the form of a GroupApproval's From: group:NAME or
// role:NAME, one-line text without spaces. Whether a role name exists is
// for authz to say (the caller checks it).
func CheckApproverSet(from string) error {
	kind, name, ok := strings.Cut(from, ":")
	if !ok || (kind != "group" && kind != "role") || name == "" || strings.ContainsAny(name, " \t,") || text.Check(name) != nil || text.Len(name) > 256 {
		return fmt.Errorf("%q: name approvers as group:NAME (an SSO or token group) or role:NAME (a role in scope of the target)", from)
	}
	return nil
}

// MaxLogins bounds the login names of one rule.
const MaxLogins = 32

// loginRE is a portable POSIX user name (IEEE Std 1003.1 3.437) that does
// not start with a hyphen, at most 32 bytes as useradd allows. Nothing else
// reaches a certificate's principals: no control characters, spaces, commas
// (sshd's list separator) or wildcards.
var loginRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$`)

// CheckLogin says why s is not a login name a rule may name, or nil.
func CheckLogin(s string) error {
	if !loginRE.MatchString(s) {
		return fmt.Errorf("%q is not a POSIX user name (letters, digits, '.', '_', '-', not starting with '-', at most 32)", s)
	}
	return nil
}

// MinIdleTimeout is the shortest idle timeout a rule may set.
const MinIdleTimeout = time.Second

// Access is the way a port rule may be reached.
type Access string

// The ways a port may be reached. A bastion grant opens nothing in the
// kernel: the target's agent reaches the service from inside, for one
// authenticated principal's tunnel at a time.
const (
	AccessDirect  Access = "direct"
	AccessBastion Access = "bastion"
	AccessBoth    Access = "both"
)

// ParseAccess accepts direct, bastion or both ("" means direct).
func ParseAccess(s string) (Access, error) {
	switch a := Access(strings.ToLower(strings.TrimSpace(s))); a {
	case "":
		return AccessDirect, nil
	case AccessDirect, AccessBastion, AccessBoth:
		return a, nil
	}
	return "", fmt.Errorf("access %q: must be direct, bastion or both", s)
}

// Direct reports whether a grant opens the port to its source address.
func (a Access) Direct() bool { return a == "" || a == AccessDirect || a == AccessBoth }

// Bastion reports whether a grant may be used through the bastion relay.
func (a Access) Bastion() bool { return a == AccessBastion || a == AccessBoth }

// BastionOnly reports whether every one of ports is reached only through
// the bastion: a request for them needs no source address.
func (pol Policy) BastionOnly(ports []Port) bool {
	for _, p := range ports {
		r, ok := pol.Rule(p)
		if !ok || r.Access.Direct() {
			return false
		}
	}
	return len(ports) > 0
}

// Approval modes.
const (
	// Auto approves a request that fits the policy and the requester's role
	// at once (Azure's behaviour).
	Auto = "auto"
	// Manual needs Approvals distinct approvers in scope.
	Manual = "manual"
)

// MaxApprovals bounds how many approvers a rule may ask for.
const MaxApprovals = 10

// Approval is a rule's approval workflow.
type Approval struct {
	Mode      string `json:"mode"`
	Approvals int    `json:"approvals,omitempty"`
}

// Justification rules for a request's reason.
type Justification struct {
	Required  bool   `json:"required,omitempty"`
	MinLength int    `json:"min_length,omitempty"`
	Pattern   string `json:"pattern,omitempty"` // e.g. a ticket number: "^(INC|CHG)-[0-9]+"
}

// ApprovalGroupsRequired is what a request for ports needs by group: for
// every group or role any of their rules names, the most any of them asks
// for, in the order the rules first name them.
func (pol Policy) ApprovalGroupsRequired(ports []Port) []GroupApproval {
	var out []GroupApproval
	for _, p := range ports {
		r, ok := pol.Rule(p)
		if !ok {
			continue
		}
		for _, g := range r.ApprovalGroups {
			i := slices.IndexFunc(out, func(o GroupApproval) bool { return o.From == g.From })
			if i < 0 {
				out = append(out, g)
			} else {
				out[i].Count = max(out[i].Count, g.Count)
			}
		}
	}
	return out
}

// check returns why reason does not meet j, or "".
func (j Justification) check(reason string) string {
	switch {
	case (j.Required || j.MinLength > 0) && strings.TrimSpace(reason) == "":
		return "a reason is required"
	case len([]rune(strings.TrimSpace(reason))) < j.MinLength:
		return fmt.Sprintf("the reason must be at least %d characters", j.MinLength)
	case j.Pattern != "":
		re, err := regexp.Compile(j.Pattern)
		if err != nil || !re.MatchString(reason) {
			return fmt.Sprintf("the reason must match %s", j.Pattern)
		}
	}
	return ""
}

// ApprovalsRequired is how many approvals a request for ports needs: the
// most any of their rules asks for; 0 means approved at once.
func (pol Policy) ApprovalsRequired(ports []Port) int {
	n := 0
	for _, p := range ports {
		if r, ok := pol.Rule(p); ok && r.Approval.Mode == Manual {
			n = max(n, r.Approval.Approvals)
		}
	}
	return n
}

// Policy is the JIT policy of one target: the ports it protects.
type Policy struct {
	Rules []Rule `json:"rules"`
}

// Rule returns the rule for p, if the policy configures it.
func (pol Policy) Rule(p Port) (Rule, bool) {
	for _, r := range pol.Rules {
		if r.Port == p {
			return r, true
		}
	}
	return Rule{}, false
}

// Equal reports whether two policies say the same thing in the same order.
func (pol Policy) Equal(o Policy) bool {
	if len(pol.Rules) != len(o.Rules) {
		return false
	}
	for i, r := range pol.Rules {
		q := o.Rules[i]
		if r.Port != q.Port || r.MaxDuration != q.MaxDuration || len(r.AllowedSources) != len(q.AllowedSources) ||
			r.Approval != q.Approval || r.Justification != q.Justification ||
			r.CloseEstablished != q.CloseEstablished || r.Publish != q.Publish || r.MappedPort != q.MappedPort ||
			r.Access != q.Access || r.IdleTimeout != q.IdleTimeout || !slices.Equal(r.Logins, q.Logins) ||
			r.Record != q.Record || r.RecordInput != q.RecordInput || !slices.Equal(r.Windows, q.Windows) ||
			!slices.Equal(r.ApprovalGroups, q.ApprovalGroups) {
			return false
		}
		for j := range r.AllowedSources {
			if r.AllowedSources[j] != q.AllowedSources[j] {
				return false
			}
		}
	}
	return true
}

// Limits are installation-wide bounds on policies and requests.
type Limits struct {
	// MinRuleDuration is the smallest max duration a rule may set (5 min).
	MinRuleDuration time.Duration
	// MaxRuleDuration is the cap on any rule's max duration (24 h).
	MaxRuleDuration time.Duration
	// DefaultRuleDuration is used when a rule names no max duration (3 h).
	DefaultRuleDuration time.Duration
	// MinRequestDuration is the shortest grant anyone may ask for (1 s).
	MinRequestDuration time.Duration
	// PerRequestBits4 and PerRequestBits6 are the shortest prefix lengths a
	// requester may name on a rule without allowed sources (32 and 128: a
	// single address).
	PerRequestBits4, PerRequestBits6 int
	// MaxLivePerRequester caps the live requests (awaiting approval, pending
	// or active) one requester holds on one target (256), and
	// MaxLivePerTarget those of all requesters on one target (100,000): every
	// live request costs rows, a firewall element and bytes in each agent
	// poll, so a requester (or a script gone wrong) must not grow them
	// without bound.
	MaxLivePerRequester, MaxLivePerTarget int
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits {
	return Limits{
		MinRuleDuration:     5 * time.Minute,
		MaxRuleDuration:     24 * time.Hour,
		DefaultRuleDuration: 3 * time.Hour,
		MinRequestDuration:  time.Second,
		PerRequestBits4:     32,
		PerRequestBits6:     128,
		MaxLivePerRequester: 256,
		MaxLivePerTarget:    100_000,
	}
}

// Validate checks the limits themselves.
func (l Limits) Validate() error {
	switch {
	case l.MinRuleDuration <= 0 || l.MaxRuleDuration < l.MinRuleDuration:
		return fmt.Errorf("max rule duration %s must be at least %s", l.MaxRuleDuration, l.MinRuleDuration)
	case l.DefaultRuleDuration < l.MinRuleDuration || l.DefaultRuleDuration > l.MaxRuleDuration:
		return fmt.Errorf("default rule duration %s must lie between %s and %s", l.DefaultRuleDuration, l.MinRuleDuration, l.MaxRuleDuration)
	case l.PerRequestBits4 < 0 || l.PerRequestBits4 > 32:
		return fmt.Errorf("per-request IPv4 prefix length %d must be 0-32", l.PerRequestBits4)
	case l.PerRequestBits6 < 0 || l.PerRequestBits6 > 128:
		return fmt.Errorf("per-request IPv6 prefix length %d must be 0-128", l.PerRequestBits6)
	case l.MaxLivePerRequester < 1:
		return fmt.Errorf("%s %d must be at least 1", LimitLivePerRequester, l.MaxLivePerRequester)
	case l.MaxLivePerTarget < l.MaxLivePerRequester:
		return fmt.Errorf("%s %d must be at least %s (%d)", LimitLivePerTarget, l.MaxLivePerTarget, LimitLivePerRequester, l.MaxLivePerRequester)
	}
	return nil
}

// The names of the caps on live requests, as the server flags that set them.
const (
	LimitLivePerRequester = "max-live-requests-per-requester"
	LimitLivePerTarget    = "max-live-requests-per-target"
)

// Live counts live requests (awaiting approval, pending or active): those of
// one requester on one target, and those of the whole target.
type Live struct {
	Requester, Target int
}

// LimitError is a request refused because it would exceed a cap on live
// requests. It is not a *DenyError: the policy allows the request, the
// installation has no room for it now.
type LimitError struct {
	// Limit is the name of the cap (LimitLivePerRequester or
	// LimitLivePerTarget) and Max its value.
	Limit string
	Max   int
	// Requester and Target say whose requests are counted.
	Requester, Target string
}

func (e *LimitError) Error() string {
	if e.Limit == LimitLivePerRequester {
		return fmt.Sprintf("too many live requests: %s already holds the maximum of %d live (pending or active) requests on target %s (limit %s); revoke some or wait for them to end",
			e.Requester, e.Max, e.Target, e.Limit)
	}
	return fmt.Sprintf("too many live requests: target %s already holds the maximum of %d live (pending or active) requests (limit %s)",
		e.Target, e.Max, e.Limit)
}

// CheckLive decides whether a new request of requester on target may take
// the live counts from before to after. Only growth is refused: a request
// that adds nothing to a count (one that only extends grants the requester
// holds, superseding the request they came from) passes at the cap, and
// even above it after the cap was lowered. The returned error is a
// *LimitError naming the cap.
func (l Limits) CheckLive(requester, target string, before, after Live) error {
	if after.Requester > before.Requester && after.Requester > l.MaxLivePerRequester {
		return &LimitError{Limit: LimitLivePerRequester, Max: l.MaxLivePerRequester, Requester: requester, Target: target}
	}
	if after.Target > before.Target && after.Target > l.MaxLivePerTarget {
		return &LimitError{Limit: LimitLivePerTarget, Max: l.MaxLivePerTarget, Requester: requester, Target: target}
	}
	return nil
}

// FieldError says which field of an input is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Normalize fills defaults (protocol, max duration, masked prefixes) and
// validates the policy against the limits. The returned error is a
// *FieldError naming the first bad field.
func (l Limits) Normalize(pol Policy) (Policy, error) {
	if len(pol.Rules) == 0 {
		return Policy{}, &FieldError{"rules", "a policy needs at least one port rule"}
	}
	seen := map[Port]bool{}
	out := Policy{Rules: make([]Rule, 0, len(pol.Rules))}
	for i, r := range pol.Rules {
		field := fmt.Sprintf("rules[%d]", i)
		if r.Number == 0 {
			return Policy{}, &FieldError{field + ".port", "must be a number from 1 to 65535"}
		}
		if r.Protocol == "" {
			r.Protocol = TCP
		}
		proto, err := ParseProtocol(string(r.Protocol))
		if err != nil {
			return Policy{}, &FieldError{field + ".protocol", "must be tcp or udp"}
		}
		r.Protocol = proto
		if seen[r.Port] {
			return Policy{}, &FieldError{field, fmt.Sprintf("port %s is configured twice", r.Port)}
		}
		seen[r.Port] = true
		if r.MaxDuration == 0 {
			r.MaxDuration = l.DefaultRuleDuration
		}
		if r.MaxDuration < l.MinRuleDuration || r.MaxDuration > l.MaxRuleDuration {
			return Policy{}, &FieldError{field + ".max_duration", fmt.Sprintf("%s is outside %s to %s", r.MaxDuration, l.MinRuleDuration, l.MaxRuleDuration)}
		}
		srcs := make([]netip.Prefix, 0, len(r.AllowedSources))
		for j, p := range r.AllowedSources {
			if !p.IsValid() {
				return Policy{}, &FieldError{fmt.Sprintf("%s.allowed_sources[%d]", field, j), "not a valid CIDR prefix"}
			}
			srcs = append(srcs, Canonical(p))
		}
		r.AllowedSources = srcs
		groups, err := normalizeGroups(field, r.ApprovalGroups)
		if err != nil {
			return Policy{}, err
		}
		r.ApprovalGroups = groups
		if sumCounts(groups) > MaxApprovals {
			return Policy{}, &FieldError{field + ".approvals", fmt.Sprintf("the counts add up to %d: at most %d approvals", sumCounts(groups), MaxApprovals)}
		}
		if len(groups) > 0 && r.Approval.Mode == "" {
			r.Approval.Mode = Manual
		}
		switch r.Approval.Mode {
		case "", Auto:
			if len(groups) > 0 {
				return Policy{}, &FieldError{field + ".approval.mode", "a rule with approvals by group is manual: drop \"mode: auto\" or the approvals"}
			}
			if r.Approval.Approvals != 0 {
				return Policy{}, &FieldError{field + ".approval.approvals", "only a manual approval takes a number of approvals"}
			}
			r.Approval = Approval{Mode: Auto}
		case Manual:
			if r.Approval.Approvals == 0 {
				r.Approval.Approvals = 1
			}
			if len(r.ApprovalGroups) > 0 {
				// A rule with approvals by group needs at least one
				// distinct approver per counted approval.
				r.Approval.Approvals = max(r.Approval.Approvals, sumCounts(r.ApprovalGroups))
			}
			if r.Approval.Approvals < 1 || r.Approval.Approvals > MaxApprovals {
				return Policy{}, &FieldError{field + ".approval.approvals", fmt.Sprintf("must be from 1 to %d", MaxApprovals)}
			}
		default:
			return Policy{}, &FieldError{field + ".approval.mode", fmt.Sprintf("%q must be auto or manual", r.Approval.Mode)}
		}
		if j := r.Justification; j.MinLength < 0 || j.MinLength > MaxReasonLen {
			return Policy{}, &FieldError{field + ".justification.min_length", fmt.Sprintf("must be from 0 to %d", MaxReasonLen)}
		}
		if p := r.Justification.Pattern; p != "" {
			if err := text.Check(p); err != nil {
				return Policy{}, &FieldError{field + ".justification.pattern", err.Error()}
			}
			if text.Len(p) > 200 {
				return Policy{}, &FieldError{field + ".justification.pattern", "at most 200 characters"}
			}
			if _, err := regexp.Compile(p); err != nil {
				return Policy{}, &FieldError{field + ".justification.pattern", fmt.Sprintf("not a valid regular expression: %v", err)}
			}
		}
		ws, err := ParseWindows(field+".windows", r.Windows)
		if err != nil {
			return Policy{}, err
		}
		if len(ws) > MaxWindows {
			return Policy{}, &FieldError{field + ".windows", fmt.Sprintf("%d windows: at most %d", len(ws), MaxWindows)}
		}
		r.Windows = nil
		for i, w := range ws {
			c := w.String()
			if slices.Contains(r.Windows, c) {
				return Policy{}, &FieldError{fmt.Sprintf("%s.windows[%d]", field, i), fmt.Sprintf("%q is named twice", c)}
			}
			r.Windows = append(r.Windows, c)
		}
		if r.MappedPort != 0 && !r.Publish {
			return Policy{}, &FieldError{field + ".mapped_port", "only a published port takes a mapped port"}
		}
		if r.MappedPort != 0 && (r.MappedPort < MappedPortMin || r.MappedPort > MappedPortMax) {
			return Policy{}, &FieldError{field + ".mapped_port", fmt.Sprintf("%d is outside the range %d-%d that gateways publish on", r.MappedPort, MappedPortMin, MappedPortMax)}
		}
		acc, err := ParseAccess(string(r.Access))
		if err != nil {
			return Policy{}, &FieldError{field + ".access", fmt.Sprintf("%q must be direct, bastion or both", r.Access)}
		}
		// Direct is kept as "" (the zero value), so that policies stored
		// before access existed compare equal to their normal form.
		r.Access = acc
		if acc == AccessDirect {
			r.Access = ""
		}
		if r.IdleTimeout != 0 && !acc.Bastion() {
			return Policy{}, &FieldError{field + ".idle_timeout", "only a rule reachable through the bastion (access bastion or both) takes an idle timeout"}
		}
		if r.IdleTimeout != 0 && (r.IdleTimeout < MinIdleTimeout || r.IdleTimeout > l.MaxRuleDuration) {
			return Policy{}, &FieldError{field + ".idle_timeout", fmt.Sprintf("%s is outside %s to %s", r.IdleTimeout, MinIdleTimeout, l.MaxRuleDuration)}
		}
		if len(r.Logins) > MaxLogins {
			return Policy{}, &FieldError{field + ".logins", fmt.Sprintf("%d login names: at most %d", len(r.Logins), MaxLogins)}
		}
		if len(r.Logins) > 0 && r.Protocol != TCP {
			return Policy{}, &FieldError{field + ".logins", "only a TCP port (an SSH server) takes login names"}
		}
		logins := make([]string, 0, len(r.Logins))
		for j, l := range r.Logins {
			if err := CheckLogin(l); err != nil {
				return Policy{}, &FieldError{fmt.Sprintf("%s.logins[%d]", field, j), err.Error()}
			}
			if slices.Contains(logins, l) {
				return Policy{}, &FieldError{fmt.Sprintf("%s.logins[%d]", field, j), fmt.Sprintf("%q is named twice", l)}
			}
			logins = append(logins, l)
		}
		r.Logins = nil
		if len(logins) > 0 {
			r.Logins = logins
		}
		if r.RecordInput && !r.Record {
			return Policy{}, &FieldError{field + ".record_input", "only a recorded rule (record: true) records input"}
		}
		if r.Record && (acc != AccessBastion || r.Protocol != TCP) {
			return Policy{}, &FieldError{field + ".record", "only a TCP port reached through the bastion alone (access: bastion) can be recorded: a direct grant would not pass the recorder"}
		}
		if r.Publish && !acc.Direct() {
			return Policy{}, &FieldError{field + ".publish", "a port reached only through the bastion cannot be published"}
		}
		out.Rules = append(out.Rules, r)
	}
	return out, nil
}

// MaxWindows bounds the time windows of one rule.
const MaxWindows = 16

func sumCounts(gs []GroupApproval) int {
	n := 0
	for _, g := range gs {
		n += g.Count
	}
	return n
}

// normalizeGroups checks a rule's approvals by group: known forms, counts
// from 1 to MaxApprovals (0 means 1), no group named twice.
func normalizeGroups(field string, gs []GroupApproval) ([]GroupApproval, error) {
	if len(gs) == 0 {
		return nil, nil
	}
	out := make([]GroupApproval, 0, len(gs))
	for i, g := range gs {
		f := fmt.Sprintf("%s.approvals[%d]", field, i)
		g.From = strings.TrimSpace(g.From)
		if err := CheckApproverSet(g.From); err != nil {
			return nil, &FieldError{f + ".from", err.Error()}
		}
		if g.Count == 0 {
			g.Count = 1
		}
		if g.Count < 1 || g.Count > MaxApprovals {
			return nil, &FieldError{f + ".count", fmt.Sprintf("must be from 1 to %d", MaxApprovals)}
		}
		if slices.ContainsFunc(out, func(o GroupApproval) bool { return o.From == g.From }) {
			return nil, &FieldError{f + ".from", fmt.Sprintf("%s is named twice", g.From)}
		}
		out = append(out, g)
	}
	return out, nil
}

// Canonical unmaps IPv4-mapped IPv6 prefixes that lie inside ::ffff:0:0/96
// and masks host bits, so that ::ffff:192.0.2.0/120 and 192.0.2.7/24 both
// become 192.0.2.0/24. A shorter mapped prefix covers non-IPv4 addresses and
// stays IPv6.
func Canonical(p netip.Prefix) netip.Prefix {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// ParsePrefix accepts an address ("192.0.2.7", "2001:db8::1") or a CIDR
// prefix; an address means a single-address prefix. Host bits are masked.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("source %q is not a valid address or CIDR prefix", s)
		}
		return Canonical(p), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("source %q is not a valid address or CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Contains reports whether inner lies entirely inside outer: same family,
// outer no longer than inner, and inner's network inside outer. This is the
// subset test a request needs (a /32 inside an allowed /24 passes), not the
// overlap test (a /16 around an allowed /24 does not).
func Contains(outer, inner netip.Prefix) bool {
	outer, inner = Canonical(outer), Canonical(inner)
	return outer.Addr().Is4() == inner.Addr().Is4() &&
		outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

var targetName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateTargetName checks the DNS-label form of a target name.
//
// The DNS-label form is stricter than text.Check: no control character, no
// bidirectional override, nothing outside ASCII letters, digits and '-'.
// Gateways are targets and share this rule.
func ValidateTargetName(name string) error {
	if !targetName.MatchString(name) {
		return &FieldError{"name", fmt.Sprintf("%q must be a DNS label: 1-63 lowercase letters, digits and '-', not starting or ending with '-'", name)}
	}
	return nil
}

var labelKey = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)

// ValidateLabels checks label keys and values. A value is at most 63
// characters of one-line text (text.Check) without spaces, ',' or '=',
// which the selector syntax uses.
func ValidateLabels(labels map[string]string) error {
	for k, v := range labels {
		if err := text.Check(k); err != nil {
			return &FieldError{"labels", "a key " + err.Error()}
		}
		if !labelKey.MatchString(k) {
			return &FieldError{"labels", fmt.Sprintf("key %q must be 1-63 lowercase letters, digits, '.', '_', '/', '-'", k)}
		}
		if err := text.Check(v); err != nil {
			return &FieldError{"labels", fmt.Sprintf("value of %q %v", k, err)}
		}
		if text.Len(v) > 63 || strings.ContainsAny(v, " ,=") {
			return &FieldError{"labels", fmt.Sprintf("value %q of %q must be at most 63 characters without spaces, ',' or '='", v, k)}
		}
	}
	return nil
}

// Request is what a requester asks for, already parsed.
type Request struct {
	Ports    []Port
	Source   netip.Prefix
	Duration time.Duration
	Reason   string
	// At is when the grant would start: the rules' time windows are
	// checked at this instant. Required when a rule has windows.
	At time.Time
}

// MappedPortMin and MappedPortMax bound the ports a gateway publishes
// targets on. A mapped port is a port of the gateway's own public address:
// outside this range a policy-admin of one target could take over the
// gateway's own services (its sshd on 22, jitgate's API) for every source
// granted that target, so explicit mapped ports stay inside it too.
const (
	MappedPortMin = 20000
	MappedPortMax = 29999
)

// MaxReasonLen bounds the free-text justification, in characters.
const MaxReasonLen = 1000

// CheckReason checks a reason (a request's justification, an approver's or
// revoker's note): at most MaxReasonLen characters of one-line text with no
// control characters (text.Check). Newlines are refused rather than kept:
// every place a reason is shown (terminal tables, CSV, chat webhooks) would
// otherwise have to escape them.
func CheckReason(reason string) error {
	if err := text.CheckLen(reason, MaxReasonLen); err != nil {
		return &FieldError{"reason", err.Error()}
	}
	return nil
}

// DenyError says which rule refused a request and why.
type DenyError struct {
	// Rule is the port rule that refused ("22/tcp"), or "" when the request
	// as a whole was refused.
	Rule   string
	Reason string
	// NextOpening, for a request refused outside a rule's time windows,
	// is when the next window opens (zero otherwise).
	NextOpening time.Time
}

func (e *DenyError) Error() string {
	if e.Rule == "" {
		return "request refused: " + e.Reason
	}
	return fmt.Sprintf("request refused by rule %s: %s", e.Rule, e.Reason)
}

// Evaluate decides whether req fits pol under l. It returns nil, a
// *FieldError for a malformed request, or a *DenyError naming the rule that
// refused. It checks every port; the first refusal wins.
func (l Limits) Evaluate(pol Policy, req Request) (err error) {
	if len(req.Ports) == 0 {
		return &FieldError{"ports", "name at least one port"}
	}
	// No source means a bastion-only request: it opens nothing in the
	// kernel, and every port must allow the bastion (checked per rule).
	if req.Duration < l.MinRequestDuration {
		return &FieldError{"duration", fmt.Sprintf("%s is shorter than the minimum of %s", req.Duration, l.MinRequestDuration)}
	}
	if err := CheckReason(req.Reason); err != nil {
		return err
	}
	if len(pol.Rules) == 0 {
		return &DenyError{Reason: "the target has no JIT policy"}
	}
	defer func() {
		// Time windows last: a request that a rule refuses for its source
		// or duration says so, whatever the hour.
		if err == nil && !req.At.IsZero() {
			_, _, err = pol.CheckWindows(req.Ports, req.At)
		}
	}()
	src := Canonical(req.Source)
	seen := map[Port]bool{}
	for _, p := range req.Ports {
		if seen[p] {
			return &FieldError{"ports", fmt.Sprintf("port %s is named twice", p)}
		}
		seen[p] = true
		r, ok := pol.Rule(p)
		if !ok {
			return &DenyError{Rule: p.String(), Reason: "the target's policy does not configure this port"}
		}
		if len(r.Windows) > 0 && req.At.IsZero() {
			return &DenyError{Rule: p.String(), Reason: "the rule has time windows and the request has no start time to check them at"}
		}
		if why := r.Justification.check(req.Reason); why != "" {
			return &DenyError{Rule: p.String(), Reason: why}
		}
		if req.Duration > r.MaxDuration {
			return &DenyError{Rule: p.String(), Reason: fmt.Sprintf("duration %s exceeds the maximum of %s", req.Duration, r.MaxDuration)}
		}
		if !req.Source.IsValid() {
			if !r.Access.Bastion() {
				return &FieldError{"source", fmt.Sprintf("must be an address or CIDR prefix: port %s is reached directly, not through the bastion", p)}
			}
			continue
		}
		if !r.Access.Direct() {
			// Reached only through the bastion: the source opens nothing.
			continue
		}
		if len(r.AllowedSources) == 0 {
			limit := l.PerRequestBits4
			if src.Addr().Is6() {
				limit = l.PerRequestBits6
			}
			if src.Bits() < limit {
				return &DenyError{Rule: p.String(), Reason: fmt.Sprintf("source %s is wider than the per-request limit of /%d", src, limit)}
			}
			continue
		}
		inside := false
		for _, a := range r.AllowedSources {
			if Contains(a, src) {
				inside = true
				break
			}
		}
		if !inside {
			return &DenyError{Rule: p.String(), Reason: fmt.Sprintf("source %s is not inside any allowed prefix (%s)", src, joinPrefixes(r.AllowedSources))}
		}
	}
	return nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
