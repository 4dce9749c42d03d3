package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestWriterKeepsItsConnection: the group-commit writer's transactions run
// on one SQLite connection, whatever the readers took and gave back in
// between, with its larger page cache. In WAL mode a connection empties its
// page cache when it begins a transaction after another connection
// committed; a writer that took the connection a reader had just freed
// (database/sql hands out the last one freed) lost its cache to its own
// previous commit every time. A TEMP table, which lives on one connection,
// shows which connection a write ran on. Before beginWrite, the second write
// ran on another connection: the TEMP table was missing.
func TestWriterKeepsItsConnection(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TEMP TABLE writer_mark (x INTEGER)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Readers take connections from the pool, the last freed first, and
	// hold them while the writer writes again.
	var held []*sql.Conn
	for range 3 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	var marked int
	var cacheSize int64
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM temp.sqlite_master WHERE name = 'writer_mark'`).Scan(&marked); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&cacheSize)
	})
	for _, c := range held {
		c.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if marked != 1 {
		t.Errorf("the second write ran on another connection than the first (its TEMP table missing)")
	}
	if cacheSize != -writerCacheKiB {
		t.Errorf("the writer's connection has cache_size %d, want %d", cacheSize, -writerCacheKiB)
	}
}
