package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestInterruptedOpInABatch: an operation whose caller's context ends while
// its write statement runs is interrupted by the driver, and SQLite then
// rolls back the whole transaction, its batch-mates' work too (not just its
// savepoint). The writer must see it (the savepoint is gone), run the
// others again in a new transaction on its kept connection, and report
// each as it was recorded: the mates once each, nothing of the interrupted
// one.
func TestInterruptedOpInABatch(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE marks (x TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	insert := func(x string) func(*sql.Tx) error {
		return func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO marks (x) VALUES ($1)`, x)
			return err
		}
	}
	held := make(chan struct{})
	release := make(chan struct{})
	s.w.hold = func() {
		select {
		case <-held:
		default:
			close(held)
			<-release
		}
	}
	results := make(chan error, 3)
	go func() { results <- s.tx(ctx, insert("first")) }()
	<-held
	go func() { results <- s.tx(ctx, insert("mate")) }()
	// A write statement of seconds, interrupted when its context ends.
	slowCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	slowDone := make(chan error, 1)
	go func() {
		slowDone <- s.tx(slowCtx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(slowCtx, `INSERT INTO marks (x)
				WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000000)
				SELECT 'slow' FROM c WHERE n % 100000000 = 0`)
			return err
		})
	}()
	for QueuedWrites(s) < 2 {
		time.Sleep(time.Millisecond) // a condition: both queued behind the held batch
	}
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("a batch-mate of the interrupted write: %v", err)
		}
	}
	serr := <-slowDone
	t.Logf("the interrupted write: %v", serr)
	if serr == nil {
		t.Errorf("the interrupted write reported done")
	}
	rows, err := s.db.QueryContext(ctx, `SELECT x FROM marks ORDER BY x`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var x string
		rows.Scan(&x)
		got = append(got, x)
	}
	rows.Close()
	if want := []string{"first", "mate"}; !slices.Equal(got, want) {
		t.Errorf("recorded %q, want %q", got, want)
	}
	// The writer's connection still writes.
	if err := s.tx(ctx, insert("after")); err != nil {
		t.Errorf("the write after: %v", err)
	}
}
