package api

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at       time.Duration // after t0
		key      string
		fail     bool          // record a failure (after checking)
		wantWait time.Duration // what Wait says before the step's failure
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "five failures pass, the sixth attempt waits", steps: []step{
			{at: 0, key: "a", fail: true},
			{at: 1 * time.Second, key: "a", fail: true},
			{at: 2 * time.Second, key: "a", fail: true},
			{at: 3 * time.Second, key: "a", fail: true},
			{at: 4 * time.Second, key: "a", fail: true},
			{at: 5 * time.Second, key: "a", wantWait: 7 * time.Second}, // 5 s of 12 s regained
		}},
		{name: "a token comes back every 12 s", steps: []step{
			{at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true},
			{at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true},
			{at: 12 * time.Second, key: "a", fail: true},
			{at: 12 * time.Second, key: "a", wantWait: 12 * time.Second},
			{at: 24 * time.Second, key: "a"},
		}},
		{name: "sources are counted apart", steps: []step{
			{at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true},
			{at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true},
			{at: 0, key: "b"},
			{at: 0, key: "a", wantWait: 12 * time.Second},
		}},
		{name: "a full minute restores the whole burst", steps: []step{
			{at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true},
			{at: 0, key: "a", fail: true}, {at: 0, key: "a", fail: true},
			{at: time.Hour, key: "a", fail: true}, {at: time.Hour, key: "a", fail: true}, {at: time.Hour, key: "a", fail: true},
			{at: time.Hour, key: "a", fail: true}, {at: time.Hour, key: "a", fail: true},
			{at: time.Hour, key: "a", wantWait: 12 * time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newFailureLimiter(5, 12*time.Second)
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if got := l.Wait(s.key, now); got != s.wantWait {
					t.Fatalf("step %d: Wait(%s) = %s, want %s", i, s.key, got, s.wantWait)
				}
				if s.fail {
					l.Fail(s.key, now)
				}
			}
		})
	}
}

func TestFailureLimiterBoundsMemory(t *testing.T) {
	l := newFailureLimiter(5, 12*time.Second)
	l.maxKeys = 3
	t0 := time.Now()
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		l.Fail(k, t0.Add(time.Duration(i)*time.Second))
	}
	if len(l.buckets) > 3 {
		t.Fatalf("%d buckets, want at most 3", len(l.buckets))
	}
}

// TestFailureLimiterPrunesInBatches: under a flood of new sources that all
// stay limited, a full table makes room for a tenth of its size at once,
// so that the next new sources do not each scan the whole table again.
func TestFailureLimiterPrunesInBatches(t *testing.T) {
	l := newFailureLimiter(5, 12*time.Second)
	l.maxKeys = 1000
	t0 := time.Now()
	for i := range l.maxKeys + 1 {
		l.Fail(fmt.Sprintf("k%d", i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.buckets); n > l.maxKeys*9/10+1 {
		t.Fatalf("%d buckets after the table filled, want at most %d: every next new source would prune again", n, l.maxKeys*9/10+1)
	}
	// The sources dropped are the oldest; the newest is kept.
	if _, ok := l.buckets["k0"]; ok {
		t.Errorf("the oldest source was kept")
	}
	if _, ok := l.buckets[fmt.Sprintf("k%d", l.maxKeys)]; !ok {
		t.Errorf("the newest source was dropped")
	}
}

// TestFailureLimiterCountsRefusals: failures over the limit are not
// recorded (they take no token) but counted, and the next recorded failure
// carries the count.
func TestFailureLimiterCountsRefusals(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newFailureLimiter(5, 12*time.Second)
	for i := range 5 {
		if wait, refused := l.Fail("a", t0); wait != 0 || refused != 0 {
			t.Fatalf("failure %d: wait %s, refused %d; want recorded", i+1, wait, refused)
		}
	}
	for i := range 100 {
		if wait, _ := l.Fail("a", t0.Add(time.Duration(i)*100*time.Millisecond)); wait <= 0 {
			t.Fatalf("failure %d over the limit: wait %s, want > 0", i+6, wait)
		}
	}
	// 100 refusals took no token: a token is back 12 s after the burst.
	if wait, refused := l.Fail("a", t0.Add(12*time.Second)); wait != 0 || refused != 100 {
		t.Fatalf("failure after 12 s: wait %s, refused %d; want recorded with 100 refused before it", wait, refused)
	}
	if wait, refused := l.Fail("b", t0); wait != 0 || refused != 0 {
		t.Fatalf("another source: wait %s, refused %d; want recorded", wait, refused)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
	} {
		if got := sourceKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("sourceKey(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSafeReturn(t *testing.T) {
	for in, want := range map[string]string{
		"":                      defaultReturn,
		"/api/v1/requests?x=1":  "/api/v1/requests?x=1",
		"//evil.example/":       defaultReturn,
		"/\\evil.example":       defaultReturn,
		"https://evil.example/": defaultReturn,
		"javascript:alert(1)":   defaultReturn,
		"api/v1/whoami":         defaultReturn,
	} {
		if got := safeReturn(in); got != want {
			t.Errorf("safeReturn(%q) = %q, want %q", in, got, want)
		}
	}
}
