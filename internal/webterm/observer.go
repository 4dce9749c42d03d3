// Package webterm runs one browser terminal: the server's SSH client
// (golang.org/x/crypto/ssh) over a stream the bastion relay opened to the
// target's agent, speaking to the browser over a WebSocket (binary frames:
// terminal data; text frames: JSON control messages). The HTTP handler that
// admits a terminal (grant, login, host keys, session record) is in
// internal/api; this package knows nothing of grants or stores.
//
// Observers (the session recorder, read-only watchers) see every byte and
// resize of a terminal through Observer, and a watcher's presence is shown
// to the user with Terminal.Notice.
package webterm

import (
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// Observer sees one terminal session's streams: the recorder and read-only watchers.
type Observer interface {
	Output(at time.Time, p []byte)
	Input(at time.Time, p []byte)
	Resize(at time.Time, cols, rows int)
	Close(at time.Time, reason string)
}

// SessionInfo describes a terminal session to whoever makes its Observer.
type SessionInfo struct {
	// SessionID is the bastion session's id (the sessions list's); RequestID
	// the request whose grant admitted it.
	SessionID string
	RequestID string
	Target    string
	Port      uint16
	// Login is the user on the target; Principal the jitgate principal.
	Login     string
	Principal string
	// Cols and Rows are the terminal's size at the start.
	Cols, Rows int
	StartedAt  time.Time
	// Rule is the port's rule on the target: its record settings, when the
	// policy has them.
	Rule policy.Rule
	// Notice shows the user of this terminal text in its status line, not
	// in the terminal stream ("alice is watching"). It may be called from
	// any goroutine, while the session lives; after its end it does nothing.
	Notice func(text string)
	// End ends the session now for reason (a session end reason; an
	// unknown one ends it as closed), telling its user message. The
	// recorder calls it when the recording fails: a session that must be
	// recorded does not go on unrecorded. Safe from any goroutine; nil: none.
	End func(reason, message string)
}

// ObserverFunc makes the Observer of a terminal session (nil, nil: none). An
// error refuses the session: a session that must be recorded and cannot be
// does not run.
type ObserverFunc func(SessionInfo) (Observer, error)
