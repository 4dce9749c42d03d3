// Package wire holds the JSON types of jitgate's REST API, shared by the
// server's handlers, the typed client, the CLI and the agent. It has no
// behaviour beyond encoding.
package wire

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/access"
)

// MaxRevision is the highest desired-state revision an agent may claim to
// have applied (a report's revision or high_water, a poll's after): the
// domain's bound, access.MaxRevision.
const MaxRevision = access.MaxRevision

// Duration is a time.Duration written as a Go duration string ("3h", "90s").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
// (time.Duration's String holds nothing JSON escapes: digits, letters, '.',
// '-' and 'µ'.)
func (d Duration) MarshalJSON() ([]byte, error) {
	s := time.Duration(d).String()
	b := make([]byte, 0, len(s)+2)
	return append(append(append(b, '"'), s...), '"'), nil
}

// UnmarshalJSON reads a duration string such as "1h30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, ok := plainString(b)
	if !ok {
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("duration must be a string such as \"1h\" or \"90s\"")
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: must look like \"1h\", \"30m\" or \"90s\"", s)
	}
	*d = Duration(v)
	return nil
}

// plainString returns the text of a JSON string literal that holds only
// printable ASCII and no escape (every duration written by MarshalJSON
// but one in µs), as json.Unmarshal would; ok is false for anything else,
// which json.Unmarshal then reads.
func plainString(b []byte) (s string, ok bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	in := b[1 : len(b)-1]
	for _, c := range in {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return "", false
		}
	}
	return string(in), true
}

