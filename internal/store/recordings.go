package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// Recording is the record of one session's recording (internal/recording
// keeps the file). SHA256 and Size are set once it is saved; the audit
// event session.recorded carries them too, inside the hash chain.
type Recording struct {
	SessionID string
	Target    string
	Principal string
	RequestID string
	// Input says whether keystrokes were recorded.
	Input     bool
	StartedAt time.Time
	SavedAt   *time.Time
	SHA256    string
	Size      int64
	DeletedAt *time.Time
}

const recordingColumns = `session_id, target, principal, request_id, input, started_at, saved_at, sha256, size, deleted_at`

func scanRecording(r scanner) (Recording, error) {
	var (
		x              Recording
		input          int
		started        int64
		saved, deleted sql.NullInt64
	)
	if err := r.Scan(&x.SessionID, &x.Target, &x.Principal, &x.RequestID, &input, &started, &saved, &x.SHA256, &x.Size, &deleted); err != nil {
		return Recording{}, err
	}
	x.Input, x.StartedAt, x.SavedAt, x.DeletedAt = input != 0, fromMS(started), fromNullMS(saved), fromNullMS(deleted)
	return x, nil
}

// StartRecording notes that a session's recording began (its file exists
// from now on, so the retention sweep and a restarted server can find it).
func (s *Store) StartRecording(ctx context.Context, x Recording) error {
	in := 0
	if x.Input {
		in = 1
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO recordings (session_id, target, principal, request_id, input, started_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, x.SessionID, x.Target, x.Principal, x.RequestID, in, ms(x.StartedAt)); err != nil {
			return fmt.Errorf("recording the start of session %s's recording: %w", x.SessionID, err)
		}
		return nil
	})
}

// SaveRecording stores the SHA-256 and size of a session's finished
// recording and audits session.recorded with them in the same transaction:
// from then on the audit chain vouches for the file. incomplete marks a
// recording a dead server left unfinished (saved at the next start). A
// recording is saved once; again is ErrConflict.
func (s *Store) SaveRecording(ctx context.Context, sessionID, sha256 string, size int64, incomplete bool, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		x, err := scanRecording(tx.QueryRowContext(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE session_id = $1`, sessionID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("recording of session %q: %w", sessionID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading the recording of session %s: %w", sessionID, err)
		}
		if x.SavedAt != nil {
			return fmt.Errorf("recording of session %s already saved: %w", sessionID, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE recordings SET saved_at = $1, sha256 = $2, size = $3 WHERE session_id = $4`,
			ms(now), sha256, size, sessionID); err != nil {
			return fmt.Errorf("saving the recording of session %s: %w", sessionID, err)
		}
		d := map[string]any{"session": sessionID, "principal": x.Principal, "sha256": sha256, "bytes": size, "input": x.Input}
		if incomplete {
			d["incomplete"] = true
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.SessionRecorded, Target: x.Target,
			RequestID: x.RequestID, Details: d})
	})
}

// GetRecording returns a session's recording; ErrNotFound when the session
// was not recorded.
func (s *Store) GetRecording(ctx context.Context, sessionID string) (Recording, error) {
	x, err := scanRecording(s.db.QueryRowContext(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE session_id = $1`, sessionID))
	if errors.Is(err, sql.ErrNoRows) {
		return Recording{}, fmt.Errorf("recording of session %q: %w", sessionID, ErrNotFound)
	}
	if err != nil {
		return Recording{}, fmt.Errorf("reading the recording of session %s: %w", sessionID, err)
	}
	return x, nil
}

// RecordingsOf returns the recordings of the given sessions, by session id
// (sessions without one are absent).
func (s *Store) RecordingsOf(ctx context.Context, sessionIDs []string) (map[string]Recording, error) {
	out := map[string]Recording{}
	for len(sessionIDs) > 0 {
		n := min(len(sessionIDs), 500)
		args := make([]any, n)
		marks := make([]string, n)
		for i, id := range sessionIDs[:n] {
			args[i], marks[i] = id, fmt.Sprintf("$%d", i+1)
		}
		sessionIDs = sessionIDs[n:]
		rows, err := s.db.QueryContext(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE session_id IN (`+strings.Join(marks, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("listing recordings: %w", err)
		}
		for rows.Next() {
			x, err := scanRecording(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading a recording: %w", err)
			}
			out[x.SessionID] = x
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ExpiredRecordings returns at most limit recordings not yet deleted that
// were saved before before, or started before it and left unsaved by a
// session that is no longer live.
func (s *Store) ExpiredRecordings(ctx context.Context, before time.Time, limit int) ([]Recording, error) {
	return s.listRecordings(ctx, `deleted_at IS NULL AND (saved_at < $1 OR (saved_at IS NULL AND started_at < $1
		AND NOT EXISTS (SELECT 1 FROM sessions x WHERE x.id = recordings.session_id AND x.state = 'live')))
		ORDER BY started_at LIMIT $2`, ms(before), limit)
}

// UnsavedRecordings returns the recordings a server stopped before saving
// (their sessions are no longer live).
func (s *Store) UnsavedRecordings(ctx context.Context) ([]Recording, error) {
	return s.listRecordings(ctx, `deleted_at IS NULL AND saved_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM sessions x WHERE x.id = recordings.session_id AND x.state = 'live')
		ORDER BY started_at LIMIT $1`, 10000)
}

func (s *Store) listRecordings(ctx context.Context, where string, args ...any) ([]Recording, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("listing recordings: %w", err)
	}
	defer rows.Close()
	var out []Recording
	for rows.Next() {
		x, err := scanRecording(rows)
		if err != nil {
			return nil, fmt.Errorf("reading a recording: %w", err)
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// DeleteRecording marks a session's recording deleted (its file was
// removed) and audits recording.deleted, by actor for reason. Deleting one
// already deleted is ErrConflict.
func (s *Store) DeleteRecording(ctx context.Context, sessionID, actor, reason string, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		x, err := scanRecording(tx.QueryRowContext(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE session_id = $1`, sessionID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("recording of session %q: %w", sessionID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading the recording of session %s: %w", sessionID, err)
		}
		if x.DeletedAt != nil {
			return fmt.Errorf("recording of session %s already deleted: %w", sessionID, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE recordings SET deleted_at = $1 WHERE session_id = $2`, ms(now), sessionID); err != nil {
			return fmt.Errorf("deleting the recording of session %s: %w", sessionID, err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor, Action: audit.RecordingDeleted, Target: x.Target, RequestID: x.RequestID,
			Reason: reason, Details: map[string]any{"session": sessionID, "sha256": x.SHA256, "bytes": x.Size}})
	})
}
