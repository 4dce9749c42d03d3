package web

import (
	"testing"
	"time"
)

// TestAgo: the dashboard's "Last access" words (go-humanize), from a fixed now.
func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   any
		want string
	}{
		{nil, "never"},
		{time.Time{}, "never"},
		{now.Add(-20 * time.Second), "just now"},
		{now.Add(-5 * time.Minute), "5 minutes ago"},
		{now.Add(-3 * time.Hour), "3 hours ago"},
		{now.Add(-50 * time.Hour), "2 days ago"},
		{ptr(now.Add(-2 * time.Minute)), "2 minutes ago"},
	} {
		if got := agoAt(tc.in, now); got != tc.want {
			t.Errorf("agoAt(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
