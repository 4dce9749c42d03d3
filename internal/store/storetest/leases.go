package storetest

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// testLeases: a lease is taken by one holder at a time, renewed by its
// holder, taken over by another only once expired, and released only by
// its holder.
func testLeases(t *testing.T, s *store.Store) {
	ctx := t.Context()
	const ttl = 5 * time.Second
	steps := []struct {
		what   string
		holder string
		at     time.Duration // after t0
		held   bool
		want   string // holder afterwards
	}{
		{"a takes a free lease", "a", 0, true, "a"},
		{"b is refused a live lease", "b", time.Second, false, "a"},
		{"a renews", "a", 4 * time.Second, true, "a"},
		{"b is refused: the renewal moved the expiry", "b", 6 * time.Second, false, "a"},
		{"b takes it once expired", "b", 9 * time.Second, true, "b"},
		{"a is refused now", "a", 10 * time.Second, false, "b"},
	}
	for _, st := range steps {
		l, held, err := s.AcquireLease(ctx, "sweeper", st.holder, t0.Add(st.at), ttl)
		if err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		if held != st.held || l.Holder != st.want || l.Name != "sweeper" {
			t.Errorf("%s: held %v by %q, want held %v by %q", st.what, held, l.Holder, st.held, st.want)
		}
	}
	l, _, _ := s.AcquireLease(ctx, "sweeper", "b", t0.Add(11*time.Second), ttl)
	if !l.Acquired.Equal(t0.Add(9*time.Second)) || !l.Expires.Equal(t0.Add(16*time.Second)) {
		t.Errorf("renewed lease acquired %v expires %v; want acquired at the takeover (t0+9s), expiring t0+16s", l.Acquired, l.Expires)
	}
	if err := s.ReleaseLease(ctx, "sweeper", "a"); err != nil {
		t.Fatal(err)
	}
	if ls, err := s.ListLeases(ctx); err != nil || len(ls) != 1 || ls[0].Holder != "b" {
		t.Errorf("a released b's lease: %+v, %v", ls, err)
	}
	if err := s.ReleaseLease(ctx, "sweeper", "b"); err != nil {
		t.Fatal(err)
	}
	if _, held, err := s.AcquireLease(ctx, "sweeper", "a", t0.Add(12*time.Second), ttl); err != nil || !held {
		t.Errorf("a after b released: held %v, %v; want held", held, err)
	}
	if _, _, err := s.AcquireLease(ctx, "sweeper", "", t0, ttl); err == nil {
		t.Error("a lease without holder was accepted")
	}
	// Leases are independent of one another.
	if _, held, err := s.AcquireLease(ctx, "webhooks", "b", t0.Add(12*time.Second), ttl); err != nil || !held {
		t.Errorf("b taking another lease: held %v, %v", held, err)
	}
}

// testSharedKey: the first replica to ask makes the key; every later ask,
// whatever its generator, gets the same one.
func testSharedKey(t *testing.T, s *store.Store) {
	ctx := t.Context()
	k1, err := s.SharedKey(ctx, "login-seal", func() []byte { return []byte("first-key-0123456789abcdef012345") }, t0)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := s.SharedKey(ctx, "login-seal", func() []byte { return []byte("second") }, t0)
	if err != nil {
		t.Fatal(err)
	}
	if string(k1) != "first-key-0123456789abcdef012345" || string(k2) != string(k1) {
		t.Errorf("shared keys %q then %q; want the first both times", k1, k2)
	}
}
