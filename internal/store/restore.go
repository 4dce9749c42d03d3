package store

// The restore guard: a database put back from an older copy must not reopen
// a grant that was revoked or expired after the copy was made, nor show it
// active. The store offers the facts and the one transaction that ends what
// the copy brought back; the server decides when (internal/server), the agent
// notices a server whose revision went backwards (internal/agent).
//
//   - The generation (store_meta) advances with every desired-state change.
//     The server keeps its highest value outside the database; a lower one
//     at start means an older copy: EndRestored.
//   - Copies made by BackupSQLite and RestoreSQLite carry a restore mark;
//     the first start on one ends its live grants whatever the mark file says
//     (a restore on a new host has no mark file).
//   - An agent that applied a higher revision than the database holds
//     reports it: AgentAhead ends that target's live grants and moves its
//     revision above the agent's, so the agent accepts the state again.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/recur"
)

// Generation returns the number of desired-state changes the database has
// recorded (it only grows, across every target). On SQLite, after this
// store's first commit, it is the value the last commit left, kept by the
// group-commit writer: no read.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	if g := s.w.gen.Load(); g > 0 {
		return g - 1, nil
	}
	var g int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM store_meta WHERE key = 'generation'`).Scan(&g); err != nil {
		return 0, fmt.Errorf("reading the database generation: %w", err)
	}
	// The restore guard writes it to its mark: a generation that a power
	// loss could take back would pass for a restore at the next start.
	if err := s.waitDurable(ctx); err != nil {
		return 0, err
	}
	return g, nil
}

// Replaced reports, once, that a write found the database's generation at
// gen when this store's last commit had left another (SQLite only, where
// this store makes every commit: the file was replaced under the running
// store, an older copy put back through SQLite). The restore guard ends
// what such a copy brought back; the generation alone cannot show it once
// the changes made on the copy brought it back up to the guard's mark.
func (s *Store) Replaced() (gen int64, ok bool) {
	v := s.w.replaced.Swap(0)
	return v - 1, v > 0
}

// RestoreMarked reports whether the database is a copy made by
// BackupSQLite or RestoreSQLite that no server has started on yet, and when
// the copy was made.
func (s *Store) RestoreMarked(ctx context.Context) (time.Time, bool, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT value FROM store_meta WHERE key = 'restore_pending'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("reading the restore mark: %w", err)
	}
	return fromMS(v), true, nil
}

// EndRestored makes a database that was put back from an older copy safe to
// serve: in one transaction it revokes every live request (their grants
// leave the desired state) with reason, audited one by one and as one
// database.restored event; it moves every schedule past the occurrences
// that may have been produced since the copy (skipRestoredOccurrences); it moves every target's revision up by lift, and
// the generation with it, so that no agent is ever sent a revision number
// it may already have applied with other contents; and it clears the
// restore mark. lift must exceed the number of revisions issued since the
// copy (the server knows it from its mark: generation difference + 1). It
// returns how many requests it ended.
func (s *Store) EndRestored(ctx context.Context, lift int64, reason string, now time.Time) (int, error) {
	if lift < 1 {
		return 0, fmt.Errorf("restore: revision lift %d must be positive", lift)
	}
	var (
		ended   int
		targets []string
		found   = s.restoreEnding()
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE state IN (`+liveStates+`)`).Scan(&ended); err != nil {
			return fmt.Errorf("counting live requests: %w", err)
		}
		// Every live state may be revoked (access.Next(state, Revoke)).
		if err := s.endLiveRequests(ctx, tx, `1 = 1`, nil, access.Revoke, reason, Actor{Name: audit.System}, audit.RequestRevoked, now); err != nil {
			return err
		}
		if err := s.skipRestoredOccurrences(ctx, tx, `1 = 1`, nil, reason, now); err != nil {
			return err
		}
		var err error
		if targets, err = liftRevisions(ctx, tx, `1 = 1`, nil, lift); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM store_meta WHERE key = 'restore_pending'`); err != nil {
			return fmt.Errorf("clearing the restore mark: %w", err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.DatabaseRestored, Reason: reason,
			Details: map[string]any{"ended": ended, "revision_lift": lift}})
	})
	if err != nil {
		return 0, fmt.Errorf("ending the grants of a restored database: %w", err)
	}
	// What the copies found before it began brought back is ended: commits
	// are told early again (SubscribeCommitted), unless another was found.
	s.endedRestore(found)
	if len(targets) > 0 {
		s.changed(targets...)
	}
	return ended, nil
}

// AgentAhead handles an agent that says it applied revision highWater of
// target when the server knew that target only up to revision known (its
// revision when the server started, or any it served since): the database
// went back (restored from an older copy) and may hold grants that were
// revoked or expired since, possibly under revision numbers the agent
// already applied with other contents. In one transaction it revokes every
// live request the agent enforces (the target's, or those of the targets
// behind the gateway), audited, moves their schedules past the occurrences
// the database cannot vouch for (skipRestoredOccurrences), and moves the target's revision above both
// highWater and its current one, so that the agent accepts the state again
// and no number is reused. When highWater ≤ known it does nothing. It
// returns how many requests it ended and the new revision (0: nothing done).
func (s *Store) AgentAhead(ctx context.Context, target string, highWater, known int64, now time.Time) (ended int, newRev int64, err error) {
	if highWater <= known {
		return 0, 0, nil
	}
	if highWater > access.MaxRevision {
		// A claim no server can have sent: lifting to it would overflow
		// the revisions and the generation of the whole database.
		return 0, 0, fmt.Errorf("agent of %s claims revision %d, above the highest possible %d: %w", target, highWater, int64(access.MaxRevision), ErrConflict)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var current int64
		err := tx.QueryRowContext(ctx, `SELECT revision FROM targets WHERE name = $1`, target).Scan(&current)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("target %q: %w", target, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading target %s: %w", target, err)
		}
		enforced := `(target = $1 OR target IN (SELECT name FROM targets WHERE gateway = $1))`
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE state IN (`+liveStates+`) AND `+enforced, target).Scan(&ended); err != nil {
			return fmt.Errorf("counting live requests of %s: %w", target, err)
		}
		reason := fmt.Sprintf("database restored: grant ended (the agent of %s had applied revision %d, the database knew only revision %d); request access again",
			target, highWater, known)
		if err := s.endLiveRequests(ctx, tx, enforced, []any{target}, access.Revoke, reason, Actor{Name: audit.System}, audit.RequestRevoked, now); err != nil {
			return err
		}
		if err := s.skipRestoredOccurrences(ctx, tx, `target = $2 OR target IN (SELECT name FROM targets WHERE gateway = $2)`, []any{target}, reason, now); err != nil {
			return err
		}
		// Ending them may have advanced the revision (their removals await
		// the agent's confirmation): lift from where it is now.
		var after int64
		if err := tx.QueryRowContext(ctx, `SELECT revision FROM targets WHERE name = $1`, target).Scan(&after); err != nil {
			return fmt.Errorf("reading target %s: %w", target, err)
		}
		newRev = max(after, highWater) + 1
		if _, err := liftRevisions(ctx, tx, `name = $2`, []any{target}, newRev-after); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: "agent:" + target, Action: audit.AgentRevisionAhead, Target: target, Reason: reason,
			Details: map[string]any{"agent_revision": highWater, "known_revision": known, "database_revision": current, "ended": ended}})
	})
	if err != nil {
		return 0, 0, err
	}
	s.changed(target)
	return ended, newRev, nil
}

