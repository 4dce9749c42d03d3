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
		for _, s := range l.sets() {
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("adding set %s: %w", s.Name, err)
			}
		}
		c.AddChain(l.chain)
		if err := queueProtected(l.protected, p.protected, c.SetAddElements); err != nil {
			return fmt.Errorf("adding elements to %s: %w", protectedName, err)
		}
		if err := queueGrants(l, p.elements, at, c.SetAddElements); err != nil {
			return fmt.Errorf("adding grant elements: %w", err)
		}
		queueRules(c, l, p.drops)
		return nil
	}
	if p.rules {
		c.FlushChain(l.chain)
	}
	if err := queueProtected(l.protected, p.delProtected, c.SetDeleteElements); err != nil {
		return fmt.Errorf("deleting elements from %s: %w", protectedName, err)
	}
	del := make(map[firewall.ElementKey]time.Time, len(p.del))
	for _, k := range p.del {
		del[k] = time.Time{}
	}
	if err := queueGrants(l, del, time.Time{}, c.SetDeleteElements); err != nil {
		return fmt.Errorf("deleting grant elements: %w", err)
	}
	if err := queueProtected(l.protected, p.addProtected, c.SetAddElements); err != nil {
		return fmt.Errorf("adding elements to %s: %w", protectedName, err)
	}
	if err := queueGrants(l, p.add, at, c.SetAddElements); err != nil {
		return fmt.Errorf("adding grant elements: %w", err)
	}
	if p.rules {
		queueRules(c, l, p.drops)
	}
	return nil
}

func queueRules(c *nftables.Conn, l layout, drops expr.Counter) {
	for _, r := range l.rules(drops) {
		c.AddRule(r)
	}
}

type elementOp func(*nftables.Set, []nftables.SetElement) error

func queueProtected(s *nftables.Set, keys []firewall.PortKey, op elementOp) error {
	els := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		els[i] = nftables.SetElement{Key: portKeyBytes(k)}
	}
	return inChunks(s, els, op)
}

// queueGrants splits elements by family into grants4 and grants6, in a
// deterministic order. For additions, each gets the timeout from at to its
// deadline, and elements with less than 1 ms left are skipped; for deletions
// at is zero and no timeout is sent.
func queueGrants(l layout, elements map[firewall.ElementKey]time.Time, at time.Time, op elementOp) error {
	var v4, v6 []nftables.SetElement
	for _, k := range sortedKeys(keysOf(elements)) {
		e := nftables.SetElement{
			Key:    grantKeyBytes(k.From, k.Proto, k.Port),
			KeyEnd: grantKeyBytes(k.To, k.Proto, k.Port),
		}
		if !at.IsZero() {
			e.Timeout = elements[k].Sub(at).Truncate(time.Millisecond)
			e.Comment = untilComment(elements[k])
			if e.Timeout < time.Millisecond {
				continue
			}
		}
		if k.From.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	if err := inChunks(l.grants4, v4, op); err != nil {
		return err
	}
	return inChunks(l.grants6, v6, op)
}

// inChunks hands els to op in slices small enough for one netlink attribute.
//
// google/nftables v0.3.0 packs all elements of one call into a single
// netlink attribute whose length is 16 bits: past 64 KiB it wraps and the
// kernel silently receives fewer elements. Chunks stay under 60,000 bytes
// and at most 1,000 elements. Any number of chunks fit in one batch.
func inChunks(s *nftables.Set, els []nftables.SetElement, op elementOp) error {
	n := min(1000, 60000/elementSize(s))
	for chunk := range slices.Chunk(els, n) {
		if err := op(s, chunk); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	return nil
}

// elementSize bounds the netlink encoding of one element of s: list header
// (4), key and key end (8 of headers each plus the key), timeout (12), and
// the comment (a 4-byte attribute header around a 2-byte TLV header, the
// text and its NUL, padded to 4).
func elementSize(s *nftables.Set) int {
	comment := 4 + (2+len(untilComment(time.Time{}))+1+3)&^3
	return 4 + 2*(8+int(s.KeyType.Bytes)) + 12 + comment
}

func keysOf(m map[firewall.ElementKey]time.Time) []firewall.ElementKey {
	out := make([]firewall.ElementKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// sortedKeys sorts in place like Ruleset.Elements, so batches are
// deterministic, and returns keys.
func sortedKeys(keys []firewall.ElementKey) []firewall.ElementKey {
	slices.SortFunc(keys, firewall.CompareKeys)
	return keys
}

func sortElements(els []firewall.Element) {
	slices.SortFunc(els, func(a, b firewall.Element) int { return firewall.CompareKeys(a.Key(), b.Key()) })
}
