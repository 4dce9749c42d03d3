package api

import (
	"fmt"
	"testing"
)

// TestHubSeqBounded: the hub remembers the last notification of at most
// maxSeq targets (Seq), however many names were ever notified (a fleet whose
// hosts come and go under new names): before, every name kept an entry for
// as long as the server ran. And forgetting them never hides a
// notification from a reader of Seq: a report that read Seq, then a change
// of its target notified, the map forgotten, then the report's own
// notification (NotifySeq) must not find the value it read.
func TestHubSeqBounded(t *testing.T) {
	h := NewHub()
	seen := h.Seq("web-01") // the report, before its update
	h.Notify("web-01")      // a change committed after the report read its revision
	for i := range 3 * maxSeq {
		h.Notify(fmt.Sprintf("host-%d", i))
	}
	if n := len(h.seq); n > maxSeq {
		t.Errorf("the hub remembers %d targets' notifications, want at most %d", n, maxSeq)
	}
	if before, _ := h.NotifySeq("web-01"); before == seen {
		t.Errorf("Seq of web-01 %d before the report's notification, as the report read it: the change in between is hidden", before)
	}
	// Nor does a value read before the map was forgotten come back.
	h.Notify("web-02")
	_, after := h.NotifySeq("web-02")
	for i := range 2 * maxSeq {
		h.Notify(fmt.Sprintf("other-%d", i))
	}
	if n := h.Seq("web-02"); n == after {
		t.Errorf("Seq of web-02 %d after %d other notifications forgot it: still the value a reader holds, want it moved (read again, never hidden)", n, 2*maxSeq)
	}
}
