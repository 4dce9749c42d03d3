package client

import (
	"maps"
	"testing"
	"time"
)

// TestParseServerTiming reads Server-Timing as the W3C specification writes
// it: metrics with and without dur, several header lines, quoted
// descriptions holding separators, and malformed parts skipped.
func TestParseServerTiming(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		want   ServerTiming
	}{
		{"the server's", []string{"commit;dur=1.923, wait;dur=23.400"},
			ServerTiming{"commit": 1923 * time.Microsecond, "wait": 23400 * time.Microsecond}},
		{"none", nil, ServerTiming{}},
		{"no dur", []string{"miss, db;dur=2"}, ServerTiming{"miss": 0, "db": 2 * time.Millisecond}},
		{"two lines", []string{"a;dur=1", "b;dur=0.5"}, ServerTiming{"a": time.Millisecond, "b": 500 * time.Microsecond}},
		{"quoted desc", []string{`db;desc="a, b; c";dur=3, x`}, ServerTiming{"db": 3 * time.Millisecond, "x": 0}},
		{"spaces and case", []string{" db ; DUR = 4 "}, ServerTiming{"db": 4 * time.Millisecond}},
		{"first of a name kept", []string{"db;dur=1, db;dur=9"}, ServerTiming{"db": time.Millisecond}},
		{"bad dur ignored", []string{"db;dur=abc, w;dur=-1"}, ServerTiming{"db": 0, "w": 0}},
		{"empty metric skipped", []string{", ;dur=3,db"}, ServerTiming{"db": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseServerTiming(tc.values); !maps.Equal(got, tc.want) {
				t.Errorf("ParseServerTiming(%q) = %v, want %v", tc.values, got, tc.want)
			}
		})
	}
}
