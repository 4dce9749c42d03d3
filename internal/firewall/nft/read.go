package nft

import (
	"context"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/jitgate/jitgate/internal/firewall"
)

// forever stands for "no timeout" in deadlines read back: an element someone
// added without a timeout never expires.
const forever = 100 * 365 * 24 * time.Hour

// clock maps the real instant of a kernel operation to the caller's time
// line: the now a call was given plus the time elapsed since the call began.
// The kernel counts element timeouts on its own clock from the moment it
// processes them, so reading or writing a large set some milliseconds after
// the call began must be accounted for: without it every deadline would be
// late by the duration of the call, and a large Apply would drift past
// Tolerance and rewrite all its elements on the next call.
type clock struct {
	now   time.Time
	start time.Time // monotonic
}

func newClock(now time.Time) clock { return clock{now: now, start: time.Now()} }

func (c clock) at() time.Time { return c.now.Add(time.Since(c.start)) }

// kernelState is what the kernel holds in our table.
type kernelState struct {
	tableExists bool
	// layoutOK: our chain and sets exist with the right types and flags and
	// nothing else lives in the table. If not, Apply rebuilds the table.
	layoutOK bool
	// rulesOK: the chain holds exactly our tagged rules, in order.
	rulesOK   bool
	drops     expr.Counter
	protected map[firewall.PortKey]bool
	// elements maps each grant-set element to its deadline.
	elements map[firewall.ElementKey]time.Time
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

// readKernel reads our table. Elements of sets with the right type are read
// even when the rest of the layout is wrong, so that State reports them.
func readKernel(c *nftables.Conn, l layout, clk clock) (kernelState, error) {
	ks := kernelState{protected: map[firewall.PortKey]bool{}, elements: map[firewall.ElementKey]time.Time{}}
	var err error
	if ks.tableExists, err = tableExists(c); err != nil || !ks.tableExists {
		return ks, err
	}
	chainExists, chainOK, err := readChain(c, l)
	if err != nil {
		return ks, err
	}
	sets, err := c.GetSets(l.table)
	if err != nil {
		return ks, fmt.Errorf("listing sets of table inet %s: %w", tableName, err)
	}
	want := map[string]*nftables.Set{protectedName: l.protected, grants4Name: l.grants4, grants6Name: l.grants6}
	setsOK := len(sets) == len(want)
	for _, s := range sets {
		w, ours := want[s.Name]
		if !ours || !sameSet(s, w) {
			setsOK = false
			continue
		}
		if err := readElements(c, s, &ks, clk); err != nil {
			return ks, err
		}
	}
	ks.layoutOK = chainOK && setsOK
	if chainExists {
		rules, err := c.GetRules(l.table, l.chain)
		if err != nil {
			return ks, fmt.Errorf("listing rules of chain %s: %w", chainName, err)
		}
		ks.rulesOK = rulesAreOurs(rules)
		ks.drops = dropCounter(rules)
	}
	return ks, nil
}

// readChain reports whether our table has a chain named like ours, and
// whether that chain is ours and the only one.
func readChain(c *nftables.Conn, l layout) (exists, ok bool, err error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, false, fmt.Errorf("listing inet chains: %w", err)
	}
	n := 0
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != tableName {
			continue
		}
		n++
		if ch.Name == chainName {
			exists, ok = true, sameChain(ch, l.chain)
		}
	}
	return exists, ok && n == 1, nil
}

func readElements(c *nftables.Conn, s *nftables.Set, ks *kernelState, clk clock) error {
	before := clk.at()
	els, err := c.GetSetElements(s)
	if err != nil {
		return fmt.Errorf("listing elements of set %s: %w", s.Name, err)
	}
	after := clk.at()
	for _, e := range els {
		if e.IntervalEnd {
			continue // not produced by concatenated interval sets; be safe
		}
		if s.Name == protectedName {
			k, err := decodePortKey(e.Key)
			if err != nil {
				return fmt.Errorf("reading set %s: %w", s.Name, err)
			}
			ks.protected[k] = true
			continue
		}
		k, err := decodeGrantRange(e.Key, e.KeyEnd)
		if err != nil {
			return fmt.Errorf("reading set %s: %w", s.Name, err)
		}
		ks.elements[k] = deadline(e, before, after)
	}
	return nil
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

// State reads back the gate: protected ports sorted, and elements sorted like
// Ruleset.Elements, each deadline being the one Apply wrote (to the
// millisecond), checked against now plus the kernel's remaining time. An absent table reads as
// an empty State. State only reads; it changes nothing.
func (b *Backend) State(ctx context.Context, now time.Time) (st firewall.State, err error) {
	clk := newClock(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	c, end, err := b.begin(ctx)
	if err != nil {
		return st, fmt.Errorf("reading table inet %s: %w", tableName, err)
	}
	defer func() { err = end(err) }()
	ks, err := readKernel(c, newLayout(), clk)
	if err != nil {
		return st, fmt.Errorf("reading table inet %s: %w", tableName, err)
	}
	return ks.state(), nil
}

func (ks kernelState) state() firewall.State {
	var rs firewall.Ruleset
	for k := range ks.protected {
		rs.Protected = append(rs.Protected, k)
	}
	st := firewall.State{Protected: rs.SortedProtected()}
	for k, exp := range ks.elements {
		st.Elements = append(st.Elements, firewall.Element{From: k.From, To: k.To, Proto: k.Proto, Port: k.Port, Expires: exp})
	}
	sortElements(st.Elements)
	return st
}
