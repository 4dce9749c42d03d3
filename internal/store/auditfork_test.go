package store_test

import (
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestAuditChainUnderFailingBatchMates attacks the audit chain's head kept
// per write transaction (chainHead: read once, each event records the head
// it leaves). A request refused by the live cap writes its request.created
// event and then fails, so its savepoint is rolled back with the event; a
// webhook created in the same batch changes what the head read says
// (hooks); two handles on one database (two replicas on PostgreSQL, two
// servers on one SQLite file) write at once, refused requests among their
// writes. The trail must verify, hold exactly the events of the writes
// reported done, and name each committed event once.
func TestAuditChainUnderFailingBatchMates(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) (a, b *store.Store)
	}{
		{"sqlite", func(t *testing.T) (*store.Store, *store.Store) {
			path := filepath.Join(t.TempDir(), "j.db")
			open := func() *store.Store {
				s, err := store.OpenSQLite(t.Context(), path, store.DefaultConfig())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(), open()
		}},
		{"postgres", func(t *testing.T) (*store.Store, *store.Store) {
			url := testenv.Postgres(t)
			return openPostgres(t, url), openPostgres(t, url)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.open(t)
			ctx := t.Context()
			admin := store.Actor{Name: "admin"}
			if _, _, err := a.CreateTarget(ctx, admin, "web-1", nil, t0, time.Hour); err != nil {
				t.Fatal(err)
			}
			pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.SetPolicy(ctx, admin, "web-1", pol, t0); err != nil {
				t.Fatal(err)
			}
			old, err := a.CreateWebhook(ctx, admin, store.Webhook{URL: "https://hooks.example/old", Format: "generic", Secret: "s"}, t0)
			if err != nil {
				t.Fatal(err)
			}
			// One live request per requester: the second of each is
			// refused after its request.created event was written.
			limits := policy.DefaultLimits()
			limits.MaxLivePerRequester = 1
			var src int
			var mu sync.Mutex
			ask := func(s *store.Store, who string) func() error {
				return func() error {
					mu.Lock()
					src++
					n := src
					mu.Unlock()
					_, err := s.CreateRequest(ctx, store.Actor{Name: who}, "web-1", policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}},
						Source: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, byte(n >> 8), byte(n)}), 32), Duration: time.Hour, Reason: "r"}, limits, t0)
					return err
				}
			}
			note := func(s *store.Store, i int) func() error {
				return func() error {
					return s.Audit(ctx, audit.Event{At: t0, Actor: "admin", Action: audit.RequestRefused, Target: "web-1", Reason: fmt.Sprint("note ", i)})
				}
			}
			ops := []func() error{
				ask(a, "alice"), // committed
				ask(a, "alice"), // refused after its event
				func() error {
					_, err := a.CreateWebhook(ctx, admin, store.Webhook{URL: "https://hooks.example/new", Format: "generic", Secret: "s"}, t0)
					return err
				},
				ask(a, "bob"),   // committed, delivered to both webhooks
				ask(a, "alice"), // refused
				func() error { return a.DeleteWebhook(ctx, admin, old.ID, t0) },
				ask(a, "bob"), // refused
				note(a, 0),
			}
			refused := map[int]bool{1: true, 4: true, 6: true}
			held, release := store.HoldWriter(a)
			errs := make([]error, len(ops))
			var wg sync.WaitGroup
			for i, op := range ops {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = op() }()
				if i == 0 {
					<-held
					continue
				}
				for store.QueuedWrites(a) < i {
					time.Sleep(time.Millisecond) // a condition: queued in order behind the held batch
				}
			}
			release()
			wg.Wait()
			for i, err := range errs {
				if refused[i] != (err != nil) {
					t.Errorf("operation %d: %v, want refused %v", i, err, refused[i])
				}
				if err != nil && !isLimit(err) {
					t.Errorf("operation %d: %v, want the live cap's refusal", i, err)
				}
			}
			verify := func(step string) store.VerifyResult {
				t.Helper()
				for _, s := range []*store.Store{a, b} {
					res, err := s.VerifyAudit(ctx)
					if err != nil || !res.OK {
						t.Fatalf("%s: VerifyAudit = %+v, %v", step, res, err)
					}
				}
				res, _ := a.VerifyAudit(ctx)
				return res
			}
			before := verify("after the batch")

			// Both handles at once, refusals among the writes.
			var done sync.Map
			var ok int64
			var okMu sync.Mutex
			var wg2 sync.WaitGroup
			for w := range 8 {
				s := a
				if w%2 == 1 {
					s = b
				}
				wg2.Add(1)
				go func() {
					defer wg2.Done()
					for i := range 12 {
						who := fmt.Sprintf("u%d-%d", w, i/2) // each user asks twice: the second is refused
						err := ask(s, who)()
						if i%3 == 2 {
							if err := note(s, w*100+i)(); err != nil {
								t.Error(err)
							} else {
								okMu.Lock()
								ok++
								okMu.Unlock()
							}
						}
						switch {
						case err == nil:
							okMu.Lock()
							ok++
							okMu.Unlock()
							done.Store(who, true)
						case !isLimit(err):
							t.Errorf("%s: %v", who, err)
						}
					}
				}()
			}
			wg2.Wait()
			after := verify("after both handles wrote at once")
			// Each committed write one event (a creation's request.created;
			// the refused ones none).
			if got := int64(after.Events - before.Events); got != ok {
				t.Errorf("the trail grew by %d events, %d writes were reported done", got, ok)
			}
		})
	}
}

