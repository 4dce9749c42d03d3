package notify_test

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

func TestSlackBody(t *testing.T) {
	at := time.Date(2026, 1, 2, 14, 4, 0, 0, time.UTC)
	req := &store.WebhookRequest{Requester: "alice", Source: netip.MustParsePrefix("198.51.100.7/32"), Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}},
		Duration: time.Hour, Reason: "deploy <!channel> & fix", State: access.Active, ExpiresAt: at.Add(time.Hour), ApprovalsRequired: 2}
	base := store.WebhookEvent{ID: 7, At: at, Target: "web-01", RequestID: "r-abc", Request: req}
	for _, tc := range []struct {
		event, actor, reason string
		details              map[string]any
		want                 string
	}{
		{store.EventRequestPending, "alice", "", nil,
			":raising_hand: alice asks for web-01 22/tcp from 198.51.100.7/32 for 1h0m0s (request r-abc, needs 2 approvals): deploy &lt;!channel&gt; &amp; fix"},
		{store.EventRequestApproved, "bob", "", map[string]any{"approvals": 1, "required": 2},
			":white_check_mark: bob approved alice's request r-abc for web-01 22/tcp (1 of 2 approvals)"},
		{store.EventRequestDenied, "bob", "denied by bob: not today", nil,
			":no_entry: alice's request r-abc for web-01 22/tcp was denied by bob: not today"},
		{store.EventRequestActivated, "agent:web-01", "", nil,
			":unlock: alice's request r-abc for web-01 22/tcp is active until 15:04 UTC"},
		{store.EventRequestExpiring, "system", "", map[string]any{"remaining": "10m0s"},
			":alarm_clock: alice's request r-abc for web-01 22/tcp expires at 15:04 UTC (in 10m0s)"},
		{store.EventRequestExpired, "system", "", nil,
			":lock: alice's request r-abc for web-01 22/tcp expired"},
		{store.EventRequestRevoked, "carol", "", nil,
			":lock: alice's request r-abc for web-01 22/tcp was revoked by carol"},
	} {
		p := base
		p.Event, p.Actor, p.Reason, p.Details = tc.event, tc.actor, tc.reason, tc.details
		body, err := notify.Body(store.OutboxItem{Format: store.FormatSlack, Event: tc.event, Snapshot: p})
		if err != nil {
			t.Fatalf("%s: %v", tc.event, err)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil || len(got) != 1 {
			t.Fatalf("%s: body %s is not {\"text\": ...}: %v", tc.event, body, err)
		}
		if got["text"] != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.event, got["text"], tc.want)
		}
	}
	if _, err := notify.Body(store.OutboxItem{Format: "teams", Snapshot: base}); err == nil {
		t.Error("an unknown format rendered")
	}
}

// TestPayload: the generic body is the snapshot in the webhook API's form,
// and a delivery enqueued before the outbox kept snapshots is sent with the
// body it was given (and rendered for Slack from it).
func TestPayload(t *testing.T) {
	at := time.Date(2026, 1, 2, 14, 4, 0, 0, time.UTC)
	e := store.WebhookEvent{Event: store.EventRequestActivated, ID: 7, At: at, Actor: "agent:web-01", Target: "web-01", RequestID: "r-abc",
		Details: map[string]any{"revision": 3},
		Request: &store.WebhookRequest{Requester: "alice", Source: netip.MustParsePrefix("198.51.100.7/32"),
			Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}, {Number: 53, Protocol: policy.UDP}}, Duration: 90 * time.Minute,
			State: access.Active, ExpiresAt: at.Add(90 * time.Minute)}}
	body, err := notify.Body(store.OutboxItem{Format: store.FormatGeneric, Snapshot: e})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"request.activated","id":7,"at":"2026-01-02T14:04:00Z","actor":"agent:web-01","target":"web-01","request_id":"r-abc",` +
		`"details":{"revision":3},"request":{"requester":"alice","source":"198.51.100.7/32","ports":["22/tcp","53/udp"],"duration":"1h30m0s",` +
		`"state":"active","expires_at":"2026-01-02T15:34:00Z"}}`
	if string(body) != want {
		t.Errorf("generic body\n got %s\nwant %s", body, want)
	}
	legacy := []byte(`{"event":"request.revoked","id":9,"at":"2026-01-02T14:04:00Z","actor":"carol","target":"web-01","request_id":"r-abc"}`)
	for format, want := range map[string]string{
		store.FormatGeneric: string(legacy),
		store.FormatSlack:   `{"text":":lock: request r-abc for web-01 was revoked by carol"}`,
	} {
		body, err := notify.Body(store.OutboxItem{Format: format, Legacy: legacy})
		if err != nil || string(body) != want {
			t.Errorf("%s body of a legacy delivery = %s, %v; want %s", format, body, err, want)
		}
	}
}
