package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// Agent presence with several replicas: an agent's polls reach one replica
// at a time, so no replica knows alone whether an agent is gone. The
// replicas serving an agent's polls refresh its agent_seen_at
// (TouchAgents); an agent is recorded disconnected only once that time is
// older than the grace period (DisconnectStaleAgents), by whichever replica
// looks first, once.

// TouchAgents records that the agents of targets are polling (agent_seen_at
// = now) and returns those of them not recorded connected (another replica
// took them for gone, or nobody recorded them yet), for the caller to
// record connected.
func (s *Store) TouchAgents(ctx context.Context, targets []string, now time.Time) (notConnected []string, err error) {
	if len(targets) == 0 {
		return nil, nil
	}
	// In chunks: one statement each, whatever the fleet's size.
	const chunk = 500
	err = s.tx(ctx, func(tx *sql.Tx) error {
		notConnected = nil
		for i := 0; i < len(targets); i += chunk {
			part := targets[i:min(i+chunk, len(targets))]
			args := []any{ms(now)}
			marks, marks1 := make([]string, len(part)), make([]string, len(part))
			for j, t := range part {
				args = append(args, t)
				marks[j], marks1[j] = fmt.Sprintf("$%d", j+2), fmt.Sprintf("$%d", j+1)
			}
			in, in1 := strings.Join(marks, ", "), strings.Join(marks1, ", ")
			if _, err := tx.ExecContext(ctx, `UPDATE targets SET agent_seen_at = $1 WHERE name IN (`+in+`)`, args...); err != nil {
				return fmt.Errorf("recording that agents poll: %w", err)
			}
			rows, err := tx.QueryContext(ctx, `SELECT name FROM targets WHERE name IN (`+in1+`) AND agent_state <> '`+AgentConnected+`' ORDER BY name`, args[1:]...)
			if err != nil {
				return fmt.Errorf("reading agents' states: %w", err)
			}
			for rows.Next() {
				var n string
				if err := rows.Scan(&n); err != nil {
					rows.Close()
					return fmt.Errorf("reading agents' states: %w", err)
				}
				notConnected = append(notConnected, n)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("reading agents' states: %w", err)
			}
		}
		return nil
	})
	return notConnected, err
}

// DisconnectStaleAgents records as disconnected (audited, once) every agent
// recorded connected whose agent_seen_at is before cutoff, and returns
// their targets.
func (s *Store) DisconnectStaleAgents(ctx context.Context, cutoff, now time.Time) ([]string, error) {
	var gone []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		gone = nil
		rows, err := tx.QueryContext(ctx, `SELECT name FROM targets WHERE agent_state = $1 AND coalesce(agent_seen_at, 0) < $2 ORDER BY name`,
			AgentConnected, ms(cutoff))
		if err != nil {
			return fmt.Errorf("selecting agents gone: %w", err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return fmt.Errorf("selecting agents gone: %w", err)
			}
			gone = append(gone, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("selecting agents gone: %w", err)
		}
		for _, t := range gone {
			if _, err := tx.ExecContext(ctx, `UPDATE targets SET agent_state = $1 WHERE name = $2`, AgentDisconnected, t); err != nil {
				return fmt.Errorf("recording the agent of %s disconnected: %w", t, err)
			}
			if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: "agent:" + t, Action: audit.AgentDisconnected, Target: t}); err != nil {
				return err
			}
		}
		return nil
	})
	return gone, err
}