// Error is the body of every 4xx and 5xx answer: an RFC 9457 problem
// (Content-Type application/problem+json). Type is "about:blank" (the
// status says what kind of problem it is) and Title the status's phrase;
// Detail says what is wrong in this occurrence and Instance names the
// occurrence by its request id ("urn:jitgate:request:<X-Request-Id>"), as
// found in the server's log and the audit trail.
//
// Error, Field and Rule are extension members. Error repeats Detail: agents
// and CLIs released before the problem format read it, and the device-login
// endpoint carries its RFC 8628 error code there ("authorization_pending").
type Error struct {
	Type     string `json:"type,omitempty"`
	Title    string `json:"title,omitempty"`
	Status   int    `json:"status,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Error    string `json:"error"`
	// Field names the input field that is wrong, when one is.
	Field string `json:"field,omitempty"`
	// Rule names the policy rule that refused a request ("22/tcp").
	Rule string `json:"rule,omitempty"`
	// NextOpening, for a request refused outside a rule's time windows,
	// is when the next window opens.
	NextOpening *time.Time `json:"next_opening,omitempty"`
}

// PortRule is one port of a JIT policy.
type PortRule struct {
	Port           uint16   `json:"port"`
	Protocol       string   `json:"protocol,omitempty"`
	AllowedSources []string `json:"allowed_sources,omitempty"`
	MaxDuration    Duration `json:"max_duration,omitempty"`
	// Approval is {"mode": "auto"} (the default) or {"mode": "manual", "approvals": N}.
	Approval *Approval `json:"approval,omitempty"`
	// Justification constrains the requester's reason.
	Justification *Justification `json:"justification,omitempty"`
	// CloseEstablished ends established sessions at expiry and revocation.
	CloseEstablished bool `json:"close_established,omitempty"`
	// Publish maps the port on the gateway's public address (targets behind
	// a gateway); MappedPort asks for a given mapped port.
	Publish    bool   `json:"publish,omitempty"`
	MappedPort uint16 `json:"mapped_port,omitempty"`
	// Access is direct (the default: a grant opens the port to its source
	// address), bastion (only through jitgate's relay; nothing opens in the
	// kernel) or both.
	Access string `json:"access,omitempty"`
	// IdleTimeout ends a bastion session idle this long ("15m"; absent:
	// never). Only rules with bastion access take one.
	IdleTimeout Duration `json:"idle_timeout,omitempty"`
	// Logins are the user names jitgate's SSH certificate authority may
	// sign a certificate for on a grant for this port (absent: none).
	Logins []string `json:"logins,omitempty"`
	// Record makes sessions on this port go through the server's recorded
	// SSH terminal; raw tunnels are refused. Needs access "bastion".
	Record bool `json:"record,omitempty"`
	// RecordInput also records keystrokes (needs record).
	RecordInput bool `json:"record_input,omitempty"`
	// Windows are the only times a grant may start, "DAYS HH:MM-HH:MM
	// ZONE" such as "Mon-Fri 08:00-18:00 Europe/Berlin" (absent: always); a
	// grant ends at the latest when its window closes.
	Windows []string `json:"windows,omitempty"`
	// Approvals ask for approvals from each of several groups or roles,
	// [{"from": "group:dba", "count": 1}, ...]: distinct approvers, one
	// seat each, never the requester. Such a rule's approval is manual.
	Approvals []GroupApproval `json:"approvals,omitempty"`
}

// GroupApproval asks for Count approvals from members of a group
// ("group:dba") or holders of a role in scope ("role:approver").
type GroupApproval struct {
	From  string `json:"from"`
	Count int    `json:"count,omitempty"`
}

// Approval is a port rule's approval workflow.
type Approval struct {
	Mode      string `json:"mode"`
	Approvals int    `json:"approvals,omitempty"`
}

// Justification rules for a request's reason.
type Justification struct {
	Required  bool   `json:"required,omitempty"`
	MinLength int    `json:"min_length,omitempty"`
	Pattern   string `json:"pattern,omitempty"`
}

// Policy is a target's JIT policy.
type Policy struct {
	Rules []PortRule `json:"rules"`
}

// AgentStatus is what the server knows of a target's agent.
type AgentStatus struct {
	// State is "never" (not enrolled yet), "connected" or "disconnected".
	State           string     `json:"state"`
	LastSeen        *time.Time `json:"last_seen,omitempty"`
	Revision        int64      `json:"revision"`
	AppliedRevision int64      `json:"applied_revision"`
	Error           string     `json:"error,omitempty"`
	Version         string     `json:"version,omitempty"`
}

// Target is a protected server.
type Target struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Addresses []string          `json:"addresses,omitempty"`
	Policy    *Policy           `json:"policy,omitempty"`
	// PolicyETag is the policy's entity tag, as GET .../policy answers it
	// in ETag: a PUT of the policy sends it in If-Match.
	PolicyETag string      `json:"policy_etag,omitempty"`
	Agent      AgentStatus `json:"agent"`
	CreatedAt  time.Time   `json:"created_at"`
	// Stats summarises recent access to the target.
	Stats *TargetStats `json:"stats,omitempty"`
	// Gateway and Address place the target behind a gateway target;
	// Address is its first address there, Addresses lists them all.
	Gateway string `json:"gateway,omitempty"`
	Address string `json:"address,omitempty"`
	// Mode is what its agent reports: host or gateway.
	Mode          string `json:"mode,omitempty"`
	PublicAddress string `json:"public_address,omitempty"`
	// Class is configured, not-configured or unsupported; ClassReason says
	// why (unsupported) and Recommendation what to do (not configured).
	Class          string     `json:"class"`
	ClassReason    string     `json:"class_reason,omitempty"`
	Recommendation string     `json:"recommendation,omitempty"`
	Exposed        []uint16   `json:"exposed_ports,omitempty"`
	Inventory      *Inventory `json:"inventory,omitempty"`
	// Mappings are the target's published ports (behind a gateway).
	Mappings []Mapping `json:"mappings,omitempty"`
	// Blocked is filled when one target is shown.
	Blocked *Blocked `json:"blocked,omitempty"`
	// ActiveGrants counts its active requests.
	ActiveGrants int `json:"active_grants"`
	// PolicyRemoval is set while the target has no policy because one was
	// removed: its ports re-open once the agent applies that; until it
	// confirms, State is "unconfirmed" (the ports may still be closed).
	PolicyRemoval *Removal `json:"policy_removal,omitempty"`
}

// Removal says whether the enforcing agent confirmed that something the
// server took out of the desired state (a revoked, denied or failed
// request's grants; a removed policy) has left the kernel.
type Removal struct {
	// State is "unconfirmed" (the agent has not reported a revision without
	// it: a grant may still be open until ClosesBy), "confirmed" (it did, at
	// ConfirmedAt) or "deadline_passed" (never confirmed, but the kernel's
	// own timeout closed the grant at ClosesBy).
	State string `json:"state"`
	// Revision is the enforcer's desired-state revision without it; the
	// agent confirms by reporting this revision or a later one.
	Revision int64 `json:"revision"`
	// Since is when the server removed it.
	Since time.Time `json:"since"`
	// ClosesBy is the grant's kernel deadline: the kernel closes it then at
	// the latest, whatever the agent does (absent for a policy removal).
	ClosesBy *time.Time `json:"closes_by,omitempty"`
	// ConfirmedAt is when the agent confirmed it.
	ConfirmedAt *time.Time `json:"confirmed_at,omitempty"`
	// Agent is the target whose agent must confirm it (the target itself,
	// or its gateway); empty when no agent will, because the target was
	// removed.
	Agent string `json:"agent,omitempty"`
	// AgentState and AgentLastSeen describe that agent now.
	AgentState    string     `json:"agent_state,omitempty"`
	AgentLastSeen *time.Time `json:"agent_last_seen,omitempty"`
}

// Blocked is what a target's gate dropped: cumulative counters per port and
// the sources sampled in the last 24 hours, most frequent first.
type Blocked struct {
	Counters   []BlockedCounter `json:"counters"`
	TopSources []BlockedSource  `json:"top_sources"`
}

// PolicyEnable applies the default policy (22, 3389, 5985, 5986 over TCP,
// 3 h) to every target matching a label selector, or to the targets named.
type PolicyEnable struct {
	// Selector is KEY=VALUE[,KEY=VALUE...]: all must match.
	Selector string `json:"selector,omitempty"`
	// Targets names the targets instead of a selector (the console's
	// selection): exactly one of Selector and Targets is given.
	Targets []string `json:"targets,omitempty"`
	// Default must be true: the default policy is the only one applied in bulk.
	Default bool `json:"default"`
}

// TargetStats summarises recent access to a target.
type TargetStats struct {
	// LastAccess is when a request for the target last became active, and
	// LastUser who asked for it.
	LastAccess *time.Time `json:"last_access,omitempty"`
	LastUser   string     `json:"last_user,omitempty"`
	// Approved7d counts the requests that became active in the last 7 days.
	Approved7d int `json:"approved_7d"`
}

// TargetCreate enrolls a target. A target behind a gateway names the
// gateway and its address there, and needs no agent of its own.
type TargetCreate struct {
	Name    string            `json:"name"`
	Labels  map[string]string `json:"labels,omitempty"`
	Gateway string            `json:"gateway,omitempty"`
	// Address and Addresses are, with Gateway, the target's addresses
	// behind the gateway (one of each family for a dual-stack host): every
	// one is gated. Address is kept for clients that send one.
	Address   string   `json:"address,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	// PublicAddress is, for a gateway, the address clients reach its DNAT
	// mappings on.
	PublicAddress string `json:"public_address,omitempty"`
}

