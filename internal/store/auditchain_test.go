package store_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// rwDB opens the database file of a store for writing behind its back, as
// someone with access to the file could.
func rwDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", store.SQLiteDSN(path, "_pragma=busy_timeout(5000)"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// trail builds a store at a fresh path with a trail of real operations:
// token.created, target.added, agent.enrolled, policy.set, request.created,
// request.activated, request.revoked, request.refused (ids 1 to 8).
func trail(t *testing.T) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jitgate.db")
	s := openSQLite(t, path)
	t.Cleanup(func() { s.Close() })
	return fillTrail(t, s), path
}

// fillTrail writes trail's events into s.
func fillTrail(t *testing.T, s *store.Store) *store.Store {
	t.Helper()
	ctx := t.Context()
	_, _, req := seed(t, s)
	if _, err := s.ReportApplied(ctx, "web-1", req.Revision, "", nil, "", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeRequest(ctx, store.Actor{Name: "bob"}, req.ID, "done", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, audit.Event{At: t0.Add(2 * time.Minute), Actor: "carol", Action: audit.RequestRefused, Target: "web-1",
		Reason: "no", Details: map[string]any{"rule": "22/tcp", "b": 1.5}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func verify(t *testing.T, s *store.Store) store.VerifyResult {
	t.Helper()
	res, err := s.VerifyAudit(t.Context())
	if err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	return res
}

func TestAuditChainIntact(t *testing.T) {
	s, path := trail(t)
	res := verify(t, s)
	if !res.OK || res.Events != 8 || res.FirstBad != 0 || res.Problem != "" || len(res.Head) != 64 {
		t.Fatalf("VerifyAudit = %+v, want OK with 8 events and a head hash", res)
	}
	// Reopening (migrations and chaining run again) changes nothing.
	s.Close()
	s = openSQLite(t, path)
	defer s.Close()
	if again := verify(t, s); again != res {
		t.Errorf("after reopen VerifyAudit = %+v, want %+v", again, res)
	}
	var empty int
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM audit WHERE hash = '' OR length(hash) <> 64`).Scan(&empty); err != nil || empty != 0 {
		t.Errorf("%d events without a hash, %v", empty, err)
	}
}

func TestAuditChainEmpty(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
	defer s.Close()
	if res := verify(t, s); !res.OK || res.Events != 0 || res.Head != "" {
		t.Errorf("VerifyAudit of an empty trail = %+v, want OK, 0 events", res)
	}
}

func TestAuditChainTampering(t *testing.T) {
	const swap = `UPDATE audit SET (at, actor, action, target, request_id, client_addr, reason, details%[1]s) =
		(SELECT at, actor, action, target, request_id, client_addr, reason, details%[1]s FROM audit WHERE id = %[2]d)
		WHERE id = %[3]d`
	swapRows := func(cols string, a, b int) []string {
		// Park a's row at id 0, copy b over a, then the parked row over b.
		return []string{
			`INSERT INTO audit (id, at, actor, action, target, request_id, client_addr, reason, details, prev_hash, hash)
				SELECT 0, at, actor, action, target, request_id, client_addr, reason, details, prev_hash, hash FROM audit WHERE id = ` + strconv.Itoa(a),
			fmt.Sprintf(swap, cols, b, a),
			fmt.Sprintf(swap, cols, 0, b),
			`DELETE FROM audit WHERE id = 0`,
		}
	}
	for _, tc := range []struct {
		name     string
		sql      []string
		firstBad int64
		problem  string
	}{
		{"reason changed", []string{`UPDATE audit SET reason = 'nothing to see' WHERE id = 3`}, 3, "event 3 was altered"},
		{"time changed", []string{`UPDATE audit SET at = at + 1 WHERE id = 7`}, 7, "event 7 was altered"},
		{"details changed", []string{`UPDATE audit SET details = '{"b":1.5,"rule":"80/tcp"}' WHERE id = 8`}, 8, "event 8 was altered"},
		{"hash cleared", []string{`UPDATE audit SET hash = '' WHERE id = 2`}, 2, "event 2 was altered"},
		{"middle removed", []string{`DELETE FROM audit WHERE id = 4`}, 4, "event 4 is missing: event 5 does not follow event 3"},
		{"two removed", []string{`DELETE FROM audit WHERE id IN (4, 5)`}, 4, "events 4 to 5 are missing: event 6 does not follow event 3"},
		{"first removed", []string{`DELETE FROM audit WHERE id = 1`}, 1, "event 1 is missing: the trail starts at event 2"},
		{"rows swapped", swapRows(", prev_hash, hash", 3, 6), 3, "events reordered"},
		{"contents swapped", swapRows("", 2, 5), 2, "event 2"},
		{"neighbours swapped", swapRows(", prev_hash, hash", 4, 5), 4, "events reordered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path := trail(t)
			db := rwDB(t, path)
			for _, q := range tc.sql {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			res := verify(t, s)
			if res.OK || res.FirstBad != tc.firstBad || !strings.Contains(res.Problem, tc.problem) {
				t.Errorf("VerifyAudit = %+v, want first bad event %d and a problem saying %q", res, tc.firstBad, tc.problem)
			}
			if res.Head != "" {
				t.Errorf("a broken chain reports head %q", res.Head)
			}
		})
	}
}

// TestAuditChainMigration: events written before the chain existed are
// chained when the store opens; an unhashed event in the middle of a chained
// trail is not (it was tampered with, not migrated).
func TestAuditChainMigration(t *testing.T) {
	s, path := trail(t)
	s.Close()
	db := rwDB(t, path)
	if _, err := db.Exec(`UPDATE audit SET prev_hash = '', hash = ''`); err != nil {
		t.Fatal(err)
	}
	s = openSQLite(t, path)
	if res := verify(t, s); !res.OK || res.Events != 8 {
		t.Errorf("after chaining old events VerifyAudit = %+v, want OK with 8 events", res)
	}
	if err := s.Audit(t.Context(), audit.Event{At: t0.Add(time.Hour), Actor: "dave", Action: audit.RequestRefused}); err != nil {
		t.Fatal(err)
	}
	if res := verify(t, s); !res.OK || res.Events != 9 {
		t.Errorf("after a new event VerifyAudit = %+v, want OK with 9 events", res)
	}
	s.Close()

	if _, err := db.Exec(`UPDATE audit SET reason = 'changed', hash = '' WHERE id = 5`); err != nil {
		t.Fatal(err)
	}
	s = openSQLite(t, path)
	defer s.Close()
	if res := verify(t, s); res.OK || res.FirstBad != 5 {
		t.Errorf("with event 5 changed and unhashed VerifyAudit = %+v, want event 5 named", res)
	}
}

func TestListAuditActorUntil(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		s := fillTrail(t, open(t, store.DefaultConfig()))
		ctx := t.Context()
		for _, tc := range []struct {
			f    store.AuditFilter
			want []int64
		}{
			{store.AuditFilter{Actor: "bob"}, []int64{7}},
			{store.AuditFilter{Actor: "carol", Target: "web-1"}, []int64{8}},
			{store.AuditFilter{Until: t0.Add(time.Second)}, []int64{1, 2, 3, 4, 5}},
			{store.AuditFilter{Since: t0.Add(time.Second), Until: t0.Add(2 * time.Minute)}, []int64{6, 7}},
			{store.AuditFilter{Actor: "nobody"}, nil},
		} {
			es, err := s.ListAudit(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListAudit(%+v): %v", tc.f, err)
			}
			var got []int64
			for _, e := range es {
				got = append(got, e.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ListAudit(%+v) ids = %v, want %v", tc.f, got, tc.want)
			}
		}
	})
}

func TestTargetStats(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		s := fillTrail(t, open(t, store.DefaultConfig()))
		ctx := t.Context()
		st, err := s.TargetStats(ctx, "web-1", t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if st.LastAccess == nil || !st.LastAccess.Equal(t0.Add(time.Second)) || st.LastUser != "alice" || st.Approved7d != 1 {
			t.Errorf("TargetStats = %+v, want last access at t0+1s by alice, 1 in 7 days", st)
		}
		if st, _ := s.TargetStats(ctx, "web-1", t0.Add(8*24*time.Hour)); st.Approved7d != 0 || st.LastAccess == nil {
			t.Errorf("8 days later TargetStats = %+v, want the last access kept and 0 in 7 days", st)
		}
		if st, err := s.TargetStats(ctx, "nope", t0); err != nil || st.LastAccess != nil || st.Approved7d != 0 {
			t.Errorf("TargetStats of an unknown target = %+v, %v; want zero", st, err)
		}
		all, err := s.AllTargetStats(ctx, t0.Add(time.Hour))
		if err != nil || len(all) != 1 || all["web-1"].Approved7d != 1 {
			t.Errorf("AllTargetStats = %+v, %v", all, err)
		}
	})
}

// TestAuditChainNewestRemoved: removing the newest events of the trail (by
// hand, behind the store's back) is reported, on SQLite and on PostgreSQL,
// whether or not an event is written after: the trail's high-water mark
// (SQLite's AUTOINCREMENT counter, PostgreSQL's audit_high_water) stays at
// the greatest id it held. A new event gets the id the database would have
// assigned, above the mark, and still links to the newest one left. On
// PostgreSQL the mark cannot be lowered or removed with the rows. Before
// the mark, only SQLite's "then written" cases were reported.
func TestAuditChainNewestRemoved(t *testing.T) {
	type db struct {
		name string
		open func(t *testing.T) (*store.Store, *sql.DB)
	}
	dbs := []db{
		{"SQLite", func(t *testing.T) (*store.Store, *sql.DB) {
			s, path := trail(t)
			return s, rwDB(t, path)
		}},
		{"PostgreSQL", func(t *testing.T) (*store.Store, *sql.DB) {
			url := testenv.Postgres(t)
			s := fillTrail(t, openPostgres(t, url))
			raw, err := sql.Open("pgx", url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Close() })
			return s, raw
		}},
	}
	cases := []struct {
		name      string
		remove    string
		thenWrite bool
		firstBad  int64
		problem   string
	}{
		{"newest", `DELETE FROM audit WHERE id = 8`, false, 8, "event 8 is missing: the trail ends at event 7, but event 8 was written"},
		{"newest three", `DELETE FROM audit WHERE id >= 6`, false, 6, "events 6 to 8 are missing: the trail ends at event 5"},
		{"all", `DELETE FROM audit`, false, 1, "events 1 to 8 are missing: the trail is empty"},
		{"newest two, then written", `DELETE FROM audit WHERE id >= 7`, true, 7, "events 7 to 8 are missing: event 9 does not follow event 6"},
		{"all, then written", `DELETE FROM audit`, true, 1, "events 1 to 8 are missing: the trail starts at event 9"},
	}
	for _, d := range dbs {
		t.Run(d.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					s, raw := d.open(t)
					if res := verify(t, s); !res.OK || res.Events != 8 {
						t.Fatalf("VerifyAudit before = %+v, want 8 events, OK", res)
					}
					if _, err := raw.Exec(c.remove); err != nil {
						t.Fatal(err)
					}
					if c.thenWrite {
						if err := s.Audit(t.Context(), audit.Event{At: t0.Add(3 * time.Minute), Actor: "carol", Action: audit.RequestRefused, Target: "web-1"}); err != nil {
							t.Fatal(err)
						}
					}
					res := verify(t, s)
					if res.OK || res.FirstBad != c.firstBad || !strings.Contains(res.Problem, c.problem) || res.Head != "" {
						t.Errorf("VerifyAudit = %+v, want event %d first bad: %q", res, c.firstBad, c.problem)
					}
				})
			}
		})
	}
	// Whoever removes the rows cannot take PostgreSQL's mark down with
	// them, in the same transaction or after.
	t.Run("PostgreSQL mark kept", func(t *testing.T) {
		s, raw := dbs[1].open(t)
		for _, q := range []string{
			`UPDATE audit_high_water SET last_id = 6`,
			`UPDATE audit_high_water SET last_id = 0`,
			`DELETE FROM audit_high_water`,
			`TRUNCATE audit_high_water`,
			// The paths around a plain UPDATE fire its row triggers too.
			`INSERT INTO audit_high_water (one, last_id) VALUES (true, 6) ON CONFLICT (one) DO UPDATE SET last_id = excluded.last_id`,
			`MERGE INTO audit_high_water m USING (SELECT true AS one) s ON m.one = s.one WHEN MATCHED THEN UPDATE SET last_id = 6`,
			`MERGE INTO audit_high_water m USING (SELECT true AS one) s ON m.one = s.one WHEN MATCHED THEN DELETE`,
		} {
			tx, err := raw.Begin()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(`DELETE FROM audit WHERE id >= 7`); err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(q)
			tx.Rollback()
			if err == nil || !strings.Contains(err.Error(), "only ever raised") {
				t.Errorf("%s after removing events 7 and 8: %v, want refused", q, err)
			}
		}
		if res := verify(t, s); !res.OK || res.Events != 8 {
			t.Errorf("VerifyAudit after the refused attempts = %+v, want 8 events, OK", res)
		}
		// A write that rolls back takes its raise of the mark back: no
		// gap is read as a removed event.
		tx, err := raw.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO audit (at, actor, action) VALUES (1, 'x', 'y')`); err != nil {
			t.Fatal(err)
		}
		tx.Rollback()
		if err := s.Audit(t.Context(), audit.Event{At: t0.Add(3 * time.Minute), Actor: "carol", Action: audit.RequestRefused}); err != nil {
			t.Fatal(err)
		}
		if res := verify(t, s); !res.OK || res.Events != 9 {
			t.Errorf("VerifyAudit after a rolled-back insert and a write = %+v, want 9 events, OK", res)
		}
	})
}

// TestListAuditInSpans: AuditFilter.Spans keeps the events whose id lies in
// a span (To 0: no end), on both databases; InSpans with no span keeps none;
// 2,000 spans are taken (before, SQLite refused the chain of ORs: "Expression
// tree is too large").
func TestListAuditInSpans(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		s := fillTrail(t, open(t, store.DefaultConfig()))
		for _, c := range []struct {
			spans []store.IDSpan
			want  []int64
		}{
			{[]store.IDSpan{{From: 2, To: 3}, {From: 7}}, []int64{2, 3, 7, 8}},
			{[]store.IDSpan{{From: 5, To: 5}}, []int64{5}},
			{nil, nil},
			// A name created and removed 2,000 times: a chain of ORs
			// deeper than SQLite parses.
			{append(manySpans(2000), store.IDSpan{From: 4, To: 4}), []int64{4}},
		} {
			es, err := s.ListAudit(t.Context(), store.AuditFilter{InSpans: true, Spans: c.spans})
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, e := range es {
				got = append(got, e.ID)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("ListAudit in %v: %v, want %v", c.spans, got, c.want)
			}
		}
	})
}

// manySpans returns n one-id spans past the trail's events.
func manySpans(n int) []store.IDSpan {
	out := make([]store.IDSpan, n)
	for i := range out {
		out[i] = store.IDSpan{From: int64(1000 + 2*i), To: int64(1000 + 2*i)}
	}
	return out
}
