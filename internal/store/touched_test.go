package store_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// TestHandedRowsOnlyCommitted: the rows a commit hands to the subscribers of
// SubscribeRequests (a woken long-poll answers with them instead of reading
// its request) are only those the committed transaction left: not a row
// returned by an operation rolled back to its savepoint (a request it
// "activated" that the database never held), and not a row a later
// statement of the same transaction moved again (which names the request
// but returns no row). Each of the three operations runs in one
// group-commit batch.
func TestHandedRowsOnlyCommitted(t *testing.T) {
	s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	type published struct {
		ids  []string
		rows []store.Request
	}
	var (
		mu  sync.Mutex
		got []published
	)
	cancel := s.SubscribeRequests(func(ids []string, rows []store.Request) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, published{slices.Clone(ids), slices.Clone(rows)})
	})
	defer cancel()
	row := func(id string, version int64) store.Request {
		return store.Request{ID: id, Target: "web-1", Version: version}
	}
	refused := errors.New("refused after its statements")
	ops := []func() error{
		// Rolled back: its row must not be handed over.
		func() error {
			return store.Tx(s, ctx, func(tx *sql.Tx) error {
				store.TouchRequestRow(tx, row("rolled-back", 3))
				return refused
			})
		},
		// Committed: handed over.
		func() error {
			return store.Tx(s, ctx, func(tx *sql.Tx) error {
				store.TouchRequestRow(tx, row("kept", 3))
				return nil
			})
		},
		// Moved again after the statement that returned it: not handed
		// over (the row is not what the commit left).
		func() error {
			return store.Tx(s, ctx, func(tx *sql.Tx) error {
				store.TouchRequestRow(tx, row("moved-again", 3))
				store.TouchRequest(tx, "moved-again")
				return nil
			})
		},
		// Moved twice, each time with its row: the last one.
		func() error {
			return store.Tx(s, ctx, func(tx *sql.Tx) error {
				store.TouchRequestRow(tx, row("twice", 3))
				store.TouchRequestRow(tx, row("twice", 4))
				return nil
			})
		},
	}
	c0, _ := store.WriterStats(s)
	held, release := store.HoldWriter(s)
	errs := make([]error, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = op() }()
		if i == 0 {
			<-held
			continue
		}
		for store.QueuedWrites(s) < i {
			time.Sleep(time.Millisecond)
		}
	}
	release()
	wg.Wait()
	if !errors.Is(errs[0], refused) {
		t.Fatalf("the refused operation: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("operation %d: %v", i+1, err)
		}
	}
	if c1, _ := store.WriterStats(s); c1-c0 != 1 {
		t.Fatalf("%d commits, want the four operations in one", c1-c0)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d publications, want 1: %+v", len(got), got)
	}
	for _, id := range []string{"kept", "moved-again", "twice"} {
		if !slices.Contains(got[0].ids, id) {
			t.Errorf("%s not named among the moved requests %v", id, got[0].ids)
		}
	}
	var handed []string
	for _, r := range got[0].rows {
		handed = append(handed, r.ID)
		if r.ID == "twice" && r.Version != 4 {
			t.Errorf("twice handed at version %d, want its last row (4)", r.Version)
		}
	}
	slices.Sort(handed)
	if want := []string{"kept", "twice"}; !slices.Equal(handed, want) {
		t.Errorf("rows handed over: %v, want %v (not the rolled-back operation's, not one moved again after its row)", handed, want)
	}
}
