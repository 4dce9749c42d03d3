package alert_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/alert"
)

func TestBruteForce(t *testing.T) {
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name                string
		attempts, threshold int
		last                time.Time
		want                bool
	}{
		{"below the threshold", 19, 20, time.Time{}, false},
		{"at the threshold", 20, 20, time.Time{}, true},
		{"above, never alerted", 500, 20, time.Time{}, true},
		{"threshold 0: never", 500, 0, time.Time{}, false},
		{"negative threshold: never", 500, -1, time.Time{}, false},
		{"alerted within the window", 40, 20, now.Add(-59 * time.Minute), false},
		{"alerted a window ago", 40, 20, now.Add(-time.Hour), true},
		{"alerted long ago", 40, 20, now.Add(-25 * time.Hour), true},
	}
	for _, tt := range tests {
		if got := alert.BruteForce(tt.attempts, tt.threshold, tt.last, now); got != tt.want {
			t.Errorf("%s: BruteForce(%d, %d, %v) = %v, want %v", tt.name, tt.attempts, tt.threshold, tt.last, got, tt.want)
		}
	}
}
