package nft

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/jitgate/jitgate/internal/firewall"
)

// forever stands for "no timeout" in deadlines read back: an element someone
// added without a timeout never expires.
const forever = 100 * 365 * 24 * time.Hour

// clock maps the real instant of a kernel operation to the caller's time
// line: the now a call was given plus the time elapsed since (see newClock).
// The kernel counts element timeouts on its own clock from the moment it
// processes them, so reading or writing a large set some milliseconds after
// the call began must be accounted for: without it every deadline would be
// late by the duration of the call, and a large Apply would drift past
// Tolerance and rewrite all its elements on the next call.
type clock struct {
	now   time.Time
	start time.Time // monotonic
}

// newClock starts the time line of a call given now. A now that carries
// Go's monotonic reading (time.Now(), as the agent passes)
// is placed by it: the time line starts when the caller read its clock, not
// when the call began. The agent reads its clock before building the
// ruleset, which takes seconds at a million grants; counted from the call,
// every timeout would outlast its deadline by that long. A now without one
// (a time read back, or a test's) starts at the call.
func newClock(now time.Time) clock {
	if now != now.Round(0) { // Round(0) strips the monotonic reading
		return clock{now: now, start: now}
	}
	return clock{now: now, start: time.Now()}
}

func (c clock) at() time.Time { return c.now.Add(time.Since(c.start)) }

// kernelState is what the kernel holds in our table.
type kernelState struct {
	tableExists bool
	// mode is the mode of the table's layout (by its chains), or the
	// desired one when the table has neither chain.
	mode firewall.Mode
	// layoutOK: the table holds exactly the desired layout's chains and
	// sets, with the right types and flags. If not, Apply rebuilds it.
	layoutOK bool
	// rulesOK: every chain holds exactly the desired tagged rules, in order.
	rulesOK bool
	// rate is the sampling rate the rules were built with, when known
	// without reading them (a cached state); 0 otherwise.
	rate int
	// counters are the rule counters, by chain and tag, carried over when
	// chains are refilled or the table rebuilt.
	counters map[string]expr.Counter
	// sets are the elements of the sets of the table's layout, by name.
	sets map[string]*setElems
}

func tableExists(c *nftables.Conn) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("listing inet tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == tableName {
			return true, nil
		}
	}
	return false, nil
}

// readKernel reads our table against the layout want. The table's own mode
// decides how its sets are read, so that a table of the other mode is read
// completely (State reports it, and ApplyResult counts what disappears).
// Elements of sets with the right type are read even when the rest of the
// layout is wrong.
func readKernel(c *nftables.Conn, want layout, clk clock) (kernelState, error) {
	return readKernelSets(c, want, clk, nil)
}

// readKernelSets is readKernel reading the elements of the sets only
// accepts (all when nil): the counters need the port sets, not the grant
// sets that hold every grant.
func readKernelSets(c *nftables.Conn, want layout, clk clock, only func(setSpec) bool) (kernelState, error) {
	ks := kernelState{mode: want.mode, counters: map[string]expr.Counter{}, sets: map[string]*setElems{}}
	var err error
	if ks.tableExists, err = tableExists(c); err != nil || !ks.tableExists {
		return ks, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return ks, fmt.Errorf("listing inet chains: %w", err)
	}
	chains = slices.DeleteFunc(chains, func(ch *nftables.Chain) bool { return ch.Table == nil || ch.Table.Name != tableName })
	has := func(name string) bool {
		return slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Name == name })
	}
	switch {
	case has(forwardChain):
		ks.mode = firewall.GatewayMode
	case has(inputChain):
		ks.mode = firewall.HostMode
	}
	read := want
	if ks.mode != want.mode {
		read = newLayout(ks.mode, 0)
	}

	chainsOK := ks.mode == want.mode && len(chains) == len(want.chains)
	ks.rulesOK = chainsOK
	for _, spec := range read.chains {
		i := slices.IndexFunc(chains, func(ch *nftables.Chain) bool { return ch.Name == spec.name })
		if i < 0 {
			chainsOK, ks.rulesOK = false, false
			continue
		}
		chainsOK = chainsOK && sameChain(chains[i], read.nftChain(spec))
		rules, err := c.GetRules(read.table, read.nftChain(spec))
		if err != nil {
			return ks, fmt.Errorf("listing rules of chain %s: %w", spec.name, err)
		}
		ks.rulesOK = ks.rulesOK && rulesAreOurs(rules, spec)
		ruleCounters(spec.name, rules, ks.counters)
	}

	sets, err := c.GetSets(read.table)
	if err != nil {
		return ks, fmt.Errorf("listing sets of table inet %s: %w", tableName, err)
	}
	setsOK := len(sets) == len(read.specs)
	for _, s := range sets {
		spec, ours := read.specByName(s.Name)
		if !ours || !sameSet(s, spec) {
			setsOK = false
			continue
		}
		if only != nil && !only(spec) {
			continue
		}
		held, counted, err := readElements(c, s, spec, clk)
		if err != nil {
			return ks, err
		}
		ks.sets[s.Name] = held
		setsOK = setsOK && counted
	}
	ks.layoutOK = chainsOK && setsOK
	return ks, nil
}

