package notify_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

func TestSlackBody(t *testing.T) {
	at := time.Date(2026, 1, 2, 14, 4, 0, 0, time.UTC)
	req := &wire.WebhookRequest{Requester: "alice", Source: "198.51.100.7/32", Ports: []string{"22/tcp"}, Duration: wire.Duration(time.Hour),
		Reason: "deploy <!channel> & fix", State: "active", ExpiresAt: at.Add(time.Hour), ApprovalsRequired: 2}
	base := wire.WebhookPayload{ID: 7, At: at, Target: "web-01", RequestID: "r-abc", Request: req}
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
		payload, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		body, err := notify.Body(store.FormatSlack, payload)
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
	if _, err := notify.Body("teams", []byte("{}")); err == nil {
		t.Error("an unknown format rendered")
	}
}