// TargetCreated carries the one-time enrollment token; it is shown once.
type TargetCreated struct {
	Target          Target    `json:"target"`
	EnrollToken     string    `json:"enroll_token"`
	EnrollExpiresAt time.Time `json:"enroll_expires_at"`
}

// PolicyResult says what setting a policy changed or, in a dry run, would
// change.
type PolicyResult struct {
	Target  string `json:"target"`
	Changed bool   `json:"changed"`
	// DryRun is true when nothing was written (?dry_run=true): Changed,
	// Changes and Dropped say what setting the policy would do.
	DryRun bool   `json:"dry_run,omitempty"`
	Policy Policy `json:"policy"`
	// Changes lists every difference from the target's previous policy,
	// each marked when it weakens the gate.
	Changes []PolicyChange `json:"changes,omitempty"`
	// Dropped lists the ports ("3389/tcp") the previous policy gated and
	// this one does not: they are no longer gated.
	Dropped []string `json:"dropped,omitempty"`
	// ETag is the entity tag of the target's policy after the call (in a
	// dry run: of the policy compared against), also in the ETag header:
	// the next PUT names it in If-Match.
	ETag string `json:"etag,omitempty"`
}

// PolicyChange is one difference between a target's policy and the one
// replacing it.
type PolicyChange struct {
	// Port is the rule's port, "22/tcp".
	Port string `json:"port"`
	// Field is the changed setting ("approval", "close_established", ...),
	// or "" when the whole rule is added (From "") or dropped (To "").
	Field string `json:"field,omitempty"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
	// Weaker marks a change that lets through someone or something the old
	// setting stopped.
	Weaker bool `json:"weaker,omitempty"`
	// Summary says the change in one line.
	Summary string `json:"summary"`
}

// PolicyEnableResult says, per matching target, whether the default policy
// was set (Enabled) or why not (Skipped). A target that already has a
// policy is never overwritten.
type PolicyEnableResult struct {
	// DryRun is true when nothing was written (?dry_run=true).
	DryRun  bool           `json:"dry_run,omitempty"`
	Enabled []PolicyResult `json:"enabled"`
	Skipped []PolicySkip   `json:"skipped"`
}

// PolicySkip is a target a bulk action left alone, and why.
type PolicySkip struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// RequestCreate asks for access.
type RequestCreate struct {
	Target string `json:"target"`
	// Ports are "22", "22/tcp" or "53/udp".
	Ports []string `json:"ports"`
	// Source is an address, a CIDR prefix, or "my-ip" (the default): the
	// address the server sees the request come from.
	Source   string   `json:"source,omitempty"`
	Duration Duration `json:"duration"`
	Reason   string   `json:"reason"`
	// Bastion asks for access through the bastion relay only: no source,
	// nothing opened in the kernel; every port's rule must allow the
	// bastion. A request without a source whose ports are all reached only
	// through the bastion is one too.
	Bastion bool `json:"bastion,omitempty"`
	// StartsAt asks for access from a later time (RFC 3339), at most 30
	// days ahead; up to a minute in the past counts as now. The request may
	// be approved before it; the requester's roles and the policy are
	// checked again at the start; the deadline is StartsAt + Duration.
	StartsAt *time.Time `json:"starts_at,omitempty"`
}

// Request is an access request and the grant it holds.
type Request struct {
	ID        string   `json:"id"`
	Target    string   `json:"target"`
	Requester string   `json:"requester"`
	Source    string   `json:"source"`
	Ports     []string `json:"ports"`
	Duration  Duration `json:"duration"`
	Reason    string   `json:"reason"`
	// State is pending_approval, scheduled, pending, active, expired,
	// revoked, failed, superseded or denied.
	State string `json:"state"`
	// Message explains a failure, a revocation or a supersession.
	Message      string     `json:"message,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	ActivatedAt  *time.Time `json:"activated_at,omitempty"`
	ExpiresAt    time.Time  `json:"expires_at"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	SupersededBy string     `json:"superseded_by,omitempty"`
	// Extended lists the ports whose live grant this request extended.
	Extended []string `json:"extended,omitempty"`
	// Connect says how to reach the granted ports.
	Connect []string `json:"connect,omitempty"`
	// ApprovalsRequired is 0 for requests approved at once.
	ApprovalsRequired int        `json:"approvals_required,omitempty"`
	Decisions         []Decision `json:"decisions,omitempty"`
	ApproveBy         *time.Time `json:"approve_by,omitempty"`
	ApprovedAt        *time.Time `json:"approved_at,omitempty"`
	// Version changes with every change of the request; send it back with a
	// decision to refuse acting on a stale view.
	Version int64 `json:"version"`
	// Removal is set when the request ended (revoked, denied, failed) while
	// its grants were still in a kernel: it says whether the agent has
	// confirmed they are gone, and by when the kernel closes them anyway.
	Removal *Removal `json:"removal,omitempty"`
	// RemovalConfirmedAt repeats Removal.ConfirmedAt for easy filtering.
	RemovalConfirmedAt *time.Time `json:"removal_confirmed_at,omitempty"`
	// ApprovalGroups are the approvals by group the request needs, and
	// MissingApprovals, while it awaits approval, those still missing.
	ApprovalGroups   []GroupApproval `json:"approval_groups,omitempty"`
	MissingApprovals []GroupApproval `json:"missing_approvals,omitempty"`
	// WindowEnd is set when the deadline (expires_at) was clipped to the
	// end of a rule's time window: that end.
	WindowEnd *time.Time `json:"window_end,omitempty"`
	// StartsAt is when a scheduled request's access starts (state
	// scheduled until then).
	StartsAt *time.Time `json:"starts_at,omitempty"`
}

// Decision is one approver's approval or denial.
type Decision struct {
	Approver string    `json:"approver"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	// Member lists the request's approval groups the approver belonged to.
	Member []string `json:"member,omitempty"`
}