// TargetRevisions returns every target's revision; the server reads them
// at start, as the highest revisions it knows (see AgentAhead).
func (s *Store) TargetRevisions(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, revision FROM targets`)
	if err != nil {
		return nil, fmt.Errorf("reading revisions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			n string
			r int64
		)
		if err := rows.Scan(&n, &r); err != nil {
			return nil, fmt.Errorf("reading revisions: %w", err)
		}
		out[n] = r
	}
	return out, rows.Err()
}

// liftRevisions adds lift to the revision of the targets matching where
// (whose parameters start at $2), and to the generation, and returns their
// names.
func liftRevisions(ctx context.Context, tx *sql.Tx, where string, args []any, lift int64) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `UPDATE targets SET revision = revision + $1 WHERE `+where+` RETURNING name`, append([]any{lift}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("lifting revisions: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading lifted target: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lifting revisions: %w", err)
	}
	var gen int64
	if err := tx.QueryRowContext(ctx, `UPDATE store_meta SET value = value + $1 WHERE key = 'generation' RETURNING value`, lift).Scan(&gen); err != nil {
		return nil, fmt.Errorf("advancing the database generation: %w", err)
	}
	movedGeneration(tx, gen, lift)
	// Unconfirmed removals move with their enforcer's revisions: a revision
	// number below the lifted ones may have been applied with other
	// contents, so only a revision of the new numbering confirms them
	// (access.Removal.ConfirmedBy).
	for _, n := range names {
		if _, err := tx.ExecContext(ctx, `UPDATE requests SET removal_revision = removal_revision + $1
			WHERE removal_enforcer = $2 AND removal_revision > 0 AND removal_confirmed_at IS NULL`, lift, n); err != nil {
			return nil, fmt.Errorf("lifting unconfirmed removals of %s: %w", n, err)
		}
		// A policy removal counts in its enforcer's revisions: the target's
		// own, or its gateway's (never both, or a restore that lifts both
		// would lift it twice).
		if _, err := tx.ExecContext(ctx, `UPDATE targets SET policy_removed_revision = policy_removed_revision + $1
			WHERE ((name = $2 AND gateway = '') OR gateway = $2) AND policy_removed_revision > 0 AND policy_removal_confirmed_at IS NULL`, lift, n); err != nil {
			return nil, fmt.Errorf("lifting the unconfirmed policy removals of %s: %w", n, err)
		}
	}
	return names, nil
}

// BackupSQLite writes a consistent copy of the SQLite database at dbPath to
// the new file to (mode 0600) with VACUUM INTO, which reads one snapshot and
// works while the server runs (WAL readers do not block it, nor it them).
// The copy carries a restore mark: the first server start on it ends every
// grant live in it, because by then they may have been revoked or expired.
func BackupSQLite(ctx context.Context, dbPath, to string, now time.Time) error {
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("backup: no database at %s: %w", dbPath, err)
	}
	// VACUUM INTO accepts an empty file: creating it first gives it 0600
	// and refuses to overwrite anything.
	f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: creating %s: %w", to, err)
	}
	f.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(to)
		}
	}()
	src, err := openPlain(dbPath, true)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := src.ExecContext(ctx, `VACUUM INTO $1`, SQLiteDSN(to)); err != nil {
		return fmt.Errorf("backup: copying %s to %s: %w", dbPath, to, err)
	}
	if err := markRestored(ctx, to, now); err != nil {
		return err
	}
	ok = true
	return nil
}

// RestoreSQLite puts the copy from in place of the database at dbPath,
// which no server may be using (the caller holds the data directory's
// lock). The copy must be a jitgate database; it is copied, not moved, and
// gets a restore mark (see BackupSQLite). The database it replaces is kept
// beside it as dbPath.replaced-TIME (with its WAL), and its name returned.
func RestoreSQLite(ctx context.Context, from, dbPath string, now time.Time) (replaced string, err error) {
	src, err := openPlain(from, true)
	if err != nil {
		return "", fmt.Errorf("restore: %s is not a sound jitgate database: %w", from, err)
	}
	var n int
	err = src.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n)
	if err == nil {
		var ok string
		if err = src.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&ok); err == nil && ok != "ok" {
			err = errors.New(ok)
		}
	}
	if err != nil {
		src.Close()
		return "", fmt.Errorf("restore: %s is not a sound jitgate database: %w", from, err)
	}
	tmp := dbPath + ".restoring"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		src.Close()
		return "", fmt.Errorf("restore: %w", err)
	}
	f.Close()
	// VACUUM INTO also folds a WAL that came with the copy into one file.
	_, err = src.ExecContext(ctx, `VACUUM INTO $1`, SQLiteDSN(tmp))
	src.Close()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("restore: copying %s: %w", from, err)
	}
	if err := markRestored(ctx, tmp, now); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if _, err := os.Stat(dbPath); err == nil {
		replaced = dbPath + ".replaced-" + now.UTC().Format("20060102T150405Z")
		for _, suffix := range []string{"", "-wal"} {
			if err := os.Rename(dbPath+suffix, replaced+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				os.Remove(tmp)
				return "", fmt.Errorf("restore: keeping the current database aside: %w", err)
			}
		}
	}
	// A shared-memory index of another database must not survive it.
	if err := os.Remove(dbPath + "-shm"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return replaced, fmt.Errorf("restore: %w", err)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return replaced, fmt.Errorf("restore: installing %s: %w", dbPath, err)
	}
	if d, err := os.Open(filepath.Dir(dbPath)); err == nil {
		d.Sync()
		d.Close()
	}
	return replaced, nil
}

// markRestored sets the restore mark in the database file at path.
func markRestored(ctx context.Context, path string, now time.Time) error {
	db, err := openPlain(path, false)
	if err != nil {
		return err
	}
	defer db.Close()
	// The table exists in any database migrated to 0009; an older copy gets
	// it here, and migration 0009 leaves it as it is.
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("marking %s as restored: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO store_meta (key, value) VALUES ('restore_pending', $1)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, ms(now)); err != nil {
		return fmt.Errorf("marking %s as restored: %w", path, err)
	}
	return nil
}

// openPlain opens an SQLite file without migrating it (a backup's source
// may be in use by a server; a copy must stay as it is).
func openPlain(path string, mustExist bool) (*sql.DB, error) {
	if mustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
	}
	dsn := SQLiteDSN(path, "_pragma=busy_timeout(10000)", "_pragma=synchronous(FULL)")
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return db, nil
}

// MarkRestored sets the restore mark in the store's database, as
// RestoreSQLite does in the file it installs: the first server start on it
// ends every grant live in it. For a PostgreSQL database put back with
// pg_restore or from a base backup (jitgate restore --database).
func (s *Store) MarkRestored(ctx context.Context, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO store_meta (key, value) VALUES ('restore_pending', $1)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, ms(now)); err != nil {
			return fmt.Errorf("marking the database as restored: %w", err)
		}
		return nil
	})
}

// skipRestoredOccurrences moves the schedules matching where (parameters
// from $2) past every occurrence a database put back from a copy cannot
// vouch for: each whose request could have been produced since the copy
// (start − recur.Lead ≤ now) and then revoked or ended, so producing it
// now — late, in its window — would reopen it. Their next_at becomes the
// first occurrence after now + recur.Lead (one not producible yet), and
// each move is audited as schedule.skipped.
func (s *Store) skipRestoredOccurrences(ctx context.Context, tx *sql.Tx, where string, args []any, reason string, now time.Time) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, principal, target, cron, timezone, next_at FROM schedules
		WHERE next_at IS NOT NULL AND next_at <= $1 AND (`+where+`)`, append([]any{ms(now.Add(recur.Lead))}, args...)...)
	if err != nil {
		return fmt.Errorf("selecting the schedules of a restored database: %w", err)
	}
	type due struct {
		id, principal, target, cron, zone string
		next                              int64
	}
	var ds []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.principal, &d.target, &d.cron, &d.zone, &d.next); err != nil {
			rows.Close()
			return fmt.Errorf("reading a schedule of a restored database: %w", err)
		}
		ds = append(ds, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("selecting the schedules of a restored database: %w", err)
	}
	for _, d := range ds {
		var next any // NULL: the recurrence no longer parses, or never occurs again
		if r, err := recur.Parse(d.cron, d.zone); err == nil {
			if n := r.Next(now.Add(recur.Lead)); !n.IsZero() {
				next = ms(n)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schedules SET next_at = $1 WHERE id = $2`, next, d.id); err != nil {
			return fmt.Errorf("moving schedule %s past the restore: %w", d.id, err)
		}
		details := map[string]any{"schedule": d.id, "principal": d.principal, "skipped_from": fromMS(d.next).Format(time.RFC3339),
			"why": reason + ": occurrences that may have been produced and ended since the copy are not produced again"}
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.ScheduleSkipped, Target: d.target, Details: details}); err != nil {
			return err
		}
	}
	return nil
}