// readElements reads a set's elements; counted is false when the set should
// count but its elements carry no counters (someone made it without).
func readElements(c *nftables.Conn, s *nftables.Set, spec setSpec, clk clock) (*setElems, bool, error) {
	before := clk.at()
	els, err := listStable(c, s, spec)
	if err != nil {
		return nil, false, err
	}
	after := clk.at()
	out, counted := newSetElems(spec), true
	out.order = nil
	for _, e := range els {
		if e.IntervalEnd {
			continue // not produced by concatenated interval sets; be safe
		}
		keyEnd := e.KeyEnd
		if spec.interval() && len(keyEnd) == 0 {
			keyEnd = e.Key
		}
		h := newElem(e.Key, keyEnd)
		if len(e.Val) > 0 || e.Counter != nil {
			h.aux = &elemAux{val: string(e.Val), counter: e.Counter}
		}
		if spec.timeout() {
			h.setDeadline(deadline(e, before, after))
		}
		if spec.counter && e.Counter == nil {
			counted = false
		}
		out.byID[h.id()] = h
	}
	return out, counted, nil
}

// deadline works out when e expires, read between before and after: its
// comment if that agrees with the kernel's time left, else the middle of
// the window the time left allows.
func deadline(e nftables.SetElement, before, after time.Time) time.Time {
	// Expires is the time left, Timeout the time given at insertion.
	if e.Timeout == 0 {
		return after.Add(forever)
	}
	lo, hi := before.Add(e.Expires), after.Add(e.Expires)
	if until, ok := parseUntil(e.Comment); ok && !until.Before(lo.Add(-commentSlack)) && !until.After(hi.Add(commentSlack)) {
		return until
	}
	return lo.Add(hi.Sub(lo) / 2)
}

