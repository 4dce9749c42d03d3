package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/session"
)

// Replicas: several servers sharing one database. Each keeps its row in
// replicas live (HeartbeatReplica); the agents' relay connections it holds
// are recorded in relay_routes, so that another replica can forward a
// client's stream to it. A row not refreshed before its expiry is a dead
// replica: its routes are ignored (and removed by SweepReplicas), and the
// sessions it recorded live are ended as server_lost.

// NewRelayConnID returns a fresh id for one relay connection (a route's
// conn).
func NewRelayConnID() string { return random.ID("rc-", 8) }

// ReplicaRoute is where a target agent's relay connection is held: the
// replica's id and the internal URL other replicas reach it at.
type ReplicaRoute struct {
	Replica, Address string
	ConnectedAt      time.Time
}

// HeartbeatReplica records replica id as live until now+ttl, reachable by
// other replicas at address ("" when it accepts no forwarded stream). It
// is idempotent; started is kept from the first call.
func (s *Store) HeartbeatReplica(ctx context.Context, id, address string, now time.Time, ttl time.Duration) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO replicas (id, address, started_at, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET address = excluded.address, expires_at = excluded.expires_at`, id, address, ms(now), ms(now.Add(ttl)))
	if err != nil {
		return s.writeFailed(fmt.Errorf("recording replica %s as live: %w", id, err))
	}
	return nil
}

// OtherReplicasLive reports whether a replica other than self holds a live
// row at now.
func (s *Store) OtherReplicasLive(ctx context.Context, self string, now time.Time) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM replicas WHERE id <> $1 AND expires_at > $2`, self, ms(now)).Scan(&n); err != nil {
		return false, fmt.Errorf("counting live replicas: %w", err)
	}
	return n > 0, nil
}

// RemoveReplica removes replica id and its relay routes (a replica that
// stops cleanly).
func (s *Store) RemoveReplica(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM relay_routes WHERE replica = $1`, id); err != nil {
			return fmt.Errorf("removing the relay routes of replica %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE id = $1`, id); err != nil {
			return fmt.Errorf("removing replica %s: %w", id, err)
		}
		return nil
	})
}

// SetRelayRoute records that replica holds target's relay connection conn
// since now (replacing the route of an older connection of target there).
// It is written by the writer, as every write (on SQLite a write beside it
// waited for the database's lock behind the writer's batches), and is
// durable when it returns: the server records the route before the agent's
// WebSocket handshake completes (api agentTunnel).
func (s *Store) SetRelayRoute(ctx context.Context, target, replica, conn string, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO relay_routes (target, replica, conn, connected_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (target, replica) DO UPDATE SET conn = excluded.conn, connected_at = excluded.connected_at`, target, replica, conn, ms(now)); err != nil {
			return fmt.Errorf("recording the relay route of %s: %w", target, err)
		}
		return nil
	})
}

// DeleteRelayRoute removes the route of target's relay connection conn on
// replica; a newer connection's route is left alone.
func (s *Store) DeleteRelayRoute(ctx context.Context, target, replica, conn string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM relay_routes WHERE target = $1 AND replica = $2 AND conn = $3`, target, replica, conn); err != nil {
			return fmt.Errorf("removing the relay route of %s: %w", target, err)
		}
		return nil
	})
}

// RelayRoutes returns the live replicas other than self holding target's
// relay connection, the most recent connection first.
func (s *Store) RelayRoutes(ctx context.Context, target, self string, now time.Time) ([]ReplicaRoute, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT r.replica, p.address, r.connected_at FROM relay_routes r JOIN replicas p ON p.id = r.replica
		WHERE r.target = $1 AND r.replica <> $2 AND p.expires_at > $3 AND p.address <> ''
		ORDER BY r.connected_at DESC, r.replica`, target, self, ms(now))
	if err != nil {
		return nil, fmt.Errorf("looking up the relay routes of %s: %w", target, err)
	}
	defer rows.Close()
	var out []ReplicaRoute
	for rows.Next() {
		var r ReplicaRoute
		var at int64
		if err := rows.Scan(&r.Replica, &r.Address, &at); err != nil {
			return nil, fmt.Errorf("reading a relay route of %s: %w", target, err)
		}
		r.ConnectedAt = fromMS(at)
		out = append(out, r)
	}
	return out, rows.Err()
}

// EndLostSessions ends, as server_lost, every session recorded live by
// replica self (left by its previous run: self is stable per data
// directory), by no replica (recorded before replicas existed) or by a
// replica whose row expired before now (it died). Sessions of live
// replicas stay. It returns how many it ended; their audit events are
// written in the same transaction.
func (s *Store) EndLostSessions(ctx context.Context, self string, now time.Time) (int, error) {
	return s.endLiveWhere(ctx, `replica = $1 OR replica = '' OR replica NOT IN (SELECT id FROM replicas WHERE expires_at > $2)`,
		session.ServerLost, now, self, ms(now))
}

// EndDeadReplicaSessions ends, as server_lost, the sessions recorded live
// by replicas whose row expired before now: they died without ending them.
func (s *Store) EndDeadReplicaSessions(ctx context.Context, now time.Time) (int, error) {
	return s.endLiveWhere(ctx, `replica <> '' AND replica NOT IN (SELECT id FROM replicas WHERE expires_at > $1)`, session.ServerLost, now, ms(now))
}

// EndReplicaSessions ends every session replica recorded live, for reason
// (a replica that stops ends its own).
func (s *Store) EndReplicaSessions(ctx context.Context, replica string, reason session.EndReason, now time.Time) (int, error) {
	return s.endLiveWhere(ctx, `replica = $1`, reason, now, replica)
}

// SweepReplicas removes the relay routes of replicas whose row expired
// before now, and their rows once expired for a day. Run by every replica
// now and then; concurrent runs are harmless.
func (s *Store) SweepReplicas(ctx context.Context, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM relay_routes WHERE replica NOT IN (SELECT id FROM replicas WHERE expires_at > $1)`, ms(now)); err != nil {
			return fmt.Errorf("removing the relay routes of dead replicas: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE expires_at < $1`, ms(now.Add(-24*time.Hour))); err != nil {
			return fmt.Errorf("removing dead replicas: %w", err)
		}
		return nil
	})
}

// SessionsEnded returns those of the sessions ids that are no longer
// live (ended by another replica: a kill through its API, or a sweep).
func (s *Store) SessionsEnded(ctx context.Context, ids []string) ([]session.Session, error) {
	var out []session.Session
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		ph := make([]string, len(chunk))
		args := make([]any, len(chunk))
		for i, id := range chunk {
			ph[i] = fmt.Sprintf("$%d", i+1)
			args[i] = id
		}
		rows, err := s.db.QueryContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE state <> 'live' AND id IN (`+strings.Join(ph, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("reading the state of live sessions: %w", err)
		}
		for rows.Next() {
			x, err := scanSession(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading session: %w", err)
			}
			out = append(out, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
