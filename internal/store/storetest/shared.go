package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// RunShared runs the cases of a store that several replicas share (on
// PostgreSQL): open returns two handles on one new, empty database, as two
// server processes would hold, and cut drops every change-feed connection
// of the database (the database restarting, a network cut).
func RunShared(t *testing.T, open func(t *testing.T) (a, b *store.Store), cut func(t *testing.T)) {
	t.Run("FeedAcrossReplicas", func(t *testing.T) { testFeedAcrossReplicas(t, open) })
	t.Run("FeedReconnectWakesAll", func(t *testing.T) { testFeedReconnect(t, open, cut) })
}

// heard collects what a handle's feed told, and waits for it.
type heard struct {
	mu   sync.Mutex
	seen []string
}

func listen(s *store.Store) *heard {
	h := &heard{}
	s.Subscribe(func(targets ...string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.seen = append(h.seen, targets...)
	})
	return h
}

func (h *heard) count(target string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.seen {
		if s == target {
			n++
		}
	}
	return n
}

// waitFor waits until the handle heard target n times (or more).
func (h *heard) waitFor(t *testing.T, target string, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.count(target) < n {
		if time.Now().After(deadline) {
			h.mu.Lock()
			t.Fatalf("%s: heard %q, want %q %d times", what, h.seen, target, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testFeedAcrossReplicas: a commit through one handle is told to the
// subscribers of the other, once, with the targets whose waiters must wake
// (a gateway's, too); a handle hears its own commits once, not twice.
func testFeedAcrossReplicas(t *testing.T, open func(t *testing.T) (a, b *store.Store)) {
	a, b := open(t)
	ha, hb := listen(a), listen(b)
	newTarget(t, a, "web-1", t0)
	hb.waitFor(t, "web-1", 1, "b after a created and set a policy on web-1")
	r := mustRequest(t, a, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	hb.waitFor(t, "web-1", 2, "b after a request through a")
	if _, err := b.RevokeRequest(t.Context(), alice, r.ID, "", t0); err != nil {
		t.Fatal(err)
	}
	ha.waitFor(t, "web-1", 3, "a after a revocation through b")
	// A marker written last through b: once a hears it, a has heard every
	// notification before it (one connection delivers in commit order).
	newTarget(t, b, "marker", t0)
	ha.waitFor(t, "marker", 1, "a after b created marker")
	if n := ha.count("web-1"); n != 3 {
		t.Errorf("a heard web-1 %d times; want 3 (its two commits once each, b's revocation once)", n)
	}
	if l, _ := a.FeedListening(); !l {
		t.Error("a's feed is not listening")
	}
}

// testFeedReconnect: after its listening connection is cut, a handle
// reconnects and wakes every target once, since notifications sent while
// it was away are lost.
func testFeedReconnect(t *testing.T, open func(t *testing.T) (a, b *store.Store), cut func(t *testing.T)) {
	a, b := open(t)
	hb := listen(b)
	newTarget(t, a, "web-1", t0)
	// Once b heard the marker, written last, it heard everything before.
	newTarget(t, a, "marker", t0)
	hb.waitFor(t, "marker", 1, "b after a created marker")
	_, before := b.FeedListening()
	before0 := hb.count("web-1")
	cut(t)
	hb.waitFor(t, "web-1", before0+1, "b after its feed's connection was cut, with no commit")
	if _, after := b.FeedListening(); after <= before {
		t.Errorf("b's feed connected %d times after the cut, %d before; want a reconnection", after, before)
	}
	// And it hears commits again.
	mustRequest(t, a, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	hb.waitFor(t, "web-1", before0+2, "b after a request through a, after the reconnection")
}