// Decide approves or denies a request.
type Decide struct {
	Reason string `json:"reason,omitempty"`
	// Version, when set, must be the request's current version.
	Version int64 `json:"version,omitempty"`
}

// Binding gives a principal a role within a scope.
type Binding struct {
	ID int64 `json:"id,omitempty"`
	// Principal is user:NAME, group:NAME or service:NAME.
	Principal string `json:"principal"`
	// Role is reader, requester, approver, policy-admin, auditor or admin.
	Role string `json:"role"`
	// Scope is "*", "target:NAME" or "label:KEY=VALUE".
	Scope string `json:"scope"`
}

// Grant is a role in a scope.
type Grant struct {
	Role  string `json:"role"`
	Scope string `json:"scope"`
}

// Whoami says who a token speaks for and what it may do.
type Whoami struct {
	Subject    string   `json:"subject"`
	Kind       string   `json:"kind"`
	Groups     []string `json:"groups,omitempty"`
	Grants     []Grant  `json:"grants"`
	ClientAddr string   `json:"client_addr"`
	// Server is the build of the server that answered (jitgate version
	// prints it next to its own).
	Server *ServerBuild `json:"server,omitempty"`
	// Admins, for a person (not a service account) who holds no role yet,
	// are the people and groups bound as admin everywhere (never a service
	// account): whom to ask for access.
	Admins []string `json:"admins,omitempty"`
}

// ServerBuild is the version of a server.
type ServerBuild struct {
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	Go      string `json:"go,omitempty"`
}

// TokenCreate asks for a personal token (or, with Service, a service token).
type TokenCreate struct {
	Name string `json:"name"`
	// TTL is the token's life, at most a year.
	TTL Duration `json:"ttl"`
	// Limits narrow the token below its owner's grants; empty: all of them.
	Limits []Grant `json:"limits,omitempty"`
	// Service names a service account; creating its tokens needs admin.
	Service string `json:"service,omitempty"`
	// User names another user to create a personal token for (admin only:
	// for installations without single sign-on).
	User string `json:"user,omitempty"`
}

// Token describes a token, never its secret.
type Token struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Subject   string     `json:"subject"`
	Name      string     `json:"name,omitempty"`
	Limits    []Grant    `json:"limits,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	CreatedBy string     `json:"created_by,omitempty"`
	// Parent is the token this one was made with: it ends when that one
	// expires or is revoked.
	Parent string `json:"parent,omitempty"`
}

// TokenCreated carries the secret, shown once.
type TokenCreated struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
	// Note says when the token expires earlier than asked (it never
	// outlives the token it was made with).
	Note string `json:"note,omitempty"`
}

// Revoke ends a request early.
type Revoke struct {
	Reason string `json:"reason,omitempty"`
}

// AuditEvent is one entry of the audit trail.
type AuditEvent struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Target     string         `json:"target,omitempty"`
	RequestID  string         `json:"request_id,omitempty"`
	ClientAddr string         `json:"client_addr,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Details    map[string]any `json:"details,omitempty"`
}

