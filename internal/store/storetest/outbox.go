package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// testAuditChain: the trail is hash-chained as it is written, also when
// writers race (appends are serialized), and VerifyAudit checks every
// event.
func testAuditChain(t *testing.T, s *store.Store) {
	ctx := t.Context()
	res, err := s.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Events != 0 || res.Head != "" {
		t.Errorf("VerifyAudit of an empty trail = %+v, want OK, 0 events, no head", res)
	}
	for i := range 4 {
		newTarget(t, s, fmt.Sprintf("web-%d", i), t0)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 5 {
				src := fmt.Sprintf("198.51.100.%d/32", 10*i+j+1)
				if _, err := s.CreateRequest(ctx, alice, fmt.Sprintf("web-%d", i), ask(src, time.Hour, tcp(22)), policy.DefaultLimits(), at(time.Minute)); err != nil {
					t.Errorf("CreateRequest: %v", err)
				}
			}
		})
	}
	wg.Wait()
	es, err := s.ListAudit(ctx, store.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	res, err = s.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Events != len(es) || len(res.Head) != 64 || res.FirstBad != 0 {
		t.Errorf("VerifyAudit after concurrent writes = %+v, want OK over all %d events with a head hash", res, len(es))
	}
	mustRequest(t, s, alice, "web-0", ask("198.51.100.200/32", time.Hour, tcp(22)), at(2*time.Minute))
	again, err := s.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !again.OK || again.Events <= res.Events || again.Head == res.Head {
		t.Errorf("VerifyAudit after one more event = %+v, want OK with more events and a new head than %+v", again, res)
	}
}

// testOutbox: a change reported as a webhook event enqueues its delivery
// in the change's transaction; deliveries are claimed under a lease,
// retried after a failure and done once acknowledged; secrets are never
// listed back.
func testOutbox(t *testing.T, s *store.Store) {
	ctx := t.Context()
	manualTarget(t, s, "db-1", t0)
	h, err := s.CreateWebhook(ctx, alice, store.Webhook{URL: "https://hooks.example.com/x", Format: store.FormatGeneric, Secret: "0123456789abcdef",
		Events: []string{store.EventRequestPending, store.EventRequestDenied}}, t0)
	if err != nil {
		t.Fatalf("CreateWebhook: %v", err)
	}
	hooks, err := s.ListWebhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) != 1 || hooks[0].ID != h.ID || hooks[0].Secret != "" {
		t.Errorf("ListWebhooks = %+v, want %s without its secret", hooks, h.ID)
	}
	r := mustRequest(t, s, alice, "db-1", ask("198.51.100.7/32", time.Hour, tcp(3389)), at(time.Minute))
	if _, err := s.DenyRequest(ctx, bob, r.ID, "not now", 0, at(2*time.Minute)); err != nil {
		t.Fatalf("DenyRequest: %v", err)
	}
	if got, err := s.ClaimOutbox(ctx, at(30*time.Second), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("ClaimOutbox before anything was due = %+v, %v; want none", got, err)
	}
	items, err := s.ClaimOutbox(ctx, at(2*time.Minute), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, it := range items {
		events = append(events, it.Event)
		// The snapshot holds the request as the change left it, read in
		// the change's transaction: pending approval, then denied.
		want := map[string]string{store.EventRequestPending: "pending_approval", store.EventRequestDenied: "denied"}[it.Event]
		p := it.Snapshot
		if p.Event != it.Event || p.RequestID != r.ID || p.Target != "db-1" || p.Request == nil || string(p.Request.State) != want ||
			p.Request.Source.String() != "198.51.100.7/32" || fmt.Sprint(p.Request.Ports) != "[3389/tcp]" || p.Request.Duration != time.Hour ||
			it.Legacy != nil || it.Secret != "0123456789abcdef" || it.Attempt != 1 {
			t.Errorf("claimed %+v: want event %s of %s in state %s, signed, attempt 1", it, it.Event, r.ID, want)
		}
	}
	if fmt.Sprint(events) != fmt.Sprint([]string{store.EventRequestPending, store.EventRequestDenied}) {
		t.Fatalf("claimed events %v, want the pending request and its denial in order", events)
	}
	if got, err := s.ClaimOutbox(ctx, at(2*time.Minute+59*time.Second), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("a leased delivery was claimed again: %+v, %v", got, err)
	}
	if err := s.AckOutbox(ctx, items[0].ID, at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.FailOutbox(ctx, items[1].ID, "the receiver answered 500", at(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimOutbox(ctx, at(5*time.Minute-time.Millisecond), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("a failed delivery was claimed before its retry: %+v, %v", got, err)
	}
	got, err := s.ClaimOutbox(ctx, at(5*time.Minute), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != items[1].ID || got[0].Attempt != 2 {
		t.Fatalf("retry = %+v, %v; want delivery %d, attempt 2", got, err, items[1].ID)
	}
	ds, err := s.ListDeliveries(ctx, h.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	states := map[int64]string{}
	for _, d := range ds {
		states[d.ID] = d.State
	}
	if states[items[0].ID] != store.DeliveryDelivered {
		t.Errorf("acknowledged delivery is %q, want %q", states[items[0].ID], store.DeliveryDelivered)
	}
}
