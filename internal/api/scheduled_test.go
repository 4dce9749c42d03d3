package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestScheduledRequestStart (issue 15, item 1): a start in the past (beyond
// the minute of skew), more than 30 days ahead, or not a time is refused
// with a 4xx naming starts_at, and nothing is recorded; a start within the
// skew is now; a start ahead makes a scheduled request whose deadline is
// start + duration.
func TestScheduledRequestStart(t *testing.T) {
	e := newEnv(t)
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	now := time.Now().UTC()
	bad := []struct {
		name, start string
		status      int
		says        string
	}{
		{"in the past", now.Add(-2 * time.Minute).Format(time.RFC3339), http.StatusUnprocessableEntity, "start is in the past"},
		{"beyond 30 days", now.Add(31 * 24 * time.Hour).Format(time.RFC3339), http.StatusUnprocessableEntity, "too far ahead"},
		{"not a time", "tomorrow", http.StatusBadRequest, `parsing time "tomorrow"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"target":"web-01","ports":["22"],"source":"127.0.0.1","duration":"1h","reason":"x","starts_at":"` + tc.start + `"}`
			status, out := e.raw(t, http.MethodPost, "/api/v1/requests", e.admin, "application/json", strings.NewReader(body))
			var msg wire.Error
			if err := json.Unmarshal(out, &msg); err != nil || status != tc.status || !strings.Contains(msg.Error, tc.says) {
				t.Fatalf("starts_at %q: %d %s; want %d saying %q", tc.start, status, out, tc.status, tc.says)
			}
			if tc.status == http.StatusUnprocessableEntity && !strings.HasPrefix(msg.Error, "starts_at: ") {
				t.Errorf("the refusal does not name the field: %q", msg.Error)
			}
			if rs, err := e.st.ListRequests(context.Background(), store.RequestFilter{}); err != nil || len(rs) != 0 {
				t.Fatalf("a refused start recorded %d requests (%v)", len(rs), err)
			}
		})
	}
	skewed := now.Add(-30 * time.Second)
	r, err := e.c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
		Duration: wire.Duration(time.Hour), Reason: "x", StartsAt: &skewed})
	if err != nil || r.State != "pending" || r.StartsAt != nil {
		t.Fatalf("a start 30 s ago: %v, %s, starts %v; want pending now, no start", err, r.State, r.StartsAt)
	}
	later := now.Add(time.Hour).Truncate(time.Millisecond)
	r, err = e.c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.2",
		Duration: wire.Duration(time.Hour), Reason: "x", StartsAt: &later})
	if err != nil || r.State != "scheduled" || r.StartsAt == nil || !r.StartsAt.Equal(later) || !r.ExpiresAt.Equal(later.Add(time.Hour)) {
		t.Fatalf("a start in an hour: %v, %+v; want scheduled from %s to %s", err, r, later, later.Add(time.Hour))
	}
}