// AuditVerify is the outcome of checking the audit trail's hash chain.
type AuditVerify struct {
	OK     bool `json:"ok"`
	Events int  `json:"events"`
	// FirstBadID is the first event altered, missing or out of place.
	FirstBadID int64  `json:"first_bad_id,omitempty"`
	Problem    string `json:"problem,omitempty"`
	// HeadHash is the hash of the newest event when the chain is intact;
	// kept elsewhere, it shows later whether the newest events were removed.
	HeadHash string `json:"head_hash,omitempty"`
}

// EnrollRequest exchanges an enrollment token (sent as the bearer token) for
// an agent credential.
type EnrollRequest struct {
	// Mode is the mode the agent runs in (host or gateway), so the first
	// desired state the server sends already has the right shape.
	Mode      string   `json:"mode,omitempty"`
	Hostname  string   `json:"hostname,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Version   string   `json:"version,omitempty"`
}

// EnrollResponse carries the long-lived agent credential; it is shown once.
type EnrollResponse struct {
	Target     string `json:"target"`
	Credential string `json:"credential"`
}

// Port is a protected (protocol, port).
type Port struct {
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	// Destination is the protected host's address in gateway mode; empty
	// in host mode (the agent's own host).
	Destination string `json:"destination,omitempty"`
	// CloseEstablished makes expiry and revocation also end established
	// sessions on this port.
	CloseEstablished bool `json:"close_established,omitempty"`
	// Access is the rule's access (direct when empty): the agent relays
	// bastion streams only to ports whose rule allows the bastion.
	Access string `json:"access,omitempty"`
	// IdleTimeout is the rule's idle timeout (absent: none): the agent too
	// ends a relayed stream in which no byte moved for this long.
	IdleTimeout Duration `json:"idle_timeout,omitempty"`
}

// BastionGrant is a live grant usable through the bastion relay: the agent
// admits a relayed stream only when it names one of these, for its port,
// before its deadline, and ends the stream at the deadline on its own.
type BastionGrant struct {
	// GrantID is the grant's id (see GrantEntry.ID).
	GrantID   int64     `json:"grant_id,omitempty"`
	RequestID string    `json:"request_id"`
	Principal string    `json:"principal"`
	Protocol  string    `json:"protocol"`
	Port      uint16    `json:"port"`
	ExpiresAt time.Time `json:"expires_at"`
	// Destination is set in gateway mode: the address of the target behind
	// the gateway that the gateway's agent dials for this grant (one entry
	// per address of the target).
	Destination string `json:"destination,omitempty"`
}

// Mapping publishes a destination port on the gateway's own address and a
// mapped port (DNAT); only granted sources are translated.
type Mapping struct {
	Destination string `json:"destination"`
	Protocol    string `json:"protocol"`
	Port        uint16 `json:"port"`
	// PublicAddress is the gateway address clients connect to.
	PublicAddress string `json:"public_address"`
	MappedPort    uint16 `json:"mapped_port"`
}

// GrantEntry is one opened (source, protocol, port) with an absolute deadline.
type GrantEntry struct {
	// ID is the grant's id: a delta replaces every entry of the grants it
	// names (DesiredState.Changed). Behind a gateway one grant has an entry
	// per address of its target.
	ID        int64     `json:"id,omitempty"`
	Source    string    `json:"source"`
	Protocol  string    `json:"protocol"`
	Port      uint16    `json:"port"`
	ExpiresAt time.Time `json:"expires_at"`
	// Destination is set in gateway mode.
	Destination string `json:"destination,omitempty"`
}

// DesiredState is the complete state an agent must enforce.
type DesiredState struct {
	Target   string `json:"target"`
	Revision int64  `json:"revision"`
	// ServerTime lets the agent bound the effect of clock skew: it closes a
	// grant at the earlier of the two clocks' readings of the deadline.
	ServerTime time.Time    `json:"server_time"`
	Protected  []Port       `json:"protected"`
	Grants     []GrantEntry `json:"grants"`
	// Bastion are the live grants usable through the bastion relay.
	Bastion []BastionGrant `json:"bastion,omitempty"`
	// Mode is "host" (the default: protect this host) or "gateway" (protect
	// the destinations behind this host, in the forward path).
	Mode string `json:"mode,omitempty"`
	// Published are the DNAT mappings of a gateway.
	Published []Mapping `json:"published,omitempty"`
	// BlockedSampleRate bounds how many blocked packets per second the agent
	// samples for their sources (0: the agent's default).
	BlockedSampleRate int `json:"blocked_sample_rate,omitempty"`
	// Since is set on a delta (the agent asked with ?since= and the server
	// could tell what changed): the answer brings the state of revision
	// Since to Revision by replacing the entries of the grants in Changed
	// with those in Grants and Bastion. Protected, Published, Mode and
	// BlockedSampleRate are then absent and unchanged, except in a delta
	// with Rules set. Zero: a full snapshot.
	Since int64 `json:"since,omitempty"`
	// Rules is set on a delta that also changes the rules of a host
	// target (sent only to an agent that asked with ?rules=1): Protected
	// is then the complete new list of protected ports, replacing the
	// held one, and Changed includes the grants whose entries the new
	// rules change. Any other change of Protected, Published or Mode is
	// sent as a snapshot.
	Rules bool `json:"rules,omitempty"`
	// Changed are the ids of the grants a delta replaces (added, extended
	// or removed since Since); an id without entries in the delta left the
	// desired state.
	Changed []int64 `json:"changed,omitempty"`
	// BreakGlassKey is the server's Ed25519 public key for offline
	// break-glass tokens (base64, standard encoding), sent with every
	// answer, snapshot or delta; the agent persists it to verify tokens
	// while the server is unreachable.
	BreakGlassKey string `json:"breakglass_key,omitempty"`
	// BreakGlassRevoked are the ids of revoked, unexpired break-glass tokens
	// naming this target; the agent persists them (the list only grows
	// there) and refuses them, and closes an opening made with one.
	BreakGlassRevoked []string `json:"breakglass_revoked,omitempty"`
}

// BreakGlassCreate opens access without approvers (the breakglass role).
type BreakGlassCreate struct {
	Target   string   `json:"target"`
	Ports    []string `json:"ports"`
	Source   string   `json:"source,omitempty"` // address, prefix or my-ip (default)
	Duration Duration `json:"duration"`
	Reason   string   `json:"reason"`
}

// BreakGlassOpened is the answer to a break-glass: the request (approved
// at once) and the alert raised.
type BreakGlassOpened struct {
	Request Request         `json:"request"`
	Alert   BreakGlassAlert `json:"alert"`
}

// BreakGlassAlert is one break-glass opening, open until reviewed.
type BreakGlassAlert struct {
	ID         string     `json:"id"`
	At         time.Time  `json:"at"`
	Kind       string     `json:"kind"` // online | offline
	Actor      string     `json:"actor"`
	Target     string     `json:"target"`
	RequestID  string     `json:"request_id,omitempty"`
	TokenID    string     `json:"token_id,omitempty"`
	Source     string     `json:"source"`
	Ports      []string   `json:"ports"`
	Duration   Duration   `json:"duration"`
	Reason     string     `json:"reason"`
	ReviewedAt *time.Time `json:"reviewed_at,omitempty"`
	ReviewedBy string     `json:"reviewed_by,omitempty"`
	ReviewNote string     `json:"review_note,omitempty"`
}

// AlertReview marks a break-glass alert reviewed.
type AlertReview struct {
	Note string `json:"note,omitempty"`
}

// BreakGlassTokenCreate asks the server to sign an offline break-glass
// token. Expires is how long from now it stays valid.
type BreakGlassTokenCreate struct {
	Targets     []string `json:"targets"`
	Ports       []string `json:"ports"`
	MaxDuration Duration `json:"max_duration"`
	Expires     Duration `json:"expires"`
}

// BreakGlassToken is what the server keeps of an issued token.
type BreakGlassToken struct {
	ID          string     `json:"id"`
	Targets     []string   `json:"targets"`
	Ports       []string   `json:"ports"`
	MaxDuration Duration   `json:"max_duration"`
	IssuedAt    time.Time  `json:"issued_at"`
	IssuedBy    string     `json:"issued_by"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	RevokedBy   string     `json:"revoked_by,omitempty"`
	UsedAt      *time.Time `json:"used_at,omitempty"`
	UsedTarget  string     `json:"used_target,omitempty"`
}

