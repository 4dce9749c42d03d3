// Package authz decides who may do what on which target: bindings of a
// principal (user, group or service) to a role within a scope (the whole
// installation, the targets carrying a label, or one target). It is pure:
// no I/O; callers pass the bindings and the target.
package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/jitgate/jitgate/internal/text"
)

// Role is a named set of permissions.
type Role string

// The roles, from least to most powerful.
const (
	Reader      Role = "reader"       // see targets, policies, own requests
	Requester   Role = "requester"    // request access in scope
	Approver    Role = "approver"     // approve or deny requests in scope
	PolicyAdmin Role = "policy-admin" // set policies, enroll targets in scope
	Auditor     Role = "auditor"      // read the whole audit trail
	Admin       Role = "admin"        // everything, including bindings and others' tokens
	// Breakglass opens a rule's port without approvers, in an emergency:
	// audited, sent to every webhook and alerted until reviewed. No other
	// role implies it (not even admin): it is bound on purpose, to few.
	Breakglass Role = "breakglass"
)

// Roles lists every role.
var Roles = []Role{Reader, Requester, Approver, PolicyAdmin, Auditor, Admin, Breakglass}

// ParseRole accepts a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.TrimSpace(s))
	if slices.Contains(Roles, r) {
		return r, nil
	}
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return "", fmt.Errorf("unknown role %q: use one of %s", s, strings.Join(names, ", "))
}

// Action is something a principal does.
type Action string

// The actions that are checked.
const (
	ReadTarget     Action = "target.read"        // see a target and its policy
	WriteTarget    Action = "target.write"       // enroll or remove a target
	WritePolicy    Action = "policy.write"       // set or remove a policy
	CreateRequest  Action = "request.create"     // ask for access
	ReadAnyRequest Action = "request.read"       // see others' requests (own are always visible)
	Approve        Action = "request.approve"    // approve or deny others' requests
	RevokeAny      Action = "request.revoke"     // revoke others' requests (own are always revocable)
	ReadAudit      Action = "audit.read"         // read the audit trail
	ManageAccess   Action = "access.manage"      // bindings, and tokens of others
	BreakGlass     Action = "request.breakglass" // open access without approvers, in an emergency
	ReviewAlerts   Action = "alert.review"       // mark a break-glass alert reviewed
)

// permissions says which actions each role allows.
var permissions = map[Role][]Action{
	Reader:      {ReadTarget},
	Requester:   {ReadTarget, CreateRequest},
	Approver:    {ReadTarget, ReadAnyRequest, Approve, RevokeAny},
	PolicyAdmin: {ReadTarget, WriteTarget, WritePolicy, ReadAnyRequest},
	Auditor:     {ReadTarget, ReadAnyRequest, ReadAudit, ReviewAlerts},
	Admin:       {ReadTarget, WriteTarget, WritePolicy, CreateRequest, ReadAnyRequest, Approve, RevokeAny, ReadAudit, ManageAccess, ReviewAlerts},
	Breakglass:  {ReadTarget, BreakGlass},
}

// Allows reports whether role r permits a.
func (r Role) Allows(a Action) bool { return slices.Contains(permissions[r], a) }

// Scope is where a binding applies: "*" (everything), "target:NAME" (one
// target) or "label:KEY=VALUE" (every target whose label KEY is exactly
// VALUE: a binding on group=prod does not cover group=production).
type Scope string

// Everywhere is the installation-wide scope.
const Everywhere Scope = "*"

// ParseScope accepts "*", "target:NAME", "label:KEY=VALUE", or the short
// forms "NAME" (a target) and "KEY=VALUE" (a label).
func ParseScope(s string) (Scope, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "*" || s == "all":
		return Everywhere, nil
	case strings.HasPrefix(s, "target:"):
		if name := strings.TrimPrefix(s, "target:"); validName(name) {
			return Scope(s), nil
		}
	case strings.HasPrefix(s, "label:"):
		k, v, ok := strings.Cut(strings.TrimPrefix(s, "label:"), "=")
		// At most 63 characters each, as a target's labels
		// (policy.ValidateLabels): a longer one covers nothing, and a
		// binding's scope is part of the bindings list's cursor, which
		// is bounded (internal/api/paging.go, maxCursor).
		if ok && k != "" && v != "" && text.Len(k) <= 63 && text.Len(v) <= 63 && !strings.ContainsAny(k+v, " ,=") && text.Check(k+v) == nil {
			return Scope(s), nil
		}
	case strings.Contains(s, "="):
		return ParseScope("label:" + s)
	case validName(s):
		return Scope("target:" + s), nil
	}
	return "", fmt.Errorf("scope %q: use *, a target name (target:web-01) or a label (label:group=prod)", s)
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Target is what a scope is matched against.
type Target struct {
	Name   string
	Labels map[string]string
}

// Covers reports whether the scope includes t. A nil t (an action on no
// particular target, such as reading the whole audit trail) is covered only
// by the installation-wide scope.
func (s Scope) Covers(t *Target) bool {
	if s == Everywhere {
		return true
	}
	if t == nil {
		return false
	}
	if name, ok := strings.CutPrefix(string(s), "target:"); ok {
		return name == t.Name
	}
	if kv, ok := strings.CutPrefix(string(s), "label:"); ok {
		k, v, _ := strings.Cut(kv, "=")
		got, has := t.Labels[k]
		return has && got == v
	}
	return false
}

