package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CopyReport says what CopySQLiteToPostgres moved.
type CopyReport struct {
	// Rows is the number of rows copied per table.
	Rows map[string]int64
	// Audit is the verification of the copied audit trail.
	Audit VerifyResult
}

// derivedTables are rebuilt on PostgreSQL by triggers as the rows they count
// arrive (live_requests: migrations_postgres/0011_limits.sql), so they are
// not copied.
var derivedTables = []string{"live_requests"}

// notCopied are the tables each database keeps for itself.
var notCopied = []string{"schema_migrations", "sqlite_sequence"}

// ErrNotEmpty is a copy refused because its target database holds state.
var ErrNotEmpty = errors.New("the target database is not empty")

// CopySQLiteToPostgres copies every row of the SQLite store src into the
// PostgreSQL store dst, which must be empty (as the migrations left it): ids,
// hashes and the audit chain are kept as they are, so the trail verifies
// on dst with the same head. It reads src in one transaction (a consistent
// snapshot; writers wait) and writes dst in one transaction under the
// store's write lock: dst holds all of src or nothing. The identity
// sequences of dst are moved past the copied ids. Derived tables are
// rebuilt by dst's triggers.
//
// The caller stops the server of src first: what it commits after the
// snapshot is not copied.
func CopySQLiteToPostgres(ctx context.Context, src, dst *Store) (CopyReport, error) {
	if src.dialect.name != sqliteDialect.name || dst.dialect.name != postgresDialect.name {
		return CopyReport{}, fmt.Errorf("copy: from %s to %s; only from sqlite to postgres", src.dialect.name, dst.dialect.name)
	}
	rtx, err := src.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return CopyReport{}, fmt.Errorf("reading the SQLite database: %w", err)
	}
	defer rtx.Rollback()
	tables, err := sqliteTables(ctx, rtx)
	if err != nil {
		return CopyReport{}, err
	}
	rep := CopyReport{Rows: map[string]int64{}}
	err = dst.tx(ctx, func(wtx *sql.Tx) error {
		if err := requireEmpty(ctx, wtx); err != nil {
			return err
		}
		for _, t := range tables {
			if slices.Contains(derivedTables, t) {
				continue
			}
			n, err := copyTable(ctx, rtx, wtx, t)
			if err != nil {
				return err
			}
			rep.Rows[t] = n
		}
		if err := carryAuditMark(ctx, rtx, wtx); err != nil {
			return err
		}
		return resetSequences(ctx, wtx)
	})
	if err != nil {
		return CopyReport{}, err
	}
	want, err := src.VerifyAudit(ctx)
	if err != nil {
		return rep, err
	}
	if rep.Audit, err = dst.VerifyAudit(ctx); err != nil {
		return rep, err
	}
	if rep.Audit != want {
		return rep, fmt.Errorf("the copied audit trail does not match: %d events, head %q, %s; the SQLite one has %d events, head %q, %s",
			rep.Audit.Events, rep.Audit.Head, rep.Audit.Problem, want.Events, want.Head, want.Problem)
	}
	if !want.OK {
		// Copied as it is, evidence included: say so, or the copy would
		// read as a verified trail.
		return rep, fmt.Errorf("copied, but the audit trail does not verify, on SQLite as on PostgreSQL: event %d: %s", want.FirstBad, want.Problem)
	}
	return rep, nil
}

// carryAuditMark raises the PostgreSQL copy's audit high-water mark to the
// SQLite trail's (AUTOINCREMENT's counter, sqlite_sequence, which the copy
// leaves behind): the copied rows raise it only to the newest event left,
// so events removed from the end before the copy would no longer be
// reported (VerifyAudit) once on PostgreSQL.
func carryAuditMark(ctx context.Context, from, to *sql.Tx) error {
	var mark int64
	err := from.QueryRowContext(ctx, `SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0)`).Scan(&mark)
	if err != nil {
		return fmt.Errorf("reading the SQLite audit trail's high-water mark: %w", err)
	}
	if _, err := to.ExecContext(ctx, `UPDATE audit_high_water SET last_id = $1 WHERE last_id < $1`, mark); err != nil {
		return fmt.Errorf("carrying the audit high-water mark: %w", err)
	}
	return nil
}

