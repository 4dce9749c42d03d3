package store_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

var (
	alice = store.Actor{Name: "alice", ClientAddr: "192.0.2.10"}
	bob   = store.Actor{Name: "bob", ClientAddr: "192.0.2.11"}
	carol = store.Actor{Name: "carol", ClientAddr: "192.0.2.12"}
)

// hookStoreOn opens a store with open and cfg, with target web-1: 22/tcp
// approved automatically, 3389/tcp after two approvals.
func hookStoreOn(t *testing.T, open opener, cfg store.Config) *store.Store {
	t.Helper()
	s := open(t, cfg)
	if _, _, err := s.CreateTarget(t.Context(), alice, "web-1", nil, t0, time.Hour); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour},
		{Port: policy.Port{Number: 3389, Protocol: policy.TCP}, MaxDuration: 2 * time.Hour, Approval: policy.Approval{Mode: policy.Manual, Approvals: 2}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(t.Context(), alice, "web-1", pol, t0); err != nil {
		t.Fatal(err)
	}
	// The last approval asks again whether the requester may ask.
	if _, err := s.CreateBinding(t.Context(), alice, authz.Binding{Principal: "user:alice", Role: authz.Requester, Scope: authz.Everywhere}, t0); err != nil {
		t.Fatal(err)
	}
	return s
}

func addHook(t *testing.T, s *store.Store, format string, events ...string) store.Webhook {
	t.Helper()
	w, err := s.CreateWebhook(t.Context(), alice, store.Webhook{URL: "https://hooks.example.com/x", Format: format, Secret: "0123456789abcdef", Events: events}, t0)
	if err != nil {
		t.Fatalf("CreateWebhook: %v", err)
	}
	return w
}

func ask(t *testing.T, s *store.Store, port uint16, d time.Duration, now time.Time) store.Request {
	t.Helper()
	r, err := s.CreateRequest(t.Context(), alice, "web-1", policy.Request{Ports: []policy.Port{{Number: port, Protocol: policy.TCP}},
		Source: netip.MustParsePrefix("198.51.100.7/32"), Duration: d, Reason: "deploy"}, policy.DefaultLimits(), now)
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	return r
}

