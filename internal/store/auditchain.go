package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
)

// The audit trail is a hash chain. Each event stores prev_hash, the hash of
// the event before it ("" for the first), and hash, computed as
//
//	hex(SHA-256(f(v) || f(prev_hash) || f(id) || f(at) || f(actor) || f(action) ||
//	            f(target) || f(request_id) || f(client_addr) || f(reason) || f(details)))
//
// where f(s) is the length of s as an 8-byte big-endian integer followed by
// the bytes of s, v is chainVersion, id and at (UTC milliseconds) are
// decimal, and details is the stored JSON text. Length prefixes make the
// encoding unambiguous; the id makes a removed or moved event break the
// chain even when its content is intact.
//
// The chain makes changes evident, not impossible: someone who can write
// the database can also recompute every hash after the event they changed.
// Removing the newest events leaves a shorter chain that links, but below
// the trail's high-water mark (highWaterOf), which VerifyAudit reports;
// someone who can also change the schema (drop PostgreSQL's triggers) or
// edit SQLite's file can lower that mark too. Recording the head hash
// elsewhere (VerifyResult.Head) closes both gaps.
const chainVersion = "jitgate-audit-v1"

// auditTx is what writing an event needs of a transaction.
type auditTx interface {
	execer
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// chainRow is an audit row as stored, the input of its hash.
type chainRow struct {
	ID                                                   int64
	At                                                   int64
	Actor, Action, Target, RequestID, ClientAddr, Reason string
	Details                                              string
	PrevHash, Hash                                       string
}

const chainColumns = `id, at, actor, action, target, request_id, client_addr, reason, details, prev_hash, hash`

func scanChainRow(r scanner) (chainRow, error) {
	var c chainRow
	err := r.Scan(&c.ID, &c.At, &c.Actor, &c.Action, &c.Target, &c.RequestID, &c.ClientAddr, &c.Reason, &c.Details, &c.PrevHash, &c.Hash)
	return c, err
}

// hash computes the row's hash from its content and PrevHash (not from
// its stored Hash).
func (c chainRow) hash() string {
	h := sha256.New()
	for _, s := range []string{chainVersion, c.PrevHash, strconv.FormatInt(c.ID, 10), strconv.FormatInt(c.At, 10),
		c.Actor, c.Action, c.Target, c.RequestID, c.ClientAddr, c.Reason, c.Details} {
		writeField(h, s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// chainHead returns the hash of the newest event ("" when there is none),
// the id the next event gets, and whether any webhook is registered. The
// id is what the database would assign: one above the greatest id the
// table ever held (its high-water mark, highWaterOf), so an event written
// after the newest were removed leaves a gap that VerifyAudit reports, as
// AUTOINCREMENT does on SQLite and the audit_next_id trigger on PostgreSQL
// (migrations_postgres/0034_audit_high_water.sql). One read, in the
// writer's transaction: the webhooks are read again (enqueueWebhooks) only
// when there are some, which an installation without webhooks never pays.
//
// The read is made once per transaction: each event written in it records
// the head it leaves (writeAudit: setAuditHead), and the next event of the
// same transaction, in the same or a later operation of a group-commit
// batch, starts from it (one statement fewer per event after the first:
// under load a batch carries a dozen). That is the head the read would
// return: every write transaction holds the write lock until it ends
// (SQLite's, or dialect.lockWrites across PostgreSQL replicas), so no
// other writer appends in between; every event is appended by writeAudit;
// an operation rolled back to its savepoint takes its head with it
// (restoreGeneration); and the statements that change what the read
// depends on otherwise (a webhook created or removed, events chained by
// chainUnhashed) forget it (forgetAuditHead).
func (s *Store) chainHead(ctx context.Context, tx auditTx) (hash string, next int64, hooks bool, err error) {
	if t, ok := tx.(*sql.Tx); ok {
		if h := peekGeneration(t).head; h.known {
			return h.hash, h.next, h.hooks, nil
		}
	}
	var newest, seq int64
	err = tx.QueryRowContext(ctx, `SELECT coalesce((SELECT hash FROM audit ORDER BY id DESC LIMIT 1), ''),
		coalesce((SELECT max(id) FROM audit), 0), coalesce(`+s.highWaterOf()+`, 0), EXISTS (SELECT 1 FROM webhooks)`).Scan(&hash, &newest, &seq, &hooks)
	if err != nil {
		return "", 0, false, fmt.Errorf("reading the audit chain head: %w", err)
	}
	return hash, max(newest, seq) + 1, hooks, nil
}

// auditHead is the audit chain's head as a transaction's last event left
// it (chainHead): the newest event's hash, the next event's id, and whether
// any webhook is registered.
type auditHead struct {
	known bool
	hash  string
	next  int64
	hooks bool
}

// leftAuditHead records, in tx, the head the event just inserted left.
func leftAuditHead(tx auditTx, h auditHead) {
	if t, ok := tx.(*sql.Tx); ok {
		setAuditHead(t, h)
	}
}

// forgetAuditHead makes the next event of tx read the chain's head again:
// tx changed what chainHead reads other than by appending an event.
func forgetAuditHead(tx *sql.Tx) { setAuditHead(tx, auditHead{}) }

// highWaterOf is a subquery giving the audit trail's high-water mark, the
// greatest id it ever held, which removing events does not lower: on
// SQLite AUTOINCREMENT's counter, on PostgreSQL audit_high_water (raised by
// a trigger on every insert, and refusing to be lowered or removed:
// migrations_postgres/0034_audit_high_water.sql). NULL when there is none
// (SQLite before the first event).
func (s *Store) highWaterOf() string {
	if s.dialect.name == sqliteDialect.name {
		return `(SELECT seq FROM sqlite_sequence WHERE name = 'audit')`
	}
	return `(SELECT last_id FROM audit_high_water)`
}

// chainUnhashed links the events written before the chain existed (by
// migration 0003) into it, oldest first. It only touches events that form
// the newest part of the trail: an unhashed event followed by hashed ones
// is not a leftover of the migration but a change, left for VerifyAudit to
// report. Idempotent; runs in one transaction.
func (s *Store) chainUnhashed(ctx context.Context) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var first sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT min(id) FROM audit WHERE hash = ''`).Scan(&first); err != nil {
			return err
		}
		if !first.Valid {
			return nil
		}
		// It rewrites hashes: an event after it reads the head again.
		defer forgetAuditHead(tx)
		var later int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM audit WHERE id > $1 AND hash <> ''`, first.Int64).Scan(&later); err != nil {
			return err
		}
		if later > 0 {
			return nil
		}
		var prev string
		err := tx.QueryRowContext(ctx, `SELECT hash FROM audit WHERE id < $1 ORDER BY id DESC LIMIT 1`, first.Int64).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		for next := first.Int64; ; {
			page, err := unhashedPage(ctx, tx, next, 500)
			if err != nil || len(page) == 0 {
				return err
			}
			for _, c := range page {
				c.PrevHash = prev
				c.Hash = c.hash()
				if _, err := tx.ExecContext(ctx, `UPDATE audit SET prev_hash = $1, hash = $2 WHERE id = $3`, c.PrevHash, c.Hash, c.ID); err != nil {
					return err
				}
				prev, next = c.Hash, c.ID+1
			}
		}
	})
	if err != nil {
		return fmt.Errorf("chaining audit events written before the chain: %w", err)
	}
	return nil
}

