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

// TestWriterConnectionAfterAFailedCommit (an attack that found no hole,
// kept as a guard): a commit that fails (here on a deferred foreign key,
// where SQLite keeps the transaction open) must not leave its transaction
// on the writer's kept connection: the next batch's BEGIN would fail on it,
// and a reader given the connection would see rows never recorded. The
// driver rolls back a transaction whose COMMIT failed (modernc tx.Commit).
func TestWriterConnectionAfterAFailedCommit(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE parent (id INTEGER PRIMARY KEY);
		CREATE TABLE child (p INTEGER NOT NULL REFERENCES parent (id))`); err != nil {
		t.Fatal(err)
	}
	// A write whose commit fails: its foreign key checked at the commit.
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO child (p) VALUES (42)`)
		return err
	})
	if err == nil {
		t.Fatal("a commit that breaks a deferred foreign key succeeded")
	}
	// The next write is recorded.
	if err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO parent (id) VALUES (1)`)
		return err
	}); err != nil {
		t.Errorf("the write after a failed commit: %v", err)
	}
	// No reader sees the failed commit's row, nor has the writer's cache.
	var held []*sql.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range sqliteConns - 1 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		var children, parents, cacheSize int64
		if err := c.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM child), (SELECT count(*) FROM parent)`).Scan(&children, &parents); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&cacheSize); err != nil {
			t.Fatal(err)
		}
		if children != 0 {
			t.Errorf("reader %d sees %d rows of a commit that failed", i, children)
		}
		if parents != 1 {
			t.Errorf("reader %d sees %d rows of the write recorded after it, want 1", i, parents)
		}
		if cacheSize == -writerCacheKiB {
			t.Errorf("reader %d has the writer's page cache (cache_size %d)", i, cacheSize)
		}
	}
}

// TestWriterConnectionNotGivenBack: when the writer's BEGIN fails (another
// process holds the write lock beyond the busy timeout: an operator's
// sqlite3 shell in a transaction), its connection is closed, not given
// back to the pool. Before, sql.Conn.Close gave it back: a reader took it
// with the writer's 32 MiB page cache (and its checkpoint interval), and
// every such failure added one, up to the whole pool.
func TestWriterConnectionNotGivenBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "j.db")
	s, err := OpenSQLite(ctx, path, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The writer waits 50 ms for a lock, not 10 s.
	if err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `PRAGMA busy_timeout = 50`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", SQLiteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	write := func() error {
		return s.tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE store_meta SET value = value WHERE key = 'generation'`)
			return err
		})
	}
	if err := write(); err == nil {
		t.Fatal("a write went through while another process held the write lock")
	}
	if _, err := lock.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	lock.Close()
	// Every connection the readers may take (the whole pool: the writer
	// holds none between its connections).
	var held []*sql.Conn
	for i := range sqliteConns {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		var cacheSize int64
		if err := c.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&cacheSize); err != nil {
			t.Fatal(err)
		}
		if cacheSize == -writerCacheKiB {
			t.Errorf("reader %d has the writer's page cache (cache_size %d): its connection was given back", i, cacheSize)
		}
	}
	for _, c := range held {
		c.Close()
	}
	if err := write(); err != nil {
		t.Fatalf("the write after the lock was released: %v", err)
	}
}
