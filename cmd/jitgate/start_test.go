package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestParseStart: the forms --start accepts, at a fixed now in a zone with
// an offset.
func TestParseStart(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 21, 30, 0, 0, berlin)
	tests := []struct {
		in   string
		want time.Time
		err  string
	}{
		{"+30m", now.Add(30 * time.Minute), ""},
		{"1h", now.Add(time.Hour), ""},
		{"22:00", time.Date(2026, 12, 7, 22, 0, 0, 0, berlin), ""},
		{"21:00", time.Date(2026, 12, 8, 21, 0, 0, 0, berlin), ""}, // passed today: tomorrow
		{"22:00:30", time.Date(2026, 12, 7, 22, 0, 30, 0, berlin), ""},
		{"2026-12-24 22:00", time.Date(2026, 12, 24, 22, 0, 0, 0, berlin), ""},
		{"2026-12-24T22:00", time.Date(2026, 12, 24, 22, 0, 0, 0, berlin), ""},
		{"2026-12-24T22:00:00Z", time.Date(2026, 12, 24, 22, 0, 0, 0, time.UTC), ""},
		{"-5m", time.Time{}, "in the past"},
		{"tonight", time.Time{}, "is not a start"},
		{"25:00", time.Time{}, "is not a start"},
		{"", time.Time{}, "is not a start"},
	}
	for _, tt := range tests {
		got, err := parseStart(tt.in, now)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseStart(%q) = %v, %v; want an error saying %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseStart(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// TestRequestStart: jitgate request --start makes a scheduled request and
// says when it opens; a start it cannot read is a usage error, and one the
// server refuses (in the past, beyond 30 days) is one error line, exit 1.
func TestRequestStart(t *testing.T) {
	c, _ := gatedWeb01(t)
	args := func(start string, more ...string) []string {
		return append([]string{"request", "web-01", "--port", "22", "--duration", "1h", "--source", "198.51.100.7", "--reason", "x", "--start", start}, more...)
	}
	r := c.ok(args("+2h")...)
	if !strings.Contains(r.stdout, "scheduled: opens at") {
		t.Errorf("a scheduled request's output does not say when it opens:\n%s", r.stdout)
	}
	req := decode[wire.Request](t, c.ok(args("+3h", "-o", "json")...).stdout)
	if req.State != "scheduled" || req.StartsAt == nil {
		t.Errorf("request --start +3h: %s from %v, want scheduled", req.State, req.StartsAt)
	}
	bad := c.run(args("soonish")...)
	if bad.code != exitUsage {
		t.Errorf("--start soonish: exit %d, want %d", bad.code, exitUsage)
	}
	checkErrorLine(t, bad, 2, "--start", "is not a start")
	checkOneLineError(t, c.run(args("2020-01-01 10:00")...), "starts_at", "start is in the past")
	checkOneLineError(t, c.run(args("+800h")...), "starts_at", "too far ahead")
}
