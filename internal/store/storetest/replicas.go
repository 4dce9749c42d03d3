package storetest

import (
	"errors"
	"slices"
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

// testFeedSubscribers: every subscriber of the change feed is told of a
// commit (the API's hub, the restore guard, the bookkeeping jobs each
// subscribe), and one that cancelled is told nothing more.
func testFeedSubscribers(t *testing.T, s *store.Store) {
	var a, b []string
	s.Subscribe(func(targets ...string) { a = append(a, targets...) })
	cancel := s.Subscribe(func(targets ...string) { b = append(b, targets...) })
	newTarget(t, s, "web-1", t0)
	cancel()
	mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	if want := []string{"web-1", "web-1"}; !slices.Equal(a, want) {
		t.Errorf("first subscriber told %q, want %q", a, want)
	}
	if want := []string{"web-1"}; !slices.Equal(b, want) {
		t.Errorf("cancelled subscriber told %q, want %q (nothing after it cancelled)", b, want)
	}
}

// testDeviceLogins: device logins in progress are recorded by the hash of
// the CLI's code, bounded per source (the oldest superseded) and in total,
// ended once, and told once to whoever asks.
func testDeviceLogins(t *testing.T, s *store.Store) {
	ctx := t.Context()
	exp := t0.Add(30 * time.Minute)
	begin := func(code, source string, at time.Duration) (string, string, error) {
		return s.BeginDeviceLogin(ctx, code, source, t0.Add(at), exp, 2, 3)
	}
	id1, sup, err := begin("code-1", "198.51.100.7", 0)
	if err != nil || sup != "" || id1 == "" || id1 == "code-1" {
		t.Fatalf("first login: id %q superseded %q, %v; want an id that is not the code, nothing superseded", id1, sup, err)
	}
	if _, sup, err = begin("code-2", "198.51.100.7", time.Second); err != nil || sup != "" {
		t.Fatalf("second login: superseded %q, %v", sup, err)
	}
	if _, sup, err = begin("code-3", "198.51.100.7", 2*time.Second); err != nil || sup != id1 {
		t.Fatalf("third login from the same source: superseded %q, %v; want the oldest (%q)", sup, err, id1)
	}
	if _, _, err = begin("code-4", "203.0.113.9", 3*time.Second); err != nil {
		t.Fatalf("another source: %v", err)
	}
	if _, _, err = begin("code-5", "203.0.113.10", 3*time.Second); !errors.Is(err, store.ErrTooManyLogins) {
		t.Fatalf("beyond the total: %v, want ErrTooManyLogins", err)
	}
	if ok, err := s.EndDeviceLogin(ctx, id1, store.DeviceLoginSucceeded, `{"Username":"carol"}`, ""); err != nil || ok {
		t.Errorf("ending a superseded login: %v, %v; want not recorded", ok, err)
	}
	d, err := s.TakeDeviceLogin(ctx, "code-2", t0.Add(time.Minute))
	if err != nil || d.State != store.DeviceLoginPending || d.Source != "198.51.100.7" {
		t.Fatalf("pending login: %+v, %v", d, err)
	}
	id2 := d.ID
	if ok, err := s.EndDeviceLogin(ctx, id2, store.DeviceLoginSucceeded, `{"Username":"carol"}`, ""); err != nil || !ok {
		t.Fatalf("ending a pending login: %v, %v", ok, err)
	}
	if ok, _ := s.EndDeviceLogin(ctx, id2, store.DeviceLoginFailed, "", "late"); ok {
		t.Error("a login was ended twice")
	}
	if d, err := s.TakeDeviceLogin(ctx, "code-2", t0.Add(time.Minute)); err != nil || d.State != store.DeviceLoginSucceeded || d.Identity != `{"Username":"carol"}` {
		t.Errorf("ended login: %+v, %v", d, err)
	}
	if _, err := s.TakeDeviceLogin(ctx, "code-2", t0.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a login told twice: %v, want ErrNotFound", err)
	}
	if d, err := s.TakeDeviceLogin(ctx, "code-1", t0.Add(time.Minute)); err != nil || d.State != store.DeviceLoginSuperseded {
		t.Errorf("superseded login: %+v, %v", d, err)
	}
	// Nobody recorded an end (the replica waiting died): expired after its time.
	if d, err := s.TakeDeviceLogin(ctx, "code-3", exp.Add(time.Second)); err != nil || d.State != store.DeviceLoginExpired {
		t.Errorf("a pending login past its expiry: %+v, %v; want expired", d, err)
	}
	if _, err := s.TakeDeviceLogin(ctx, "code-1", t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown code: %v, want ErrNotFound", err)
	}
}
