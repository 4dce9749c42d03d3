package store_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// TestDesiredGrantsInChunks: the snapshot's read in chunks (a query per
// chunk, from the last id read) hands over every live grant of the
// enforcer exactly once, in id order, and none of another target or past
// its deadline, whatever the chunk size: the same grants as one query.
func TestDesiredGrantsInChunks(t *testing.T) {
	ctx := t.Context()
	s := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
	defer s.Close()
	now := time.Now()
	db := store.DB(s)
	var want []int64
	for i := range 95 {
		target, exp := "web-01", now.Add(time.Hour)
		switch {
		case i%7 == 3:
			target = "db-01"
		case i%11 == 5:
			exp = now.Add(-time.Second)
		}
		res, err := db.ExecContext(ctx, `INSERT INTO grants (request_id, target, requester, source, protocol, port, expires_at)
			VALUES ($1, $2, 'alice', $3, 'tcp', 22, $4)`, fmt.Sprintf("r-%d", i), target, fmt.Sprintf("192.0.2.%d/32", i), exp.UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := res.LastInsertId(); target == "web-01" && exp.After(now) {
			want = append(want, id)
		}
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO targets (name, created_at) VALUES ('web-01', 0)`); err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1, 10, 16, 1000} {
		restore := store.SetDesiredChunk(chunk)
		head, err := s.DesiredHead(ctx, "web-01", now)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		calls := 0
		err = s.DesiredGrants(ctx, "web-01", head, now, func(gs []store.GrantRow) error {
			calls++
			if len(gs) > chunk {
				t.Errorf("chunk %d: handed %d grants at once", chunk, len(gs))
			}
			for _, g := range gs {
				got = append(got, g.ID)
			}
			return nil
		})
		restore()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("chunk %d: got grants %v, want %v", chunk, got, want)
		}
		if wantCalls := (len(want) + chunk - 1) / chunk; calls != wantCalls {
			t.Errorf("chunk %d: %d calls, want %d", chunk, calls, wantCalls)
		}
	}
}
