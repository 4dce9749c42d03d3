// Package session holds the life of a bastion session: one client tunnel
// relayed to a target's agent under a live bastion grant. It is pure: no
// I/O, and time comes in as arguments.
//
// A session is live from the moment the server admits the tunnel until it
// ends, once, for one reason. It never outlives its grant: it ends at the
// grant's deadline and when the grant is revoked, whatever the rule's
// close-established setting says (that setting is about kernel grants).
package session

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is where a session is in its life.
type State string

// The states of a session; ended is terminal.
const (
	Live  State = "live"
	Ended State = "ended"
)

// EndReason says why a session ended.
type EndReason string

// The reasons a session ends.
const (
	// Closed: the client or the service closed the connection.
	Closed EndReason = "closed"
	// GrantExpired: the grant's deadline passed.
	GrantExpired EndReason = "grant_expired"
	// Revoked: the grant ended early (revoked, denied, failed, superseded
	// without a successor for this port, or its rule no longer allows the
	// bastion).
	Revoked EndReason = "revoked"
	// Killed: someone ended the session (EndedBy says who).
	Killed EndReason = "killed"
	// Idle: no byte moved for the rule's idle timeout.
	Idle EndReason = "idle"
	// ServerLost: the server stopped (or died) while the session was live;
	// found at the next start.
	ServerLost EndReason = "server_lost"
	// AgentLost: the target's agent connection ended.
	AgentLost EndReason = "agent_lost"
)

// Reasons lists every end reason.
var Reasons = []EndReason{Closed, GrantExpired, Revoked, Killed, Idle, ServerLost, AgentLost}

// ParseEndReason accepts the name of an end reason.
func ParseEndReason(s string) (EndReason, error) {
	for _, r := range Reasons {
		if string(r) == strings.TrimSpace(s) {
			return r, nil
		}
	}
	return "", fmt.Errorf("end reason %q: must be one of closed, grant_expired, revoked, killed, idle, server_lost, agent_lost", s)
}

// Session is one relayed tunnel.
type Session struct {
	ID        string
	Target    string
	Principal string
	// RequestID is the request whose bastion grant admitted the session.
	RequestID string
	// Via is how the session reaches the target: ViaTunnel or ViaTerminal.
	Via string
	// Login is the user the browser terminal logged in as (terminal only).
	Login      string
	Protocol   string
	Port       uint16
	ClientAddr string
	StartedAt  time.Time
	// Deadline is the grant's deadline when the session started; an
	// extension of the grant moves it (the server re-reads the grant).
	Deadline time.Time
	State    State
	EndedAt  *time.Time
	Reason   EndReason
	// EndedBy is who killed the session (Killed only).
	EndedBy string
	// Message is the killer's reason, or details of another end.
	Message string
	// BytesIn counts client to target, BytesOut target to client.
	BytesIn, BytesOut int64
	// Replica is the id of the server replica that relays the session and
	// records its end ("" : the only server). Written at the start only.
	Replica string
}

// How a session reaches its target.
const (
	// ViaTunnel: a client's raw TCP stream (jitgate connect, jitgate ssh).
	ViaTunnel = "tunnel"
	// ViaTerminal: the browser terminal; the server's SSH client logs in.
	ViaTerminal = "terminal"
)

// ErrEnded is returned when ending a session that already ended: the first
// end wins, a late one changes nothing.
var ErrEnded = errors.New("session already ended")

// End returns s ended at now for reason. A kill must say who killed it.
func (s Session) End(reason EndReason, by, message string, now time.Time) (Session, error) {
	if s.State == Ended {
		return s, fmt.Errorf("%w (%s)", ErrEnded, s.Reason)
	}
	if _, err := ParseEndReason(string(reason)); err != nil {
		return s, err
	}
	if reason == Killed && by == "" {
		return s, errors.New("a killed session must name who killed it")
	}
	if reason != Killed {
		by = ""
	}
	at := now.UTC()
	s.State, s.EndedAt, s.Reason, s.EndedBy, s.Message = Ended, &at, reason, by, message
	return s, nil
}

// IdleAt reports whether a session whose last byte moved at last is idle
// at now under idle timeout idle (0: never).
func IdleAt(last time.Time, idle time.Duration, now time.Time) bool {
	return idle > 0 && !now.Before(last.Add(idle))
}

// ReasonAt is why a live session must end at now given whether its grant
// is still live, or "" when it may go on: the deadline first (an expired
// grant is reported as expired, not revoked), then the grant.
func (s Session) ReasonAt(now time.Time, grantLive bool) EndReason {
	switch {
	case s.State == Ended:
		return ""
	case !now.Before(s.Deadline):
		return GrantExpired
	case !grantLive:
		return Revoked
	}
	return ""
}
