package nft

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/jitgate/jitgate/internal/firewall"
)

// queue adds the plan's messages to c's batch; at is the current time on the
// caller's time line, from which timeouts are counted.
//
// The order is one the kernel processes without conflict: objects, then
// deletions (an old range must go before an overlapping new one arrives:
// interval sets refuse overlaps), then additions, then rules (which refer to
// the sets). The batch commits as one, so the order never exposes an
// intermediate state.
func (p plan) queue(c *nftables.Conn, l layout, at time.Time) error {
	if p.rebuild {
		if p.tableExists {
			c.DelTable(l.table)
		}
		c.AddTable(l.table)
		for _, s := range l.specs {
			if err := c.AddSet(s.nftSet(l.table), nil); err != nil {
				return fmt.Errorf("adding set %s: %w", s.name, err)
			}
		}
		for _, ch := range l.chains {
			c.AddChain(l.nftChain(ch))
		}
		for _, s := range l.specs {
			want := p.d.sets[s.name]
			els := make([]elem, 0, want.len())
			for _, id := range want.ids() {
				els = append(els, want.byID[id])
			}
			if err := queueElements(c, l, s, els, at, c.SetAddElements); err != nil {
				return err
			}
		}
		queueRules(c, l, p.counters)
		return nil
	}
	if p.rules {
		for _, ch := range l.chains {
			c.FlushChain(l.nftChain(ch))
		}
	}
	for _, s := range l.specs {
		if err := queueElements(c, l, s, p.del[s.name], time.Time{}, c.SetDeleteElements); err != nil {
			return err
		}
	}
	for _, s := range l.specs {
		if err := queueElements(c, l, s, p.add[s.name], at, c.SetAddElements); err != nil {
			return err
		}
	}
	if p.rules {
		queueRules(c, l, p.counters)
	}
	return nil
}

func queueRules(c *nftables.Conn, l layout, counters map[string]expr.Counter) {
	for _, ch := range l.chains {
		for _, r := range l.nftRules(ch, counters) {
			c.AddRule(r)
		}
	}
}

type elementOp func(*nftables.Set, []nftables.SetElement) error

// queueElements hands els to op for set s. For additions each element gets
// its data, and an element with a deadline the timeout from at to it and
// its deadline comment (one with less than 1 ms left is skipped); for
// deletions at is zero and only the key is sent.
//
// The library's elements (key slices, comment, ~250 bytes each) are made a
// chunk at a time: the library encodes each call into the batch's messages
// at once, so a chunk is garbage before the next is made. Made for every
// element of a set first, they were ~250 MB at a first load of a million.
//
// google/nftables v0.3.0 packs all elements of one call into a single
// netlink attribute whose length is 16 bits: past 64 KiB it wraps and the
// kernel silently receives fewer elements. Chunks stay under 60,000 bytes
// and at most 1,000 elements. Any number of chunks fit in one batch.
func queueElements(c *nftables.Conn, l layout, s setSpec, els []elem, at time.Time, op elementOp) error {
	if len(els) == 0 {
		return nil
	}
	verb := "adding elements to"
	if at.IsZero() {
		verb = "deleting elements from"
	}
	set := s.nftSet(l.table)
	n := min(1000, 60000/elementSize(s))
	out := make([]nftables.SetElement, 0, min(n, len(els)))
	for chunk := range slices.Chunk(els, n) {
		out = out[:0]
		for _, e := range chunk {
			se := nftables.SetElement{Key: e.key(), KeyEnd: e.keyEnd()}
			if !at.IsZero() {
				se.Val = e.valBytes()
				if d := e.deadline(); !d.IsZero() {
					se.Timeout = d.Sub(at).Truncate(time.Millisecond)
					se.Comment = untilComment(d)
					if se.Timeout < time.Millisecond {
						continue
					}
				}
			}
			out = append(out, se)
		}
		if len(out) == 0 {
			continue
		}
		if err := op(set, out); err != nil {
			return fmt.Errorf("%s %s: set %s: %w", verb, s.name, set.Name, err)
		}
	}
	return nil
}

// elementSize bounds the netlink encoding of one element of s: list header
// (4), key and key end (8 of headers each plus the key), data (8 plus the
// data), timeout (12), and the comment (a 4-byte attribute header around a
// 2-byte TLV header, the text and its NUL, padded to 4).
func elementSize(s setSpec) int {
	comment := 4 + (2+len(untilComment(time.Time{}))+1+3)&^3
	return 4 + 2*(8+int(s.key.Bytes)) + 8 + int(s.data.Bytes) + 12 + comment
}

// sortElements sorts like Ruleset.Elements.
func sortElements(els []firewall.Element) {
	slices.SortFunc(els, func(a, b firewall.Element) int { return firewall.CompareKeys(a.Key(), b.Key()) })
}