// State reads back the gate: its mode, protected and close-established
// ports sorted, grant elements sorted like Ruleset.Elements, and in gateway
// mode the published mappings and their translations. Each deadline is the
// one Apply wrote (to the millisecond), checked against now plus the
// kernel's remaining time. An absent table reads as an empty State. State
// only reads; it changes nothing.
func (b *Backend) State(ctx context.Context, now time.Time) (st firewall.State, err error) {
	clk := newClock(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	c, end, err := b.begin(ctx)
	if err != nil {
		return st, fmt.Errorf("reading table inet %s: %w", tableName, err)
	}
	defer func() { err = end(err) }()
	ks, err := readKernel(c, newLayout(firewall.HostMode, 0), clk)
	if err != nil {
		return st, fmt.Errorf("reading table inet %s: %w", tableName, err)
	}
	return ks.state()
}

// state decodes the sets into a firewall.State.
func (ks kernelState) state() (firewall.State, error) {
	gateway := ks.mode == firewall.GatewayMode
	st := firewall.State{Mode: ks.mode}
	if !ks.tableExists {
		st.Mode = firewall.HostMode
	}
	var protected, cut []firewall.PortKey
	var published []firewall.Mapping
	for _, s := range ks.sets {
		for _, id := range s.ids() {
			e := s.byID[id]
			var err error
			switch s.spec.role {
			case roleProtected, roleCut:
				var k firewall.PortKey
				if k, err = decodePort(e.key(), gateway, s.spec.v6); err == nil {
					if s.spec.role == roleProtected {
						protected = append(protected, k)
					} else {
						cut = append(cut, k)
					}
				}
			case roleGrants, roleHosts:
				var from, to netip.Addr
				var k firewall.PortKey
				if from, to, k, err = decodeRange(e.key(), e.keyEnd(), gateway, s.spec.v6); err == nil {
					st.Elements = append(st.Elements, firewall.Element{From: from, To: to, Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: e.deadline()})
				}
			case rolePublished:
				var pub, target firewall.PortKey
				if pub, err = decodePort(e.key(), true, s.spec.v6); err == nil {
					if target, err = decodeTarget(e.valBytes(), pub.Proto, s.spec.v6); err == nil {
						published = append(published, firewall.Mapping{Target: target, Public: pub.Dest, PublicPort: pub.Port})
					}
				}
			case roleDNAT, roleDNATHosts:
				var from, to netip.Addr
				var pub, target firewall.PortKey
				if from, to, pub, err = decodeRange(e.key(), e.keyEnd(), true, s.spec.v6); err == nil {
					if target, err = decodeTarget(e.valBytes(), pub.Proto, s.spec.v6); err == nil {
						st.Translations = append(st.Translations, firewall.Translation{From: from, To: to,
							Mapping: firewall.Mapping{Target: target, Public: pub.Dest, PublicPort: pub.Port}, Expires: e.deadline()})
					}
				}
			}
			if err != nil {
				return firewall.State{}, fmt.Errorf("reading set %s: %w", s.spec.name, err)
			}
		}
	}
	st.Protected = firewall.Ruleset{Protected: protected}.SortedProtected()
	if len(cut) > 0 {
		st.CloseEstablished = firewall.Ruleset{Protected: cut}.SortedProtected()
	}
	if len(published) > 0 {
		st.Published = firewall.Ruleset{Published: published}.SortedPublished()
	}
	sortElements(st.Elements)
	firewall.SortTranslations(st.Translations)
	return st, nil
}

// maxListings bounds how often listStable lists a hash set while its
// listings disagree.
const maxListings = 8

// listStable lists a set's elements. A hash set (the kernel's rhashtable)
// can be resized in the background after a batch added or removed many
// elements, and a dump that runs during the resize may skip elements
// (seen here: 1,967 of 2,500 listed right after 2,500 deletions, the next
// listing complete). An element skipped by a listing is one a reconcile
// would not remove, so a hash set is listed until two listings in a row
// agree; interval sets (rbtree) are walked under the set's lock and are
// listed once.
func listStable(c *nftables.Conn, s *nftables.Set, spec setSpec) ([]nftables.SetElement, error) {
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("listing elements of set %s: %w", s.Name, err)
	}
	if spec.interval() {
		return els, nil
	}
	for i := 1; i < maxListings; i++ {
		again, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("listing elements of set %s: %w", s.Name, err)
		}
		if sameKeys(els, again) {
			return again, nil
		}
		els = again
	}
	return nil, fmt.Errorf("listing elements of set %s: %d listings in a row disagreed (the set is being resized or changed)", s.Name, maxListings)
}

// sameKeys reports whether two listings hold the same keys.
func sameKeys(a, b []nftables.SetElement) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[string]struct{}, len(a))
	for _, e := range a {
		seen[string(e.Key)] = struct{}{}
	}
	for _, e := range b {
		if _, ok := seen[string(e.Key)]; !ok {
			return false
		}
	}
	return true
}