// BreakGlassTokenCreated carries the signed token text, shown once.
type BreakGlassTokenCreated struct {
	Token BreakGlassToken `json:"token"`
	Text  string          `json:"text"`
}

// BreakGlassUse is an agent's report of an offline break-glass it applied.
// Token is the token's text: the server verifies it itself.
type BreakGlassUse struct {
	Token    string    `json:"token"`
	Operator string    `json:"operator,omitempty"`
	Source   string    `json:"source"`
	Port     uint16    `json:"port"`
	Protocol string    `json:"protocol"`
	Duration Duration  `json:"duration"`
	Reason   string    `json:"reason,omitempty"`
	UsedAt   time.Time `json:"used_at"`
}

// AgentReport tells the server which revision the agent applied.
type AgentReport struct {
	Revision int64 `json:"revision"`
	// Error is set when applying the revision failed; the kernel then still
	// holds the previous state.
	Error       string   `json:"error,omitempty"`
	ApplyMillis float64  `json:"apply_ms"`
	Addresses   []string `json:"addresses,omitempty"`
	Version     string   `json:"version,omitempty"`
	// Elements is the number of grant-set elements in the kernel.
	Elements int `json:"elements"`
	// Mode is the mode the agent runs in: host or gateway.
	Mode string `json:"mode,omitempty"`
	// Inventory describes the host; sent at start and when it changes.
	Inventory *Inventory `json:"inventory,omitempty"`
	// Blocked are the kernel's counters of dropped packets and new
	// connections on protected ports, cumulative since the gate was built.
	Blocked []BlockedCounter `json:"blocked,omitempty"`
	// BlockedSources are sampled sources of blocked attempts since the
	// previous report.
	BlockedSources []BlockedSource `json:"blocked_sources,omitempty"`
	// HighWater is set when the agent refused a desired state because its
	// revision is lower than the highest the agent ever applied (HighWater):
	// the server's database went back. The agent removed every grant
	// (protected ports stay closed); the server ends the target's live
	// grants and moves its revision above HighWater.
	HighWater int64 `json:"high_water,omitempty"`
}

