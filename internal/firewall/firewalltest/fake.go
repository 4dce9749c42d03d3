// Package firewalltest holds what tests of firewall backends and their users
// share: Fake, an in-memory backend with the nft backend's semantics, and
// Run, the conformance suite every backend must pass. Running the same suite
// against Fake and against nftables is what keeps the fake from drifting.
package firewalltest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Tolerance is how far a held deadline may drift from the desired one before
// Apply rewrites it; the same as the nft backend's.
const Tolerance = 50 * time.Millisecond

var errClosed = errors.New("fake backend is closed")

// Fake is an in-memory firewall.Backend that behaves like the nft backend:
// the gate is installed by the first Apply (Changed even when empty), Apply
// sends nothing and reports Changed=false when the state is already held,
// deadlines are kept at millisecond resolution, an element whose deadline is
// off by more than Tolerance is replaced, and elements expire on their own
// by the now passed in (as the kernel's do by its clock). A failed Apply
// changes nothing.
//
// A Fake is safe for concurrent use. Its zero value is an empty gate.
type Fake struct {
	mu        sync.Mutex
	installed bool
	protected map[firewall.PortKey]bool
	elements  map[firewall.ElementKey]time.Time // absolute deadlines
	batches   int
	failNext  error
	closed    bool
}

var _ firewall.Backend = (*Fake)(nil)

// NewFake returns an empty gate.
func NewFake() *Fake { return &Fake{} }

// Batches returns how many Apply calls changed something, that is how many
// batches a real backend would have sent.
func (f *Fake) Batches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.batches
}

// FailNext makes the next Apply fail with err without changing anything, as
// a kernel refusing a batch would.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// Apply implements firewall.Backend with the nft backend's diff semantics.
func (f *Fake) Apply(ctx context.Context, rs firewall.Ruleset, now time.Time) (firewall.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usable(ctx); err != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to fake: %w", err)
	}
	f.expire(now)
	if err := f.failNext; err != nil {
		f.failNext = nil
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to fake: %w", err)
	}

	res := firewall.ApplyResult{Changed: !f.installed}
	protected := map[firewall.PortKey]bool{}
	for _, k := range rs.SortedProtected() {
		protected[k] = true
		if !f.protected[k] {
			res.ProtectedAdded++
		}
	}
	for k := range f.protected {
		if !protected[k] {
			res.ProtectedRemoved++
		}
	}
	elements := map[firewall.ElementKey]time.Time{}
	for _, e := range rs.Elements(now) {
		timeout := e.Expires.Sub(now).Truncate(time.Millisecond)
		if timeout < time.Millisecond || !valid(e.Key()) {
			continue
		}
		want := now.Add(timeout)
		held, ok := f.elements[e.Key()]
		switch {
		case !ok:
			res.Added++
		case held.Sub(want).Abs() > Tolerance:
			res.Added++
			res.Removed++
		default:
			want = held // within tolerance: a real backend leaves it alone
		}
		elements[e.Key()] = want
	}
	for k := range f.elements {
		if _, ok := elements[k]; !ok {
			res.Removed++
		}
	}
	res.Changed = res.Changed || res.Added+res.Removed+res.ProtectedAdded+res.ProtectedRemoved > 0
	if !res.Changed {
		return res, nil
	}
	f.installed, f.protected, f.elements = true, protected, elements
	f.batches++
	return res, nil
}

// State implements firewall.Backend: the elements still live at now.
func (f *Fake) State(ctx context.Context, now time.Time) (firewall.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usable(ctx); err != nil {
		return firewall.State{}, fmt.Errorf("reading fake: %w", err)
	}
	f.expire(now)
	var rs firewall.Ruleset
	for k := range f.protected {
		rs.Protected = append(rs.Protected, k)
	}
	st := firewall.State{Protected: rs.SortedProtected()}
	for k, exp := range f.elements {
		st.Elements = append(st.Elements, firewall.Element{From: k.From, To: k.To, Proto: k.Proto, Port: k.Port, Expires: exp})
	}
	slices.SortFunc(st.Elements, func(a, b firewall.Element) int { return firewall.CompareKeys(a.Key(), b.Key()) })
	return st, nil
}

// Close implements firewall.Backend. Later calls fail; Close is idempotent.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *Fake) usable(ctx context.Context) error {
	if f.closed {
		return errClosed
	}
	return ctx.Err()
}

// expire drops what the kernel would have dropped by now.
func (f *Fake) expire(now time.Time) {
	for k, exp := range f.elements {
		if !now.Before(exp) {
			delete(f.elements, k)
		}
	}
}

// valid mirrors the nft backend: a malformed range is skipped, not written.
func valid(k firewall.ElementKey) bool {
	return k.From.IsValid() && k.To.IsValid() && k.From.Is4() == k.To.Is4() && !k.To.Less(k.From)
}