func isLimit(err error) bool {
	var l *policy.LimitError
	return errors.As(err, &l)
}

// TestAuditChainAfterFailedCommit: a batch whose COMMIT fails (a
// constraint checked at the commit, as an I/O error there would) records
// none of its events, though each left the transaction's cached head for
// the next; the writes after it must link to the head the database holds,
// not to an event that was never committed. SQLite and PostgreSQL.
func TestAuditChainAfterFailedCommit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		open   func(t *testing.T) *store.Store
		schema string
		breaks string // a statement that makes the commit fail
	}{
		{"sqlite", func(t *testing.T) *store.Store {
			s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}, `CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (p INTEGER NOT NULL REFERENCES parent (id))`,
			`PRAGMA defer_foreign_keys = ON; INSERT INTO child (p) VALUES (42)`},
		{"postgres", func(t *testing.T) *store.Store { return openPostgres(t, testenv.Postgres(t)) },
			`CREATE TABLE parent (id INTEGER PRIMARY KEY);
			CREATE TABLE child (p INTEGER NOT NULL REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)`,
			`INSERT INTO child (p) VALUES (42)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			ctx := t.Context()
			if _, err := store.DB(s).ExecContext(ctx, tc.schema); err != nil {
				t.Fatal(err)
			}
			note := func(i int) func() error {
				return func() error {
					return s.Audit(ctx, audit.Event{At: t0, Actor: "admin", Action: audit.RequestRefused, Target: "web-1", Reason: fmt.Sprint("note ", i)})
				}
			}
			if err := note(0)(); err != nil {
				t.Fatal(err)
			}
			before, err := s.VerifyAudit(ctx)
			if err != nil || !before.OK {
				t.Fatalf("VerifyAudit = %+v, %v", before, err)
			}
			ops := []func() error{note(1), note(2), func() error {
				return store.Tx(s, ctx, func(tx *sql.Tx) error {
					for _, q := range strings.Split(tc.breaks, "; ") {
						if _, err := tx.ExecContext(ctx, q); err != nil {
							return err
						}
					}
					return nil
				})
			}, note(3)}
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
					time.Sleep(time.Millisecond) // a condition: queued in order behind the held batch
				}
			}
			release()
			wg.Wait()
			for i, err := range errs {
				if err == nil {
					t.Errorf("operation %d of the batch whose commit failed reported done", i)
				}
			}
			for i := 4; i < 7; i++ {
				if err := note(i)(); err != nil {
					t.Fatal(err)
				}
			}
			after, err := s.VerifyAudit(ctx)
			if err != nil || !after.OK || after.Events != before.Events+3 {
				t.Errorf("after a failed commit and 3 writes: VerifyAudit = %+v, %v; want OK with %d events", after, err, before.Events+3)
			}
		})
	}
}
