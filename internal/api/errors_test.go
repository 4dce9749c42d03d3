package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// TestClassifyResourceErrors: a full disk is a 503 that names the cause, a
// cap on live requests a 429 that names the cap.
func TestClassifyResourceErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantBody   string
	}{
		{"disk full", fmt.Errorf("creating target web-01: %w (%w)", store.ErrStorageFull, errors.New("database or disk is full (13)")),
			http.StatusServiceUnavailable, "database write failed: disk full"},
		{"live requests per requester", fmt.Errorf("wrapped: %w", &policy.LimitError{Limit: policy.LimitLivePerRequester, Max: 256, Requester: "alice", Target: "web-01"}),
			http.StatusTooManyRequests, "too many live requests: alice already holds the maximum of 256 live (pending or active) requests on target web-01 (limit max-live-requests-per-requester); revoke some or wait for them to end"},
		{"live requests per target", &policy.LimitError{Limit: policy.LimitLivePerTarget, Max: 100000, Requester: "alice", Target: "web-01"},
			http.StatusTooManyRequests, "too many live requests: target web-01 already holds the maximum of 100000 live (pending or active) requests (limit max-live-requests-per-target)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := classify(tt.err)
			if status != tt.wantStatus || body.Error != tt.wantBody {
				t.Errorf("classify = %d %q, want %d %q", status, body.Error, tt.wantStatus, tt.wantBody)
			}
		})
	}
}
