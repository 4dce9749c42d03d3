package nft

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/jitgate/jitgate/internal/firewall"
)

// TestElemIsCompact: an element of the cache (a million of them at a
// million grants) is one small value and one allocation, its bytes, which
// the set's map key shares. Before: 136 bytes a value, a separate id string
// and the key's and key end's arrays (four allocations a grant).
func TestElemIsCompact(t *testing.T) {
	if size := unsafe.Sizeof(elem{}); size > 32 {
		t.Errorf("an elem is %d bytes, want at most 32", size)
	}
	e := firewall.Element{From: netip.MustParseAddr("2001:db8::1"), To: netip.MustParseAddr("2001:db8::1"), Proto: firewall.TCP, Port: 22, Expires: time.Now()}
	r := e
	r.To = netip.MustParseAddr("2001:db8::ff")
	for _, tc := range []struct {
		name string
		el   firewall.Element
	}{{"host", e}, {"range", r}} {
		if n := testing.AllocsPerRun(100, func() { grantElem(tc.el, false) }); n > 1 {
			t.Errorf("%s: encoding a grant element allocates %.0f times, want 1", tc.name, n)
		}
		got := grantElem(tc.el, false)
		if want := grantKeyBytes(tc.el.From, tc.el.PortKey()); string(got.key()) != string(want) {
			t.Errorf("%s: key %x, want %x", tc.name, got.key(), want)
		}
		if tc.el.From != tc.el.To {
			if want := grantKeyBytes(tc.el.To, tc.el.PortKey()); string(got.keyEnd()) != string(want) {
				t.Errorf("%s: key end %x, want %x", tc.name, got.keyEnd(), want)
			}
		} else if got.keyEnd() != nil {
			t.Errorf("%s: a key end %x for a single address", tc.name, got.keyEnd())
		}
	}
}
