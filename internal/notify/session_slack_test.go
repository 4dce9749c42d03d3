package notify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestSlackSessionEvents checks that the bastion's session events say who,
// where and why in Slack, not the generic fallback.
func TestSlackSessionEvents(t *testing.T) {
	at := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		p    wire.WebhookPayload
		want []string
	}{
		{wire.WebhookPayload{Event: "session.started", Actor: "alice", Target: "web-01", At: at,
			Details: map[string]any{"session": "s-1", "port": "22/tcp"}}, []string{"alice connected to web-01 22/tcp", "session s-1"}},
		{wire.WebhookPayload{Event: "session.ended", Actor: "system", Target: "web-01", At: at,
			Details: map[string]any{"session": "s-1", "principal": "alice", "end_reason": "revoked"}}, []string{"s-1 of alice on web-01 ended: revoked"}},
		{wire.WebhookPayload{Event: "session.killed", Actor: "carol", Target: "web-01", At: at, Reason: "suspicious",
			Details: map[string]any{"session": "s-1", "principal": "alice"}}, []string{"carol ended bastion session s-1 of alice on web-01: suspicious"}},
	}
	for _, tt := range tests {
		t.Run(tt.p.Event, func(t *testing.T) {
			got := notify.SlackText(tt.p)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("SlackText = %q, want it to contain %q", got, w)
				}
			}
		})
	}
}