func unhashedPage(ctx context.Context, tx *sql.Tx, from int64, n int) ([]chainRow, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+chainColumns+` FROM audit WHERE id >= $1 AND hash = '' ORDER BY id LIMIT $2`, from, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []chainRow
	for rows.Next() {
		c, err := scanChainRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// VerifyResult is the outcome of checking the audit chain.
type VerifyResult struct {
	// OK is true when every event is intact and in place.
	OK bool
	// Events is the number of events in the trail.
	Events int
	// FirstBad is the id of the first event altered, missing or out of
	// place (0 when OK).
	FirstBad int64
	// Problem says what is wrong with it, in one line.
	Problem string
	// Head is the hash of the newest event: recorded elsewhere, it shows
	// later whether the newest events were removed or the chain rewritten.
	Head string
}

// VerifyAudit walks the whole trail in id order and checks each event's
// hash and its link to the event before it. It stops checking at the first
// problem but counts every event.
//
// It then compares the newest event with the trail's high-water mark
// (highWaterOf): events removed from the end leave a chain that links, but
// a mark above its newest event, reported as missing events. The mark is
// read before the walk, so an event committed in between only raises the
// newest id the walk sees, never fakes a removal.
func (s *Store) VerifyAudit(ctx context.Context) (VerifyResult, error) {
	var mark sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT `+s.highWaterOf()).Scan(&mark)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return VerifyResult{}, fmt.Errorf("reading the audit trail's high-water mark: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+chainColumns+` FROM audit ORDER BY id`)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("reading the audit trail: %w", err)
	}
	defer rows.Close()
	var (
		res  = VerifyResult{OK: true}
		prev *chainRow
	)
	for rows.Next() {
		c, err := scanChainRow(rows)
		if err != nil {
			return VerifyResult{}, fmt.Errorf("reading audit event: %w", err)
		}
		res.Events++
		if res.OK {
			if bad, problem := checkLink(prev, c); bad != 0 {
				res.OK, res.FirstBad, res.Problem = false, bad, problem
			}
		}
		prev = &c
	}
	if err := rows.Err(); err != nil {
		return VerifyResult{}, fmt.Errorf("reading the audit trail: %w", err)
	}
	var newest int64
	if prev != nil {
		newest = prev.ID
	}
	if res.OK && !mark.Valid && s.dialect.name == postgresDialect.name {
		// Its migration writes the row and a trigger refuses to delete it.
		res.OK, res.FirstBad, res.Problem = false, newest+1, "the audit trail's high-water mark (audit_high_water) was removed"
	}
	if res.OK && mark.Int64 > newest {
		res.OK, res.FirstBad, res.Problem = false, newest+1, tailMissing(newest, mark.Int64)
	}
	if res.OK && prev != nil {
		res.Head = prev.Hash
	}
	return res, nil
}

// checkLink checks event c given the event before it in id order (nil for
// the first) and returns the id of the first bad event and what is wrong,
// or 0.
func checkLink(prev *chainRow, c chainRow) (int64, string) {
	var prevID int64
	prevHash := ""
	if prev != nil {
		prevID, prevHash = prev.ID, prev.Hash
	}
	hashOK := c.hash() == c.Hash
	linkOK := c.PrevHash == prevHash
	switch {
	case c.ID != prevID+1:
		// Ids are assigned in order without gaps (SQLite AUTOINCREMENT
		// never reuses one and a rolled-back insert takes none back).
		missing := fmt.Sprintf("event %d is missing", prevID+1)
		if c.ID > prevID+2 {
			missing = fmt.Sprintf("events %d to %d are missing", prevID+1, c.ID-1)
		}
		if prev == nil {
			return prevID + 1, fmt.Sprintf("%s: the trail starts at event %d", missing, c.ID)
		}
		return prevID + 1, fmt.Sprintf("%s: event %d does not follow event %d", missing, c.ID, prevID)
	case !hashOK && linkOK:
		return c.ID, fmt.Sprintf("event %d was altered", c.ID)
	case !hashOK:
		// Neither its content nor its link fits this place: it holds
		// (part of) an event from elsewhere in the trail.
		return c.ID, fmt.Sprintf("events reordered: event %d holds content from elsewhere in the trail", c.ID)
	case !linkOK && prev == nil:
		return c.ID, fmt.Sprintf("event %d was altered: it does not start the trail", c.ID)
	case !linkOK:
		// c is intact, so the event before it was rewritten and its hash
		// recomputed.
		return prevID, fmt.Sprintf("event %d was altered: event %d does not follow it", prevID, c.ID)
	}
	return 0, ""
}

// tailMissing says that the events after newest, up to mark (the greatest
// id the trail held), were removed.
func tailMissing(newest, mark int64) string {
	missing := fmt.Sprintf("event %d is missing", mark)
	if mark > newest+1 {
		missing = fmt.Sprintf("events %d to %d are missing", newest+1, mark)
	}
	if newest == 0 {
		return fmt.Sprintf("%s: the trail is empty, but event %d was written", missing, mark)
	}
	return fmt.Sprintf("%s: the trail ends at event %d, but event %d was written", missing, newest, mark)
}
