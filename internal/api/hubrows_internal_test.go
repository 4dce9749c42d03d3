package api

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jitgate/jitgate/internal/store"
)

// BenchmarkRequestsChangedRows: one commit (an agent's report after its
// host was away while n clients waited, each on its own request) activates
// n waited-on requests and hands their rows over. RequestsChanged runs on
// the store's syncer goroutine under the hub's lock, so every write's answer
// waits for it: finding each woken request's row must not cost a scan of
// all the rows (n² in all). The rows come in the reverse of the ids' order,
// as the store gives them (movedRows walks the moves backwards).
func BenchmarkRequestsChangedRows(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := NewHub()
			h.readVersionsWith(func(context.Context, string, []string) (map[string]int64, error) { return nil, nil })
			h.preciseFrom(func(func([]string, []store.Request)) func() { return func() {} })
			ids := make([]string, n)
			rows := make([]store.Request, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("r-%06d", i)
				rows[n-1-i] = store.Request{ID: ids[i], Target: "web-01", Version: 2}
			}
			dones := make([]func() (store.Request, bool), n)
			for b.Loop() {
				b.StopTimer()
				gen := h.Gen()
				for i, id := range ids {
					_, dones[i] = h.WatchRequestRow("web-01", id, 1, gen)
				}
				b.StartTimer()
				h.RequestsChanged(slices.Clone(ids), rows)
				b.StopTimer()
				for i, done := range dones {
					if r, ok := done(); !ok || r.ID != ids[i] {
						b.Fatalf("waiter %d given %v %v", i, r.ID, ok)
					}
				}
				b.StartTimer()
			}
		})
	}
}
