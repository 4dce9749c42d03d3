package store_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
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

// TestDesiredGrantsColumns: the snapshot's read skips the columns it does
// not use (a host's target, whose grant it is when no rule is reached
// through the bastion), and still gives every grant all it needs: its
// target, and its request and requester when a rule is reached through the
// bastion (the relay admits only the grant's own principal).
func TestDesiredGrantsColumns(t *testing.T) {
	ctx := t.Context()
	s := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
	defer s.Close()
	now := time.Now()
	db := store.DB(s)
	if _, err := db.ExecContext(ctx, `INSERT INTO targets (name, created_at) VALUES ('web-01', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO grants (request_id, target, requester, source, protocol, port, expires_at)
		VALUES ('r-1', 'web-01', 'alice', '192.0.2.7/32', 'tcp', 3389, $1)`, now.Add(time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	for _, access := range []policy.Access{policy.AccessDirect, policy.AccessBoth, policy.AccessBastion} {
		head := store.Desired{Targets: []store.Enforced{{Name: "web-01", Policy: policy.Policy{Rules: []policy.Rule{
			{Port: policy.Port{Number: 22, Protocol: policy.TCP}}, {Port: policy.Port{Number: 3389, Protocol: policy.TCP}, Access: access}}}}}}
		var got []store.GrantRow
		if err := s.DesiredGrants(ctx, "web-01", head, now, func(gs []store.GrantRow) error {
			got = append(got, gs...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := store.GrantRow{ID: got[0].ID, Target: "web-01", Source: netip.MustParsePrefix("192.0.2.7/32"),
			Port: policy.Port{Number: 3389, Protocol: policy.TCP}, ExpiresAt: got[0].ExpiresAt}
		if access.Bastion() {
			want.RequestID, want.Requester = "r-1", "alice"
		}
		if len(got) != 1 || got[0] != want || got[0].ExpiresAt.UnixMilli() != now.Add(time.Hour).UnixMilli() {
			t.Errorf("access %q: read %+v, want %+v", access, got, want)
		}
	}
}

// BenchmarkDesiredGrants reads a host's 100,000 live grants as its
// snapshot does, without and with a rule reached through the bastion
// (which also reads each grant's request and requester):
//
//	go test ./internal/store -run '^$' -bench BenchmarkDesiredGrants
func BenchmarkDesiredGrants(b *testing.B) {
	const n = 100_000
	ctx := b.Context()
	s, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "jitgate.db"), store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	db := store.DB(s)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := tx.ExecContext(ctx, `INSERT INTO grants (request_id, target, requester, source, protocol, port, expires_at)
			VALUES ($1, 'web-01', 'alice', $2, 'tcp', 22, $3)`, fmt.Sprintf("r-bench-%d", i), fmt.Sprintf("10.%d.%d.%d/32", i>>16, byte(i>>8), byte(i)),
			now.Add(time.Hour).UnixMilli()); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	for _, access := range []policy.Access{policy.AccessDirect, policy.AccessBoth} {
		head := store.Desired{Targets: []store.Enforced{{Name: "web-01", Policy: policy.Policy{Rules: []policy.Rule{
			{Port: policy.Port{Number: 22, Protocol: policy.TCP}, Access: access}}}}}}
		b.Run(string(access), func(b *testing.B) {
			for b.Loop() {
				got := 0
				if err := s.DesiredGrants(ctx, "web-01", head, now, func(gs []store.GrantRow) error {
					got += len(gs)
					return nil
				}); err != nil || got != n {
					b.Fatalf("%d grants, %v", got, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/grant")
		})
	}
}
