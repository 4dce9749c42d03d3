package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestGatherUntil: the writer holds a batch back for more writes only
// under load (the last gatherSiblings writes within gatherWithin) from
// callers that do not wait for each other (gatherConcurrent of them queued
// while another was pending), and only until its oldest write has waited
// gatherDelay; idle, with one person's grants (a few writes, each after
// the one before, then a pause), with one fast caller writing one thing
// after the other, or behind a backlog, it begins at once. Before
// gathering existed the writer never waited: every "gathers" row fails
// there.
func TestGatherUntil(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	// every returns n arrivals gap apart, the last at t0, the last
	// concurrent of them concurrent.
	every := func(n int, gap time.Duration, concurrent int) []arrival {
		var ws []arrival
		for i := n - 1; i >= 0; i-- {
			ws = append(ws, arrival{queued: at(-time.Duration(i) * gap), concurrent: i < concurrent})
		}
		return ws
	}
	// grants is TestGrantLatency's pattern: per trial a create, its
	// agent's report, a revoke and its report within 3 ms, then a pause
	// of 10 ms (the shortest of that benchmark's); here even as if each
	// found another pending.
	grants := func(trials int) []arrival {
		var ws []arrival
		for i := range trials {
			base := time.Duration(i-trials+1) * 13 * time.Millisecond
			for _, d := range []time.Duration{-3 * time.Millisecond, -2 * time.Millisecond, -time.Millisecond, 0} {
				ws = append(ws, arrival{queued: at(base + d), concurrent: true})
			}
		}
		return ws
	}
	type tcase struct {
		name     string
		arrivals []arrival
		oldest   time.Time // the batch's first write
		now      time.Time
		gathers  bool
		until    time.Time
	}
	never := time.Time{}
	for _, tc := range []tcase{
		{"first write ever", every(1, 0, 1), t0, t0, false, never},
		{"idle: a write a second", every(20, time.Second, 20), t0, t0, false, never},
		{"a few writes at once, after idle", append(every(10, time.Second, 0), every(5, 10*time.Microsecond, 5)...), t0, t0, false, never},
		{"one person's grants, back to back", grants(20), t0, t0, false, never},
		{"200 writes a second", every(40, 5*time.Millisecond, 40), t0, t0, false, never},
		{"one caller, 2,000 writes a second one after the other", every(40, 500*time.Microsecond, 0), t0, t0, false, never},
		{"1,000 writes a second, 3 of the last 16 concurrent", every(40, time.Millisecond, gatherConcurrent-1), t0, t0, false, never},
		{"1,000 writes a second, 4 of the last 16 concurrent, gathers", every(40, time.Millisecond, gatherConcurrent), t0, t0.Add(50 * time.Microsecond), true, t0.Add(gatherDelay)},
		{"600 writes a second gathers", every(40, 1666*time.Microsecond, 40), t0, t0, true, t0.Add(gatherDelay)},
		{"exactly gatherSiblings within gatherWithin gathers", every(gatherSiblings, gatherWithin/(gatherSiblings-1), gatherSiblings), t0, t0, true, t0.Add(gatherDelay)},
		{"the window counts from the oldest write of the batch", every(40, 100*time.Microsecond, 40), at(-600 * time.Microsecond), t0, true, at(400 * time.Microsecond)},
		{"a backlog goes at once", every(40, 100*time.Microsecond, 40), at(-2 * time.Millisecond), t0, false, never},
		{"oldest waited exactly gatherDelay", every(40, 100*time.Microsecond, 40), at(-gatherDelay), t0, false, never},
		{"load, then a pause longer than the window", append(every(40, 100*time.Microsecond, 40), arrival{queued: at(40 * time.Millisecond)}), at(40 * time.Millisecond), at(40 * time.Millisecond), false, never},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a arrivals
			for _, w := range tc.arrivals {
				a.add(w)
			}
			until, ok := a.gatherUntil(gatherWith(gatherDelay), tc.oldest, tc.now)
			if ok != tc.gathers || ok && !until.Equal(tc.until) {
				t.Errorf("gatherUntil = %v, %v; want %v, %v", until.Sub(t0), ok, tc.until.Sub(t0), tc.gathers)
			}
			if ok && until.Sub(tc.oldest) > gatherDelay {
				t.Errorf("the oldest write would wait %s, more than gatherDelay", until.Sub(tc.oldest))
			}
		})
	}
}

// TestArrivalsRing: the ring keeps the latest maxBatch arrivals in order
// whatever how many it saw.
func TestArrivalsRing(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)
	for _, n := range []int{1, 5, maxBatch - 1, maxBatch, maxBatch + 1, 3*maxBatch + 7} {
		var a arrivals
		for i := range n {
			a.add(arrival{queued: t0.Add(time.Duration(i) * time.Millisecond)})
		}
		for k := 1; k <= maxBatch+1; k++ {
			got, ok := a.nthLatest(k)
			if want := k <= min(n, maxBatch); ok != want {
				t.Fatalf("%d seen: nthLatest(%d) ok %v, want %v", n, k, ok, want)
			}
			if ok && !got.queued.Equal(t0.Add(time.Duration(n-k)*time.Millisecond)) {
				t.Errorf("%d seen: nthLatest(%d) = %s, want the arrival %d", n, k, got.queued.Sub(t0), n-k)
			}
		}
	}
}

// TestGatheringOffByDefault: the writer gathers only when the operator set a
// delay (Config.GatherDelay): on SQLite it raised the latency at 500 and
// 1,000 requests a second and saved no CPU (docs/benchmarks.md §28). The
// arrivals that make the mechanism gather (TestGatherUntil) do not make the
// default gather; a delay set in the configuration is the writer's, and one
// out of range is refused.
func TestGatheringOffByDefault(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var a arrivals
	for i := range 40 {
		a.add(arrival{t0.Add(time.Duration(i-40) * time.Millisecond), true})
	}
	if _, ok := a.gatherUntil(gatherWith(gatherDelay), t0, t0); !ok {
		t.Fatal("the mechanism does not gather 1,000 concurrent writes a second: the case below proves nothing")
	}
	if until, ok := a.gatherUntil(defaultGather, t0, t0); ok {
		t.Errorf("the default gathers (until %s)", until.Sub(t0))
	}
	ctx := context.Background()
	for _, tc := range []struct {
		delay time.Duration
		want  time.Duration
	}{{0, 0}, {2 * time.Millisecond, 2 * time.Millisecond}} {
		cfg := DefaultConfig()
		cfg.GatherDelay = tc.delay
		s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.w.gather.Load().delay; got != tc.want {
			t.Errorf("GatherDelay %s: the writer's delay is %s", tc.delay, got)
		}
		s.Close()
	}
	for _, d := range []time.Duration{-time.Millisecond, MaxGatherDelay + 1} {
		cfg := DefaultConfig()
		cfg.GatherDelay = d
		if err := cfg.Validate(); err == nil {
			t.Errorf("GatherDelay %s accepted", d)
		}
	}
}
