// Package wire holds the JSON types of jitgate's REST API, shared by the
// server's handlers, the typed client, the CLI and the agent. It has no
// behaviour beyond encoding.
package wire

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("3h", "90s").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "1h30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1h\" or \"90s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: must look like \"1h\", \"30m\" or \"90s\"", s)
	}
	*d = Duration(v)
	return nil
}

// Error is the body of every 4xx and 5xx answer.
type Error struct {
	Error string `json:"error"`
	// Field names the input field that is wrong, when one is.
	Field string `json:"field,omitempty"`
	// Rule names the policy rule that refused a request ("22/tcp").
	Rule string `json:"rule,omitempty"`
}

// PortRule is one port of a JIT policy.
type PortRule struct {
	Port           uint16   `json:"port"`
	Protocol       string   `json:"protocol,omitempty"`
	AllowedSources []string `json:"allowed_sources,omitempty"`
	MaxDuration    Duration `json:"max_duration,omitempty"`
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
	Agent     AgentStatus       `json:"agent"`
	CreatedAt time.Time         `json:"created_at"`
}

// TargetCreate enrolls a target.
type TargetCreate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// TargetCreated carries the one-time enrollment token; it is shown once.
type TargetCreated struct {
	Target          Target    `json:"target"`
	EnrollToken     string    `json:"enroll_token"`
	EnrollExpiresAt time.Time `json:"enroll_expires_at"`
}

// PolicyResult says whether setting a policy changed anything.
type PolicyResult struct {
	Target  string `json:"target"`
	Changed bool   `json:"changed"`
	Policy  Policy `json:"policy"`
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
	// State is pending, active, expired, revoked, failed or superseded.
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

// EnrollRequest exchanges an enrollment token (sent as the bearer token) for
// an agent credential.
type EnrollRequest struct {
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
}

// GrantEntry is one opened (source, protocol, port) with an absolute deadline.
type GrantEntry struct {
	Source    string    `json:"source"`
	Protocol  string    `json:"protocol"`
	Port      uint16    `json:"port"`
	ExpiresAt time.Time `json:"expires_at"`
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
}
