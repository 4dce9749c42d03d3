package storetest

import (
	"testing"

	"github.com/jitgate/jitgate/internal/store"
)

// contractTests are the parts of the store's contract added to the suite
// to cover it whole (issue 12): kept in their own list so that they and
// the cases beside them in Run grow without touching each other.
var contractTests = []struct {
	name string
	f    func(*testing.T, *store.Store)
}{
	{"Blocked", testBlocked},
	{"Gateway", testGateway},
	{"AuditChain", testAuditChain},
	{"Outbox", testOutbox},
}
