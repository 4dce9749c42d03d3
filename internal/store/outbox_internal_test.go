package store

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
)

func countOutbox(t *testing.T, s *Store, event string) int {
	t.Helper()
	var n int
	if err := s.db.QueryRowContext(t.Context(), `SELECT count(*) FROM outbox WHERE event = $1`, event).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEnqueueRollsBack: a delivery is enqueued in the transaction of its
// change, so a change that is refused or rolled back announces nothing.
func TestEnqueueRollsBack(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	alice, bob := Actor{Name: "alice"}, Actor{Name: "bob"}
	if _, err := s.CreateWebhook(ctx, alice, Webhook{URL: "https://hooks.example.com/x", Format: FormatGeneric, Secret: "0123456789abcdef"}, now); err != nil {
		t.Fatal(err)
	}

	// An event written in a transaction that then fails.
	boom := errors.New("boom")
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.RequestExpired, Target: "web-1"}); err != nil {
			return err
		}
		if countOutbox(t, s, EventRequestExpired) != 0 {
			t.Error("an uncommitted delivery is visible outside its transaction")
		}
		return boom
	})
	if !errors.Is(err, boom) || countOutbox(t, s, EventRequestExpired) != 0 {
		t.Fatalf("after rollback: %v, %d deliveries; want none", err, countOutbox(t, s, EventRequestExpired))
	}

	// A real change: the approval that grants the request is audited (and
	// enqueued) before the grant fails; the whole change rolls back.
	if _, _, err := s.CreateTarget(ctx, alice, "web-1", nil, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	// The last approval asks again whether the requester may ask.
	if _, err := s.CreateBinding(ctx, alice, authz.Binding{Principal: "user:alice", Role: authz.Requester, Scope: authz.Everywhere}, now); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22, Protocol: policy.TCP}, Approval: policy.Approval{Mode: policy.Manual}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, alice, "web-1", pol, now); err != nil {
		t.Fatal(err)
	}
	ask := policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: netip.MustParsePrefix("198.51.100.7/32"), Duration: time.Hour, Reason: "x"}
	r, err := s.CreateRequest(ctx, alice, "web-1", ask, policy.DefaultLimits(), now)
	if err != nil {
		t.Fatal(err)
	}
	if countOutbox(t, s, EventRequestPending) != 1 {
		t.Fatal("no request.pending delivery")
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE UPDATE OF revision ON targets BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApproveRequest(ctx, bob, r.ID, "", 0, now.Add(time.Minute)); err == nil {
		t.Fatal("approval succeeded despite the trigger")
	}
	if n := countOutbox(t, s, EventRequestApproved); n != 0 {
		t.Fatalf("%d request.approved deliveries of a rolled-back approval, want 0", n)
	}
	if _, err := s.db.ExecContext(ctx, `DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApproveRequest(ctx, bob, r.ID, "", 0, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := countOutbox(t, s, EventRequestApproved); n != 1 {
		t.Fatalf("%d request.approved deliveries, want 1", n)
	}

	// A refused request is audited but announces nothing.
	ask.Duration = 1000 * time.Hour
	if _, err := s.CreateRequest(ctx, alice, "web-1", ask, policy.DefaultLimits(), now.Add(3*time.Minute)); err == nil {
		t.Fatal("an over-long request was accepted")
	}
	var total int
	if err := s.db.QueryRowContext(context.Background(), `SELECT count(*) FROM outbox`).Scan(&total); err != nil || total != 2 {
		t.Errorf("outbox holds %d deliveries, %v; want 2 (pending, approved)", total, err)
	}
}

// TestOutboxLegacyRows: a delivery enqueued before the outbox kept event
// snapshots holds the generic body the store built then; it is claimed
// with that body (Legacy) to be sent as it is, and a snapshot of an
// unknown version is an error rather than an empty delivery.
func TestOutboxLegacyRows(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.CreateWebhook(ctx, Actor{Name: "alice"}, Webhook{URL: "https://hooks.example.com/x", Format: FormatGeneric, Secret: "0123456789abcdef"}, now)
	if err != nil {
		t.Fatal(err)
	}
	old := `{"event":"request.revoked","id":9,"at":"2026-01-02T10:00:00Z","actor":"carol","target":"web-1","request_id":"r-1",` +
		`"request":{"requester":"alice","source":"198.51.100.7/32","ports":["22/tcp"],"duration":"1h0m0s","state":"revoked","expires_at":"2026-01-02T11:00:00Z"}}`
	if _, err := s.db.ExecContext(ctx, `INSERT INTO outbox (webhook_id, event_id, event, payload, next_attempt_at, created_at) VALUES ($1, 9, 'request.revoked', $2, $3, $3)`,
		w.ID, old, ms(now)); err != nil {
		t.Fatal(err)
	}
	items, err := s.ClaimOutbox(ctx, now, time.Minute, 10)
	if err != nil || len(items) != 1 {
		t.Fatalf("ClaimOutbox = %+v, %v; want the legacy delivery", items, err)
	}
	if string(items[0].Legacy) != old || items[0].Snapshot.Event != "" {
		t.Errorf("claimed legacy delivery %+v, want its stored body as Legacy", items[0])
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO outbox (webhook_id, event_id, event, payload, next_attempt_at, created_at) VALUES ($1, 10, 'request.revoked', '{"snapshot":99}', $2, $2)`,
		w.ID, ms(now)); err != nil {
		t.Fatal(err)
	}
	if items, err := s.ClaimOutbox(ctx, now.Add(time.Hour), time.Minute, 10); err == nil {
		t.Errorf("ClaimOutbox of a snapshot of unknown version = %+v, want an error", items)
	}
}
