// Package firewalltest holds what tests of firewall backends and their users
// share: Fake, an in-memory backend with the nft backend's semantics, and
// Run, the conformance suite every backend must pass. Running the same suite
// against Fake and against nftables is what keeps the fake from drifting.
package firewalltest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
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
	mu         sync.Mutex
	installed  bool
	mode       firewall.Mode
	protected  map[firewall.PortKey]bool
	cut        []firewall.PortKey
	published  []firewall.Mapping
	sampleRate int
	elements   map[firewall.ElementKey]time.Time // absolute deadlines
	blocked    map[blockedKey]firewall.Blocked
	samples    []firewall.Sample
	batches    int
	failNext   error
	probeErr   error
	closed     bool
}

type blockedKey struct {
	port      firewall.PortKey
	published bool
}

var (
	_ firewall.Backend        = (*Fake)(nil)
	_ firewall.BlockedCounter = (*Fake)(nil)
	_ firewall.Prober         = (*Fake)(nil)
	_ firewall.DeltaApplier   = (*Fake)(nil)
)

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
	if f.probeErr != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to fake: %w", f.probeErr)
	}
	f.expire(now)
	if err := f.failNext; err != nil {
		f.failNext = nil
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to fake: %w", err)
	}
	if err := rs.Validate(); err != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to fake: %w", err)
	}
	cut, published := rs.SortedCloseEstablished(), rs.SortedPublished()
	rate := rs.SampleRate
	if rate == 0 {
		rate = firewall.DefaultSampleRate
	}

	res := firewall.ApplyResult{Changed: !f.installed || f.mode != rs.Mode || rate != f.sampleRate ||
		!slices.Equal(cut, f.cut) || !slices.Equal(published, f.published)}
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
	res.Elements = len(elements)
	if !res.Changed {
		return res, nil
	}
	f.installed, f.protected, f.elements = true, protected, elements
	f.mode, f.cut, f.published, f.sampleRate = rs.Mode, cut, published, rate
	for k := range f.blocked {
		if k.published && !slices.ContainsFunc(published, func(m firewall.Mapping) bool { return m.PublicKey() == k.port }) ||
			!k.published && !protected[k.port] {
			delete(f.blocked, k) // the kernel element and its counter are gone
		}
	}
	f.batches++
	return res, nil
}

// ApplyDelta implements firewall.DeltaApplier as the nft backend does: it
// refuses to delete an element it does not hold or to add one that overlaps
// another (the kernel's ENOENT and EEXIST), changing nothing then.
func (f *Fake) ApplyDelta(ctx context.Context, d firewall.Delta, now time.Time) (firewall.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usable(ctx); err != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying delta to fake: %w", err)
	}
	if !f.installed {
		return firewall.ApplyResult{}, firewall.ErrNeedFullApply
	}
	f.expire(now)
	if err := f.failNext; err != nil {
		f.failNext = nil
		return firewall.ApplyResult{}, fmt.Errorf("applying delta to fake: %w", err)
	}
	elements := maps.Clone(f.elements)
	for _, e := range d.Del {
		if !valid(e.Key()) {
			continue
		}
		if _, ok := elements[e.Key()]; !ok {
			return firewall.ApplyResult{}, fmt.Errorf("applying delta to fake: deleting %v: no such element", e)
		}
		delete(elements, e.Key())
	}
	for _, e := range d.Add {
		timeout := e.Expires.Sub(now).Truncate(time.Millisecond)
		if timeout < time.Millisecond || !valid(e.Key()) {
			continue
		}
		for k := range elements {
			if k.PortKey() == e.PortKey() && k.From.BitLen() == e.From.BitLen() && k != e.Key() && k.From.Compare(e.To) <= 0 && e.From.Compare(k.To) <= 0 {
				return firewall.ApplyResult{}, fmt.Errorf("applying delta to fake: adding %v: overlaps %v", e, k)
			}
		}
		elements[e.Key()] = now.Add(timeout)
	}
	f.elements = elements
	f.batches++
	return firewall.ApplyResult{Changed: true, Added: len(d.Add), Removed: len(d.Del), Elements: len(elements)}, nil
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
	st := firewall.State{Mode: f.mode, Protected: rs.SortedProtected(), CloseEstablished: slices.Clone(f.cut), Published: slices.Clone(f.published)}
	for k, exp := range f.elements {
		st.Elements = append(st.Elements, firewall.Element{From: k.From, To: k.To, Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: exp})
	}
	slices.SortFunc(st.Elements, func(a, b firewall.Element) int { return firewall.CompareKeys(a.Key(), b.Key()) })
	for _, m := range f.published {
		for _, e := range st.Elements {
			if e.PortKey() == m.Target && e.From.Is4() == m.Public.Is4() {
				st.Translations = append(st.Translations, firewall.Translation{From: e.From, To: e.To, Mapping: m, Expires: e.Expires})
			}
		}
	}
	firewall.SortTranslations(st.Translations)
	return st, nil
}

// Blocked implements firewall.BlockedCounter: one counter per protected
// port and published endpoint, as the nft backend reports them.
func (f *Fake) Blocked(ctx context.Context) ([]firewall.Blocked, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usable(ctx); err != nil {
		return nil, fmt.Errorf("reading fake counters: %w", err)
	}
	var out []firewall.Blocked
	for k := range f.protected {
		b := f.blocked[blockedKey{port: k}]
		b.Port = k
		out = append(out, b)
	}
	for _, m := range f.published {
		b := f.blocked[blockedKey{port: m.PublicKey(), published: true}]
		b.Port, b.Published = m.PublicKey(), true
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b firewall.Blocked) int {
		if a.Published != b.Published {
			if a.Published {
				return 1
			}
			return -1
		}
		return firewall.ComparePorts(a.Port, b.Port)
	})
	return out, nil
}

// Block records blocked attempts from src on port k (a protected port, or
// with published a mapping's public endpoint), as if packets had hit the
// gate: conns new connections among packets, each sampled. Attempts on
// anything else pass the gate and are not counted.
func (f *Fake) Block(src netip.Addr, k firewall.PortKey, published bool, packets, conns uint64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if published && !slices.ContainsFunc(f.published, func(m firewall.Mapping) bool { return m.PublicKey() == k }) ||
		!published && !f.protected[k] {
		return
	}
	if f.blocked == nil {
		f.blocked = map[blockedKey]firewall.Blocked{}
	}
	bk := blockedKey{port: k, published: published}
	b := f.blocked[bk]
	b.Packets += packets
	b.Connections += conns
	f.blocked[bk] = b
	for range conns {
		f.samples = append(f.samples, firewall.Sample{Source: src, Dest: k.Dest, Proto: k.Proto, Port: k.Port, At: at})
	}
}

// Samples drains the sampled attempts recorded by Block.
func (f *Fake) Samples() []firewall.Sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.samples
	f.samples = nil
	return out
}

// Probe implements firewall.Prober: it fails with the error set by
// SetProbeError, as a kernel without nftables or a process without
// privilege would.
func (f *Fake) Probe(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usable(ctx); err != nil {
		return err
	}
	return f.probeErr
}

// SetProbeError makes Probe, and every Apply, fail with err (nil clears it).
func (f *Fake) SetProbeError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probeErr = err
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
	return k.From.IsValid() && k.To.IsValid() && k.From.Is4() == k.To.Is4() && !k.To.Less(k.From) &&
		(!k.Dest.IsValid() || k.Dest.Is4() == k.From.Is4())
}