// sqliteTables lists the tables of the SQLite database.
func sqliteTables(ctx context.Context, tx *sql.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	defer rows.Close()
	var ts []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		if !slices.Contains(notCopied, t) {
			ts = append(ts, t)
		}
	}
	return ts, rows.Err()
}

// requireEmpty refuses a PostgreSQL database that holds any row beyond
// what its migrations write (the generation counter and the audit
// high-water mark at 0).
func requireEmpty(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		return fmt.Errorf("listing tables: %w", err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var full []string
	for _, t := range tables {
		if slices.Contains(notCopied, t) {
			continue
		}
		q := `SELECT EXISTS (SELECT 1 FROM ` + quoteIdent(t) + `)`
		switch t {
		case "store_meta":
			q = `SELECT EXISTS (SELECT 1 FROM store_meta WHERE NOT (key = 'generation' AND value = 0))`
		case "audit_high_water":
			// Its one row, at 0 on a database without events, is raised by
			// the copied audit rows' trigger.
			q = `SELECT EXISTS (SELECT 1 FROM audit_high_water WHERE last_id <> 0)`
		}
		var some bool
		if err := tx.QueryRowContext(ctx, q).Scan(&some); err != nil {
			return fmt.Errorf("reading %s: %w", t, err)
		}
		if some {
			full = append(full, t)
		}
	}
	if len(full) > 0 {
		return fmt.Errorf("%w: rows in %s (copy only into a database no server has used)", ErrNotEmpty, strings.Join(full, ", "))
	}
	// The counter is copied from SQLite.
	if _, err := tx.ExecContext(ctx, `DELETE FROM store_meta`); err != nil {
		return fmt.Errorf("clearing store_meta: %w", err)
	}
	return nil
}

// copyBatch is the most rows one INSERT carries (PostgreSQL allows 65,535
// parameters per statement; tables have fewer than 40 columns).
const copyBatch = 500

// copyTable copies every row of table t, in batches of copyBatch rows.
func copyTable(ctx context.Context, from, to *sql.Tx, t string) (int64, error) {
	rows, err := from.QueryContext(ctx, `SELECT * FROM `+quoteIdent(t))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", t, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
	}
	head := `INSERT INTO ` + quoteIdent(t) + ` (` + strings.Join(quoted, ", ") + `) VALUES `
	var (
		n     int64
		args  []any
		marks []string
	)
	flush := func() error {
		if len(marks) == 0 {
			return nil
		}
		if _, err := to.ExecContext(ctx, head+strings.Join(marks, ", "), args...); err != nil {
			return fmt.Errorf("writing %s: %w", t, err)
		}
		args, marks = args[:0], marks[:0]
		return nil
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("reading %s: %w", t, err)
		}
		ph := make([]string, len(cols))
		for i := range vals {
			args = append(args, vals[i])
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		marks = append(marks, "("+strings.Join(ph, ", ")+")")
		n++
		if len(marks) == copyBatch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("reading %s: %w", t, err)
	}
	return n, flush()
}

// resetSequences moves every identity column's sequence past the greatest
// id copied, so the next row gets a new one.
func resetSequences(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_identity = 'YES'`)
	if err != nil {
		return fmt.Errorf("listing identity columns: %w", err)
	}
	type col struct{ table, column string }
	var cs []col
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.table, &c.column); err != nil {
			rows.Close()
			return err
		}
		cs = append(cs, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range cs {
		q := fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'), coalesce(max(%s), 0) + 1, false) FROM %s`,
			c.table, c.column, quoteIdent(c.column), quoteIdent(c.table))
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("moving the sequence of %s.%s: %w", c.table, c.column, err)
		}
	}
	return nil
}

// quoteIdent quotes a table or column name read from the database's own
// catalogue.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
