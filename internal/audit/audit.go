// Package audit names the events of jitgate's audit trail. Events are written
// by the store in the same transaction as the change they describe, so the
// trail cannot disagree with the state (or with the firewall built from it).
package audit

import "time"

// Action is what happened.
type Action string

// The actions the trail records.
const (
	TokenCreated        Action = "token.created"
	TokenRevoked        Action = "token.revoked"
	BindingCreated      Action = "binding.created"
	BindingDeleted      Action = "binding.deleted"
	LoginSucceeded      Action = "login.succeeded"
	LoginFailed         Action = "login.failed"
	AccessDenied        Action = "access.denied"
	RequestApproved     Action = "request.approved"
	RequestDenied       Action = "request.denied"
	BruteForceSuspected Action = "attack.suspected"
	TargetAdded         Action = "target.added"
	TargetRemoved       Action = "target.removed"
	AgentEnrolled       Action = "agent.enrolled"
	// EnrollTokenIssued: a new enrollment token for an existing target
	// (jitgate target enroll-token), to re-enroll its host.
	EnrollTokenIssued Action = "target.enroll_token_issued"
	AgentConnected    Action = "agent.connected"
	AgentDisconnected Action = "agent.disconnected"
	AgentApplyFailed  Action = "agent.apply_failed"
	PolicySet         Action = "policy.set"
	PolicyRemoved     Action = "policy.removed"
	RequestCreated    Action = "request.created"
	RequestRefused    Action = "request.refused"
	RequestActivated  Action = "request.activated"
	RequestExpired    Action = "request.expired"
	RequestRevoked    Action = "request.revoked"
	RequestFailed     Action = "request.failed"
	RequestSuperseded Action = "request.superseded"
	// RequestExpiring warns that an active request ends soon.
	RequestExpiring Action = "request.expiring"
	// RequestStarted: a scheduled request's start came and it was still
	// eligible: its grants entered the desired state (issue 15).
	RequestStarted Action = "request.started"
	// ScheduleCreated, ScheduleDeleted: a recurring access schedule was
	// added or removed; ScheduleSkipped: an occurrence was not produced
	// (its window passed while no server ran, or it was refused).
	ScheduleCreated Action = "schedule.created"
	ScheduleDeleted Action = "schedule.deleted"
	ScheduleSkipped Action = "schedule.skipped"
	WebhookCreated  Action = "webhook.created"
	WebhookDeleted  Action = "webhook.deleted"
	// SessionStarted, SessionEnded and SessionKilled follow a bastion
	// session (internal/session): a killed session is audited as killed,
	// with the killer as actor, instead of ended.
	SessionStarted Action = "session.started"
	SessionEnded   Action = "session.ended"
	SessionKilled  Action = "session.killed"
	// SSHCertificateIssued: the SSH certificate authority signed a user
	// certificate for a grant (internal/sshca).
	SSHCertificateIssued Action = "ssh.certificate_issued"
	// SessionHostKeyMismatch: the server's SSH client (the browser
	// terminal) refused a target whose host key is not one its agent
	// reported, or whose agent reported none.
	SessionHostKeyMismatch Action = "session.host_key_mismatch"
	// SessionRecorded: a recorded session's asciicast file was saved; its
	// details carry the file's SHA-256 and size, so the chain vouches for
	// the file (internal/recording).
	SessionRecorded Action = "session.recorded"
	// RecordingDeleted: a recording's file was deleted (retention).
	RecordingDeleted Action = "recording.deleted"
	// SessionWatched: an approver or auditor began watching a live terminal
	// session read-only (moderated join).
	SessionWatched Action = "session.watched"
	// SSHCAReplaced: a server started with --ssh-ca-rotate recorded its SSH
	// CA key as the one every replica must sign with, replacing another
	// (a rotation; replicas still holding the old key refuse to start).
	SSHCAReplaced Action = "ssh.ca_replaced"
)

// The actions of the restore guard (docs/operations.md).
const (
	// AgentRevisionAhead: an agent had applied a higher revision than the
	// database holds (the database went back); the target's live grants ended.
	AgentRevisionAhead Action = "agent.revision_ahead"
	// DatabaseRestored: the server started on an older copy of its database
	// (or a marked backup); every live grant in it ended before serving.
	DatabaseRestored Action = "database.restored"
)

// TokenImpersonation is a personal token an admin issued in another user's
// name (jitgate token create --user, refused when single sign-on is
// configured): whoever holds it acts as that user. It is written instead of
// token.created, so that impersonation stands out in the trail.
const TokenImpersonation Action = "token.impersonation"

// Break-glass (access.CheckBreakGlass, access.Token): each opening is its
// own action, so that it stands out in the trail, and every webhook gets it
// whatever events it subscribed to.
const (
	// BreakGlassOpened: the breakglass role opened access without approvers.
	BreakGlassOpened Action = "breakglass.opened"
	// BreakGlassUsed: an agent opened access with an offline token while
	// the server was unreachable (reported when it came back).
	BreakGlassUsed Action = "breakglass.used"
	// BreakGlassReviewed: an auditor or admin reviewed a break-glass alert.
	BreakGlassReviewed Action = "breakglass.reviewed"
	// BreakGlassTokenIssued and BreakGlassTokenRevoked: an admin issued or
	// revoked an offline break-glass token.
	BreakGlassTokenIssued  Action = "breakglass.token_issued"
	BreakGlassTokenRevoked Action = "breakglass.token_revoked"
)

// System is the actor of events nobody asked for (expiry, timeouts).
const System = "system"

// Event is one entry of the trail: who did what, when, from where, and why.
type Event struct {
	ID         int64
	At         time.Time
	Actor      string
	Action     Action
	Target     string
	RequestID  string
	ClientAddr string
	Reason     string
	Details    map[string]any
}
