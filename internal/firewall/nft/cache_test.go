package nft

import (
	"net/netip"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// TestApplyTrustsItsCache checks that Apply reads the table back only when
// it cannot know what the kernel holds: after its own batches and no-ops it
// plans against its cache; any change by someone else (here an element
// deleted with the nft tool, in another table too) makes it read again and
// repair; and elements the kernel expired on its own are not re-added.
func TestApplyTrustsItsCache(t *testing.T) {
	b, ns := newTestBackend(t)
	now := time.Now()
	rs := sampleRuleset(now)
	mustApply(t, b, rs)
	if b.reads != 1 {
		t.Fatalf("first Apply read the table %d times, want 1", b.reads)
	}
	grant := func(src string, d time.Duration) firewall.Grant {
		return firewall.Grant{Source: netip.MustParsePrefix(src), Proto: ssh.Proto, Port: ssh.Port, Expires: time.Now().Add(d)}
	}
	rs.Grants = append(rs.Grants, grant("203.0.113.9/32", time.Hour))
	if res := mustApply(t, b, rs); res.Added != 1 {
		t.Fatalf("adding one grant: %+v", res)
	}
	if res := mustApply(t, b, rs); res.Changed {
		t.Fatalf("re-applying changed: %+v", res)
	}
	if b.reads != 1 {
		t.Fatalf("Apply read the table %d times after its own batches, want 1 (trust the cache)", b.reads)
	}

	// Someone else deletes an element: the generation moves, Apply reads
	// and repairs.
	load(t, ns, "delete element inet jitgate hosts4 { 203.0.113.9 . tcp . 22 }")
	if res := mustApply(t, b, rs); res.Added != 1 {
		t.Fatalf("after a foreign deletion Apply = %+v, want the element re-added", res)
	}
	if b.reads != 2 {
		t.Fatalf("reads = %d after a foreign change, want 2", b.reads)
	}
	// A change to another table also moves the generation: read again,
	// nothing to repair.
	load(t, ns, "add table ip other")
	if res := mustApply(t, b, rs); res.Changed || b.reads != 3 {
		t.Fatalf("after a change elsewhere: %+v, %d reads; want no change and a read", res, b.reads)
	}

	// An element that expires in the kernel is gone from the cache too.
	short := rs
	short.Grants = append(rs.Grants[:len(rs.Grants):len(rs.Grants)], grant("203.0.113.10/32", 300*time.Millisecond))
	mustApply(t, b, short)
	time.Sleep(400 * time.Millisecond)
	reads := b.reads
	if res := mustApply(t, b, short); res.Changed {
		t.Fatalf("after the kernel expired an element Apply = %+v, want nothing (the grant is over)", res)
	}
	if b.reads != reads {
		t.Errorf("an element expiring made Apply read the table (the kernel's expiry moved the generation?)")
	}
	st, err := b.State(t.Context(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := len(rs.Elements(time.Now())); len(st.Elements) != want {
		t.Errorf("kernel holds %d elements, want %d", len(st.Elements), want)
	}
}