// Contains reports whether s includes everything o does (for checking that
// a token's scope is no wider than its owner's).
func (s Scope) Contains(o Scope) bool {
	switch {
	case s == Everywhere:
		return true
	case o == Everywhere:
		return false
	}
	return s == o
}

// Binding gives a principal a role within a scope. Principal is
// "user:NAME", "group:NAME" or "service:NAME".
type Binding struct {
	ID        int64
	Principal string
	Role      Role
	Scope     Scope
}

// ParsePrincipal accepts "user:NAME", "group:NAME" or "service:NAME". NAME is
// at most 256 characters of one-line text without spaces (text.Check): a
// principal is printed in tables, audit trails and chat messages.
func ParsePrincipal(s string) (string, error) {
	if err := text.Check(s); err != nil {
		return "", fmt.Errorf("principal %s", err)
	}
	kind, name, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || name == "" || text.Len(name) > 256 || strings.ContainsAny(name, " ") {
		return "", fmt.Errorf("principal %q: use user:NAME, group:NAME or service:NAME", s)
	}
	switch kind {
	case "user", "group", "service":
		if err := CheckName(kind, name); err != nil {
			return "", fmt.Errorf("principal %q: %w", s, err)
		}
		return kind + ":" + name, nil
	}
	return "", fmt.Errorf("principal %q: use user:NAME, group:NAME or service:NAME", s)
}

// CheckName refuses a user or service name that could pass for a principal
// of another kind. Users and services appear as actors, requesters and
// token owners by name ("alice", "service:deploy"), so a user named
// "service:deploy" would read, and once compared, as the service. No user
// or service name may hold a colon (no kind prefix of any kind, present or
// future). Group names come from the identity provider and only ever appear
// with their "group:" prefix, so they may.
func CheckName(kind, name string) error {
	if (kind == "user" || kind == "service") && strings.Contains(name, ":") {
		return fmt.Errorf(`%s name %q holds a colon: names of users and services cannot carry a kind prefix such as "service:" or "user:"`, kind, name)
	}
	return nil
}

// Subject is who is asking: the principals (user or service, and groups) a
// token stands for, and, for tokens narrower than their owner, a limit.
type Subject struct {
	// Principals are "user:alice" or "service:ci", plus "group:ops" ...
	Principals []string
	// Limit, when non-empty, narrows the bindings: a binding counts only as
	// far as some limit grants the same role in a scope containing it.
	Limit []Grant
}

// Grant is a role in a scope, as a token's limit.
type Grant struct {
	Role  Role  `json:"role"`
	Scope Scope `json:"scope"`
}

// effective returns the bindings of bs that apply to sub, narrowed by its limit.
func (sub Subject) effective(bs []Binding) []Grant {
	var out []Grant
	for _, b := range bs {
		if !slices.Contains(sub.Principals, b.Principal) {
			continue
		}
		g := Grant{b.Role, b.Scope}
		if len(sub.Limit) == 0 {
			out = append(out, g)
			continue
		}
		for _, l := range sub.Limit {
			if l.Role != g.Role {
				continue
			}
			// The narrower of the two scopes applies.
			switch {
			case g.Scope.Contains(l.Scope):
				out = append(out, Grant{g.Role, l.Scope})
			case l.Scope.Contains(g.Scope):
				out = append(out, g)
			}
		}
	}
	return out
}

// Allowed reports whether sub may do a on t (nil: installation-wide).
func Allowed(bs []Binding, sub Subject, a Action, t *Target) bool {
	for _, g := range sub.effective(bs) {
		if g.Role.Allows(a) && g.Scope.Covers(t) {
			return true
		}
	}
	return false
}

// Grants returns the effective role grants of sub, for showing ("whoami")
// and for checking that a new token's limit stays within them.
func Grants(bs []Binding, sub Subject) []Grant { return sub.effective(bs) }

// Within reports whether every grant of limit is held by sub already:
// a token never carries more than its owner.
func Within(bs []Binding, sub Subject, limit []Grant) bool {
	have := sub.effective(bs)
	for _, l := range limit {
		ok := false
		for _, h := range have {
			if h.Role == l.Role && h.Scope.Contains(l.Scope) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Holds reports whether sub counts for an approval group of a policy rule
// on t: "group:NAME" when NAME is among its principals (an SSO group of
// the session, or a group a token was issued with), "role:ROLE" when one
// of its effective grants gives ROLE in a scope covering t. A token's
// limit narrows roles as it does everywhere; it does not change group
// membership.
func Holds(bs []Binding, sub Subject, from string, t *Target) bool {
	kind, name, ok := strings.Cut(from, ":")
	if !ok {
		return false
	}
	switch kind {
	case "group":
		return slices.Contains(sub.Principals, from)
	case "role":
		for _, g := range sub.effective(bs) {
			if string(g.Role) == name && g.Scope.Covers(t) {
				return true
			}
		}
	}
	return false
}
