package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// Lease says which replica runs a singleton job (the sweeper, webhook
// delivery, pruning) and until when its claim stands. internal/lease
// decides when to take, renew and give one up; the store only keeps the
// row and makes each take-or-renew one atomic statement.
type Lease struct {
	Name     string
	Holder   string
	Acquired time.Time
	Expires  time.Time
}

// AcquireLease takes the lease name for holder until now+ttl, or renews it
// when holder has it already. It succeeds only when nobody holds the lease,
// holder does, or the holder's claim has expired (at now): of replicas
// racing for an expired lease exactly one wins. It returns the lease as it
// stands afterwards and whether holder has it. Idempotent for the holder.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (Lease, bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return Lease{}, false, fmt.Errorf("acquiring lease %q for %q (ttl %s): name, holder and a positive ttl are required", name, holder, ttl)
	}
	var l Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// One statement: the conflict arm renews our own lease or takes an
		// expired one; it does nothing to a live lease of another holder.
		_, err := tx.ExecContext(ctx, `INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
				acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END
			WHERE leases.holder = excluded.holder OR leases.expires_at <= $3`,
			name, holder, ms(now), ms(now.Add(ttl)))
		if err != nil {
			return fmt.Errorf("taking lease %s: %w", name, err)
		}
		var acq, exp int64
		if err := tx.QueryRowContext(ctx, `SELECT holder, acquired_at, expires_at FROM leases WHERE name = $1`, name).Scan(&l.Holder, &acq, &exp); err != nil {
			return fmt.Errorf("reading lease %s: %w", name, err)
		}
		l.Name, l.Acquired, l.Expires = name, fromMS(acq), fromMS(exp)
		return nil
	})
	if err != nil {
		return Lease{}, false, err
	}
	return l, l.Holder == holder, nil
}

// ReleaseLease gives up holder's lease at once (a replica that stops), so
// another replica need not wait for it to expire. Releasing a lease held by
// someone else, or by nobody, does nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
			return fmt.Errorf("releasing lease %s: %w", name, err)
		}
		return nil
	})
}

// ListLeases returns every lease row, by name (expired ones included: their
// Expires says so).
func (s *Store) ListLeases(ctx context.Context) ([]Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, holder, acquired_at, expires_at FROM leases ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		var acq, exp int64
		if err := rows.Scan(&l.Name, &l.Holder, &acq, &exp); err != nil {
			return nil, fmt.Errorf("listing leases: %w", err)
		}
		l.Acquired, l.Expires = fromMS(acq), fromMS(exp)
		out = append(out, l)
	}
	return out, rows.Err()
}

// SharedKey returns the key called name that every replica of this
// database uses alike, making it with gen the first time. Of replicas
// making it at once, the first to commit wins and all return its key.
func (s *Store) SharedKey(ctx context.Context, name string, gen func() []byte, now time.Time) ([]byte, error) {
	var key []byte
	err := s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT value FROM shared_keys WHERE name = $1`, name).Scan(&key)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reading shared key %s: %w", name, err)
		}
		key = gen()
		if _, err := tx.ExecContext(ctx, `INSERT INTO shared_keys (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`,
			name, key, ms(now)); err != nil {
			return fmt.Errorf("storing shared key %s: %w", name, err)
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM shared_keys WHERE name = $1`, name).Scan(&key)
	})
	return key, err
}

// ReplaceSharedKey records value as the key called name, replacing the
// one recorded (or recording it), and audits e in the same transaction: a
// deliberate change such as a rotation of the SSH CA key.
func (s *Store) ReplaceSharedKey(ctx context.Context, name string, value []byte, e audit.Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO shared_keys (name, value, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, created_at = excluded.created_at`,
			name, value, ms(e.At)); err != nil {
			return fmt.Errorf("replacing shared key %s: %w", name, err)
		}
		return s.writeAudit(ctx, tx, e)
	})
}