func report(t *testing.T, s *store.Store, now time.Time) {
	t.Helper()
	tg, err := s.GetTarget(t.Context(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReportApplied(t.Context(), "web-1", tg.Revision, "", nil, "", now); err != nil {
		t.Fatalf("ReportApplied: %v", err)
	}
}

// events lists the events of a webhook's deliveries, oldest first, each
// with its request id.
func events(t *testing.T, s *store.Store, hook string) []string {
	t.Helper()
	ds, err := s.ListDeliveries(t.Context(), hook, 1000)
	if err != nil {
		t.Fatalf("ListDeliveries: %v", err)
	}
	var out []string
	for _, d := range slices.Backward(ds) {
		out = append(out, d.Event)
	}
	return out
}

// TestWebhookEvents: each reported change enqueues one delivery per
// subscribed webhook, with the request as it stood after the change.
func TestWebhookEvents(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		cfg := store.DefaultConfig()
		cfg.ExpiryWarning = 10 * time.Minute
		s := hookStoreOn(t, open, cfg)
		all := addHook(t, s, store.FormatGeneric)
		some := addHook(t, s, store.FormatSlack, store.EventRequestActivated, store.EventRequestRevoked)

		a := ask(t, s, 22, time.Hour, t0) // approved automatically: not "pending"
		report(t, s, t0.Add(time.Second))
		b := ask(t, s, 3389, time.Hour, t0.Add(time.Minute))
		if _, err := s.ApproveRequest(ctx, bob, b.ID, "ok", 0, t0.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApproveRequest(ctx, carol, b.ID, "ok", 0, t0.Add(3*time.Minute)); err != nil {
			t.Fatal(err)
		}
		report(t, s, t0.Add(4*time.Minute))
		if _, err := s.RevokeRequest(ctx, carol, b.ID, "done", t0.Add(5*time.Minute)); err != nil {
			t.Fatal(err)
		}
		d := ask(t, s, 3389, time.Hour, t0.Add(6*time.Minute))
		if _, err := s.DenyRequest(ctx, bob, d.ID, "no", 0, t0.Add(7*time.Minute)); err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Duration{55 * time.Minute, 56 * time.Minute, 61 * time.Minute} {
			if _, err := s.Sweep(ctx, t0.Add(at), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		want := []string{"request.activated", "request.pending", "request.approved", "request.approved", "request.activated",
			"request.revoked", "request.pending", "request.denied", "request.expiring", "request.expired"}
		if got := events(t, s, all.ID); !slices.Equal(got, want) {
			t.Errorf("events of the all-events webhook:\n got %q\nwant %q", got, want)
		}
		if got, want := events(t, s, some.ID), []string{"request.activated", "request.activated", "request.revoked"}; !slices.Equal(got, want) {
			t.Errorf("events of the subscribed webhook: got %q, want %q", got, want)
		}

		// The payload: the audit event and the request after the change.
		items, err := s.ClaimOutbox(ctx, t0.Add(2*time.Hour), time.Minute, 100)
		if err != nil {
			t.Fatal(err)
		}
		trail, err := s.ListAudit(ctx, store.AuditFilter{RequestID: a.ID, Action: string(audit.RequestExpiring)})
		if err != nil || len(trail) != 1 {
			t.Fatalf("audit of the warning: %v, %v", trail, err)
		}
		var found bool
		for _, it := range items {
			p := it.Snapshot
			if it.WebhookID != all.ID || p.Event != store.EventRequestExpiring {
				continue
			}
			found = true
			if it.Secret != "0123456789abcdef" || it.URL != "https://hooks.example.com/x" || it.EventID != trail[0].ID || p.ID != trail[0].ID {
				t.Errorf("claimed %+v, want the webhook's URL and secret and event %d", it, trail[0].ID)
			}
			r := p.Request
			if p.RequestID != a.ID || p.Actor != audit.System || p.Target != "web-1" || r == nil || r.Requester != "alice" ||
				r.State != access.Active || fmt.Sprint(r.Ports) != "[22/tcp]" || r.Source.String() != "198.51.100.7/32" ||
				!r.ExpiresAt.Equal(t0.Add(time.Hour)) || p.Details["remaining"] != "5m0s" || it.Legacy != nil {
				t.Errorf("snapshot %+v of request %+v", p, r)
			}
		}
		if !found {
			t.Error("no request.expiring delivery claimed")
		}
	})
}

// TestSweepExpiryWarning: one warning per request, lead before its end; the
// sweeper is told to wake for it; requests shorter than the lead get none.
func TestSweepExpiryWarning(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		cfg := store.DefaultConfig()
		cfg.ExpiryWarning = 10 * time.Minute
		s := hookStoreOn(t, open, cfg)
		long := ask(t, s, 22, time.Hour, t0)
		report(t, s, t0.Add(time.Second))
		version := mustGet(t, s, long.ID).Version
		next, err := s.Sweep(ctx, t0.Add(2*time.Second), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if want := t0.Add(50 * time.Minute); !next.Equal(want) {
			t.Errorf("next sweep = %v, want the warning at %v", next, want)
		}
		for _, at := range []time.Duration{49 * time.Minute, 50 * time.Minute, 51 * time.Minute} {
			if _, err := s.Sweep(ctx, t0.Add(at), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		warned, err := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.RequestExpiring)})
		if err != nil {
			t.Fatal(err)
		}
		if len(warned) != 1 || warned[0].RequestID != long.ID || !warned[0].At.Equal(t0.Add(50*time.Minute)) {
			t.Errorf("warnings = %+v, want one for %s at +50m", warned, long.ID)
		}
		if v := mustGet(t, s, long.ID).Version; v != version {
			t.Errorf("version after the warning = %d, want %d: a warning changes no state", v, version)
		}

		short := ask(t, s, 22, 5*time.Minute, t0.Add(52*time.Minute))
		report(t, s, t0.Add(52*time.Minute))
		if _, err := s.Sweep(ctx, t0.Add(53*time.Minute), time.Minute); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.ListAudit(ctx, store.AuditFilter{RequestID: short.ID, Action: string(audit.RequestExpiring)}); len(n) != 0 {
			t.Errorf("a 5-minute request was warned with a 10-minute lead: %+v", n)
		}
	})
}

func mustGet(t *testing.T, s *store.Store, id string) store.Request {
	t.Helper()
	r, err := s.GetRequest(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustAudit(t *testing.T, s *store.Store, at time.Time) {
	t.Helper()
	if err := s.Audit(t.Context(), audit.Event{At: at, Actor: audit.System, Action: audit.RequestExpired, Target: "web-1", RequestID: ""}); err != nil {
		t.Fatal(err)
	}
}

func claim(t *testing.T, s *store.Store, at time.Time, limit int, skip ...string) []store.OutboxItem {
	t.Helper()
	items, err := s.ClaimOutbox(t.Context(), at, time.Minute, limit, skip...)
	if err != nil {
		t.Fatalf("ClaimOutbox: %v", err)
	}
	return items
}

func deliveryOf(t *testing.T, s *store.Store, hook string, id int64) store.Delivery {
	t.Helper()
	ds, err := s.ListDeliveries(t.Context(), hook, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("delivery %d not listed", id)
	return store.Delivery{}
}

// TestOutboxClaim: claims lease, leases run out (a crashed deliverer's rows
// are delivered again), failures wait for their next attempt, acks end them.
func TestOutboxClaim(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		s := hookStoreOn(t, open, store.DefaultConfig())
		h := addHook(t, s, store.FormatGeneric)
		mustAudit(t, s, t0)

		if got := claim(t, s, t0.Add(-time.Second), 10); len(got) != 0 {
			t.Fatalf("claimed %d deliveries before they were due", len(got))
		}
		first := claim(t, s, t0, 10)
		if len(first) != 1 || first[0].Attempt != 1 || first[0].Event != store.EventRequestExpired || first[0].WebhookID != h.ID {
			t.Fatalf("first claim = %+v, want one request.expired, attempt 1", first)
		}
		id := first[0].ID
		if got := claim(t, s, t0.Add(59*time.Second), 10); len(got) != 0 {
			t.Fatalf("a leased delivery was claimed again: %+v", got)
		}
		if next, err := s.NextOutboxAttempt(ctx); err != nil || !next.Equal(t0.Add(time.Minute)) {
			t.Errorf("next attempt = %v, %v; want the end of the lease", next, err)
		}
		again := claim(t, s, t0.Add(time.Minute), 10)
		if len(again) != 1 || again[0].ID != id || again[0].Attempt != 2 {
			t.Fatalf("after the lease = %+v, want delivery %d again, attempt 2", again, id)
		}
		if err := s.FailOutbox(ctx, id, "the receiver answered 500", t0.Add(3*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if d := deliveryOf(t, s, h.ID, id); d.State != store.DeliveryRetrying || d.Attempts != 2 || d.LastError != "the receiver answered 500" {
			t.Errorf("after a failure: %+v", d)
		}
		if got := claim(t, s, t0.Add(3*time.Minute-time.Millisecond), 10); len(got) != 0 {
			t.Fatal("a failed delivery was claimed before its next attempt")
		}
		if got := claim(t, s, t0.Add(3*time.Minute), 10); len(got) != 1 || got[0].Attempt != 3 {
			t.Fatalf("retry = %+v, want attempt 3", got)
		}
		if err := s.AckOutbox(ctx, id, t0.Add(3*time.Minute)); err != nil {
			t.Fatal(err)
		}
		// A late failure report (an attempt whose lease ran out) does not undo it.
		if err := s.FailOutbox(ctx, id, "late", t0.Add(4*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if d := deliveryOf(t, s, h.ID, id); d.State != store.DeliveryDelivered || d.Attempts != 3 || d.DeliveredAt == nil {
			t.Errorf("after the ack: %+v", d)
		}
		if got := claim(t, s, t0.Add(48*time.Hour), 10); len(got) != 0 {
			t.Fatalf("a delivered delivery was claimed: %+v", got)
		}

		// Giving up leaves the row, failed.
		mustAudit(t, s, t0.Add(time.Hour))
		g := claim(t, s, t0.Add(time.Hour), 10)
		if len(g) != 1 {
			t.Fatalf("claimed %d, want 1", len(g))
		}
		if err := s.FailOutbox(ctx, g[0].ID, "gone", time.Time{}); err != nil {
			t.Fatal(err)
		}
		if d := deliveryOf(t, s, h.ID, g[0].ID); d.State != store.DeliveryFailed || d.NextAttemptAt != nil {
			t.Errorf("given up: %+v", d)
		}
		if got := claim(t, s, t0.Add(48*time.Hour), 10); len(got) != 0 {
			t.Fatal("a delivery given up was claimed")
		}

		// At most limit per webhook; skipped webhooks are left alone.
		h2 := addHook(t, s, store.FormatSlack)
		for i := range 5 {
			mustAudit(t, s, t0.Add(2*time.Hour+time.Duration(i)*time.Second))
		}
		got := claim(t, s, t0.Add(3*time.Hour), 2, h2.ID)
		if len(got) != 2 || got[0].WebhookID != h.ID || got[1].WebhookID != h.ID || got[0].ID > got[1].ID {
			t.Fatalf("claim with limit 2 skipping %s = %+v", h2.ID, got)
		}
		got = claim(t, s, t0.Add(3*time.Hour), 2)
		if len(got) != 4 {
			t.Fatalf("second claim = %d deliveries, want 2 of each webhook", len(got))
		}

		// Removing a webhook removes its deliveries.
		if err := s.DeleteWebhook(ctx, alice, h2.ID, t0.Add(4*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ListDeliveries(ctx, h2.ID, 10); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deliveries of a removed webhook: %v, want ErrNotFound", err)
		}
		for _, it := range got {
			err := s.AckOutbox(ctx, it.ID, t0.Add(4*time.Hour))
			if it.WebhookID == h2.ID && !errors.Is(err, store.ErrNotFound) || it.WebhookID == h.ID && err != nil {
				t.Errorf("ack of delivery %d to %s: %v", it.ID, it.WebhookID, err)
			}
		}
		// The 2 finished deliveries older than 90m go, one batch of 1 at a
		// time; the ones still due stay.
		for i, want := range []int64{1, 1, 0} {
			n, err := s.PruneOutbox(ctx, t0.Add(90*time.Minute), 1)
			if err != nil || n != want {
				t.Errorf("PruneOutbox batch %d = %d, %v; want %d", i, n, err, want)
			}
		}
		if ds, err := s.ListDeliveries(ctx, h.ID, 100); err != nil || len(ds) != 5 {
			t.Errorf("deliveries left after pruning: %d, %v; want the 5 created after 90m", len(ds), err)
		}
	})
}

// TestWebhookSecretNotListed: the secret is used for claims only.
func TestWebhookSecretNotListed(t *testing.T) {
	eachDatabase(t, func(t *testing.T, open opener) {
		s := hookStoreOn(t, open, store.DefaultConfig())
		h := addHook(t, s, store.FormatGeneric)
		ws, err := s.ListWebhooks(t.Context())
		if err != nil || len(ws) != 1 || ws[0].Secret != "" || h.Secret != "" {
			t.Fatalf("ListWebhooks = %+v, %v; created %+v; want no secret", ws, err, h)
		}
		got, err := s.GetWebhook(t.Context(), h.ID)
		if err != nil || got.Secret != "" || got.URL != h.URL {
			t.Fatalf("GetWebhook = %+v, %v", got, err)
		}
		trail, err := s.ListAudit(t.Context(), store.AuditFilter{Action: string(audit.WebhookCreated)})
		if err != nil || len(trail) != 1 || trail[0].Details["url"] != "https://hooks.example.com/…" {
			t.Errorf("audit of the creation = %+v, %v; want the URL without its path", trail, err)
		}
	})
}