// Inventory is what an agent reports of its host.
type Inventory struct {
	Hostname string `json:"hostname,omitempty"`
	// Listening are the sockets the host listens on.
	Listening []Listener `json:"listening,omitempty"`
	// CanEnforce is false when the agent cannot program the firewall;
	// Reason then says why (no nftables, no privilege, missing kernel feature).
	CanEnforce bool   `json:"can_enforce"`
	Reason     string `json:"reason,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	// Routes are the prefixes a gateway forwards to (its connected networks
	// and routes), so the server can check that a target behind it is reachable.
	Routes []string `json:"routes,omitempty"`
	// Links are a gateway's interfaces with the prefixes routed out of
	// each, so the server can tell which side its clients come in on and
	// refuse a target that sits on that side (clients there reach it
	// without passing the gateway).
	Links []Link `json:"links,omitempty"`
	// SSHHostKeys are the host's SSH host public keys in authorized_keys
	// form without comment ("ssh-ed25519 AAAA..."): jitgate ssh accepts
	// only these for the target (no trust on first use).
	SSHHostKeys []string `json:"ssh_host_keys,omitempty"`
}

// Link is one network interface of a gateway.
type Link struct {
	Name string `json:"name"`
	// Prefixes are reached through this interface: connected networks and
	// routes through a next hop on it (default routes left out).
	Prefixes []string `json:"prefixes,omitempty"`
	// Default is true when a default route leaves through this interface.
	Default bool `json:"default,omitempty"`
}

// Listener is one listening socket.
type Listener struct {
	Address  string `json:"address"` // 0.0.0.0, ::, 127.0.0.1, ...
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Process  string `json:"process,omitempty"`
}

// BlockedCounter counts what the gate dropped on one protected port.
type BlockedCounter struct {
	Destination string `json:"destination,omitempty"`
	Protocol    string `json:"protocol"`
	Port        uint16 `json:"port"`
	Packets     uint64 `json:"packets"`
	// Connections counts new connection attempts (TCP SYN, first UDP packet).
	Connections uint64 `json:"connections"`
}

// BlockedSource is a sampled source of blocked attempts.
type BlockedSource struct {
	Source      string    `json:"source"`
	Destination string    `json:"destination,omitempty"`
	Protocol    string    `json:"protocol"`
	Port        uint16    `json:"port"`
	Count       int       `json:"count"`
	LastSeen    time.Time `json:"last_seen"`
}

// Webhook is a receiver of notifications. Its signing secret is shown only
// when it is created.
type Webhook struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Format string `json:"format"` // generic | slack
	// Events are the event names sent; empty means all.
	Events    []string  `json:"events"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// WebhookCreate adds a webhook. Without a secret the server generates one.
type WebhookCreate struct {
	URL    string   `json:"url"`
	Format string   `json:"format,omitempty"`
	Secret string   `json:"secret,omitempty"`
	Events []string `json:"events,omitempty"`
}

// WebhookCreated carries the signing secret, shown once.
type WebhookCreated struct {
	Webhook Webhook `json:"webhook"`
	Secret  string  `json:"secret"`
}

// WebhookDelivery is one event's delivery to one webhook.
type WebhookDelivery struct {
	// ID is sent as the webhook-id header.
	ID      int64  `json:"id"`
	EventID int64  `json:"event_id"`
	Event   string `json:"event"`
	// State is pending (not yet tried), retrying, delivered or failed
	// (given up).
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
}

// WebhookPayload is the body of a generic webhook delivery: one audit event
// and, when it concerns a request, the request as it stood after the change.
type WebhookPayload struct {
	Event string `json:"event"` // request.pending, request.activated, ...
	// ID is the audit event's id: the same for every webhook, and the key
	// of the event in the audit trail.
	ID        int64           `json:"id"`
	At        time.Time       `json:"at"`
	Actor     string          `json:"actor"`
	Target    string          `json:"target,omitempty"`
	RequestID string          `json:"request_id,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Details   map[string]any  `json:"details,omitempty"`
	Request   *WebhookRequest `json:"request,omitempty"`
}

// WebhookRequest is what a webhook payload says of a request.
type WebhookRequest struct {
	Requester string    `json:"requester"`
	Source    string    `json:"source"`
	Ports     []string  `json:"ports"`
	Duration  Duration  `json:"duration"`
	Reason    string    `json:"reason,omitempty"`
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at"`
	// ApprovalsRequired is 0 for requests approved automatically.
	ApprovalsRequired int `json:"approvals_required,omitempty"`
}

// BastionSession is a bastion session: one client tunnel relayed to a
// target's agent under a live bastion grant.
type BastionSession struct {
	ID        string `json:"id"`
	Target    string `json:"target"`
	Principal string `json:"principal"`
	RequestID string `json:"request_id"`
	Port      string `json:"port"` // "22/tcp"
	// Via is tunnel (a client's TCP stream) or terminal (the browser
	// terminal, logged in as Login).
	Via        string    `json:"via"`
	Login      string    `json:"login,omitempty"`
	ClientAddr string    `json:"client_addr,omitempty"`
	State      string    `json:"state"` // live | ended
	StartedAt  time.Time `json:"started_at"`
	// Deadline is when the session ends at the latest: its grant's deadline.
	Deadline time.Time  `json:"deadline"`
	EndedAt  *time.Time `json:"ended_at,omitempty"`
	// EndReason is closed, grant_expired, revoked, killed, idle,
	// server_lost or agent_lost; EndedBy names who killed it.
	EndReason string `json:"end_reason,omitempty"`
	EndedBy   string `json:"ended_by,omitempty"`
	Message   string `json:"message,omitempty"`
	// BytesIn counts client to target, BytesOut target to client.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// Recording is the session's recording, when its rule records.
	Recording *SessionRecording `json:"recording,omitempty"`
	// Watchable: a live terminal session of this server that an approver
	// or auditor may watch (GET /api/v1/sessions/{id}/watch).
	Watchable bool `json:"watchable,omitempty"`
}

// SessionRecording describes a session's recording (asciicast v2, GET
// /api/v1/sessions/{id}/recording). SHA256 and Bytes are also in the
// session.recorded audit event, inside the audit hash chain.
type SessionRecording struct {
	// State is recording (the session is live), saved or deleted
	// (retention ended).
	State     string     `json:"state"`
	Input     bool       `json:"input"`
	SHA256    string     `json:"sha256,omitempty"`
	Bytes     int64      `json:"bytes,omitempty"`
	SavedAt   *time.Time `json:"saved_at,omitempty"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// SessionKill ends a live session; the reason is recorded.
type SessionKill struct {
	Reason string `json:"reason"`
}

// SSHCertificateRequest asks jitgate's SSH certificate authority for a user
// certificate on a live grant of the caller's own request.
type SSHCertificateRequest struct {
	// PublicKey is the key to certify, in authorized_keys form
	// ("ssh-ed25519 AAAA..."); a certificate is refused.
	PublicKey string `json:"public_key"`
	// Login is the user name on the target; it must be one the port's
	// rule names. Absent: the rule's first login.
	Login string `json:"login,omitempty"`
	// Port is the SSH port of the request (absent: 22).
	Port uint16 `json:"port,omitempty"`
}

// SSHCertificate is a signed user certificate.
type SSHCertificate struct {
	// Certificate in authorized_keys form, to save as the key's -cert.pub.
	Certificate string    `json:"certificate"`
	KeyID       string    `json:"key_id"`
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
}

// SSHCA is the certificate authority's public key, in authorized_keys form:
// the line a target's sshd trusts with TrustedUserCAKeys.
type SSHCA struct {
	PublicKey string `json:"public_key"`
}

// ScheduleCreate asks for recurring access (issue 15, item 3): Principal
// (user:NAME or service:NAME) gets Ports of Target from Source for Duration
// at every occurrence of Cron (five fields) in TimeZone (an IANA name).
type ScheduleCreate struct {
	Principal string   `json:"principal"`
	Target    string   `json:"target"`
	Ports     []string `json:"ports"`
	// Source is an address or a CIDR prefix (no my-ip: nobody asks from
	// anywhere when an occurrence comes).
	Source   string   `json:"source"`
	Cron     string   `json:"cron"`
	TimeZone string   `json:"timezone"`
	Duration Duration `json:"duration"`
	Reason   string   `json:"reason"`
}

// Schedule is a recurring access schedule.
type Schedule struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	Target    string    `json:"target"`
	Ports     []string  `json:"ports"`
	Source    string    `json:"source"`
	Cron      string    `json:"cron"`
	TimeZone  string    `json:"timezone"`
	Duration  Duration  `json:"duration"`
	Reason    string    `json:"reason"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// NextAt is the start of the next occurrence (its request is created
	// 15 minutes before it); absent when none will come.
	NextAt *time.Time `json:"next_at,omitempty"`
	// LastRequest is the request of the last occurrence produced.
	LastRequest string `json:"last_request,omitempty"`
}
