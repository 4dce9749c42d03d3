package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestReportPollCredentialGoneWithoutChange attacks the report that carries
// its poll and waits without reading the target (the hub's count of the
// target's notifications says nothing changed since the report's update):
// the agent's credential is replaced (the target enrolled again), or its
// target removed, while that poll waits, and nothing else changes the
// target's desired state, so the wait may end at its deadline rather than
// at a notification. The answer must still be 401 (410 for the removed
// target) and carry no state: the credential is read with the target after
// every wait (AgentTarget), whichever way the wait ended.
func TestReportPollCredentialGoneWithoutChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone func(t *testing.T, e *env)
		want int
	}{
		{"enrolled again", func(t *testing.T, e *env) {
			ctx := context.Background()
			tc, err := e.c.ReissueEnrollToken(ctx, "web-01")
			if err != nil {
				t.Fatal(err)
			}
			anon, _ := client.New(e.srv.URL, "")
			if _, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"}); err != nil {
				t.Fatal(err)
			}
		}, http.StatusUnauthorized},
		{"target removed", func(t *testing.T, e *env) {
			if err := e.c.RemoveTarget(context.Background(), "web-01"); err != nil {
				t.Fatal(err)
			}
		}, http.StatusGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, old, first, ds := grantedWeb01(t)
			call := reportPollAsync(old, ds.Revision, 2*time.Second)
			requestState(t, e, first.ID, "active") // the report is recorded; its poll follows
			tc.gone(t, e)
			if r := <-call; client.StatusOf(r.err) != tc.want {
				t.Errorf("the report with a poll of a credential that went during its wait: %+v, %v, %v; want %d and no state",
					r.ds, r.answered, r.err, tc.want)
			}
		})
	}
}
