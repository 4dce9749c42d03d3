package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// States of a device login in progress (device_logins.state). A login is
// pending until the replica waiting at the provider records how it ended;
// the outcome is then told once, to whichever replica the CLI polls.
const (
	DeviceLoginPending    = "pending"
	DeviceLoginSucceeded  = "succeeded"
	DeviceLoginDenied     = "denied"
	DeviceLoginExpired    = "expired"
	DeviceLoginSuperseded = "superseded"
	DeviceLoginFailed     = "failed"
)

// ErrTooManyLogins refuses a device login when the database holds as many
// in progress as allowed.
var ErrTooManyLogins = errors.New("too many logins in progress")

// DeviceLogin is a single sign-on device login as recorded.
type DeviceLogin struct {
	// ID is the SHA-256 of the CLI's code: the code itself is not kept.
	ID      string
	Source  string
	Started time.Time
	Expires time.Time
	State   string
	// Identity is what the provider vouched for (JSON of oidc.Identity,
	// which the store does not interpret), when State is succeeded.
	Identity string
	// Error says why the login failed, when State is failed.
	Error string
}

// BeginDeviceLogin records a device login for the CLI's code, begun from
// source. When source already has maxPerSource pending, its oldest is
// superseded (its id returned, so the replica waiting for it may stop);
// when the database holds maxTotal pending, nothing is recorded and
// ErrTooManyLogins is returned. Logins a minute past their expiry are
// deleted on the way.
func (s *Store) BeginDeviceLogin(ctx context.Context, code, source string, now, expires time.Time, maxPerSource, maxTotal int) (id, superseded string, err error) {
	id = hashSecret(code)
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM device_logins WHERE expires_at < $1`, ms(now.Add(-time.Minute))); err != nil {
			return fmt.Errorf("deleting expired device logins: %w", err)
		}
		var total, mine int
		if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(CASE WHEN source = $1 THEN 1 ELSE 0 END), 0)
			FROM device_logins WHERE state = $2`, source, DeviceLoginPending).Scan(&total, &mine); err != nil {
			return fmt.Errorf("counting device logins: %w", err)
		}
		if total >= maxTotal {
			return ErrTooManyLogins
		}
		if mine >= maxPerSource {
			err := tx.QueryRowContext(ctx, `SELECT code_hash FROM device_logins WHERE source = $1 AND state = $2
				ORDER BY started_at, code_hash LIMIT 1`, source, DeviceLoginPending).Scan(&superseded)
			if err != nil {
				return fmt.Errorf("finding the oldest device login of %s: %w", source, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE device_logins SET state = $1 WHERE code_hash = $2`, DeviceLoginSuperseded, superseded); err != nil {
				return fmt.Errorf("superseding a device login: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_logins (code_hash, source, started_at, expires_at) VALUES ($1, $2, $3, $4)`,
			id, source, ms(now), ms(expires)); err != nil {
			return fmt.Errorf("recording a device login: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	return id, superseded, nil
}

// EndDeviceLogin records how the pending device login id ended (state,
// with the identity or the error). It returns false, changing nothing,
// when the login is no longer pending (superseded, or gone).
func (s *Store) EndDeviceLogin(ctx context.Context, id, state, identity, errText string) (bool, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE device_logins SET state = $1, identity = $2, error = $3 WHERE code_hash = $4 AND state = $5`,
			state, identity, errText, id, DeviceLoginPending)
		if err != nil {
			return fmt.Errorf("ending a device login: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n > 0, err
}

// TakeDeviceLogin returns the device login of the CLI's code. A login that
// ended is deleted as it is returned (its outcome is told once); a pending
// one past its expiry (the replica waiting for it died) is returned as
// expired and deleted. ErrNotFound: no such login.
func (s *Store) TakeDeviceLogin(ctx context.Context, code string, now time.Time) (DeviceLogin, error) {
	d := DeviceLogin{ID: hashSecret(code)}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var started, expires int64
		err := tx.QueryRowContext(ctx, `SELECT source, started_at, expires_at, state, identity, error FROM device_logins WHERE code_hash = $1`, d.ID).
			Scan(&d.Source, &started, &expires, &d.State, &d.Identity, &d.Error)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device login: %w", ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading a device login: %w", err)
		}
		d.Started, d.Expires = fromMS(started), fromMS(expires)
		if d.State == DeviceLoginPending && !now.After(d.Expires) {
			return nil
		}
		if d.State == DeviceLoginPending {
			d.State = DeviceLoginExpired
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM device_logins WHERE code_hash = $1`, d.ID); err != nil {
			return fmt.Errorf("deleting a device login told: %w", err)
		}
		return nil
	})
	return d, err
}
