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
	{"ReportActivatesOnlyItsOwn", testReportActivatesOnlyItsOwn},
	{"AuditChain", testAuditChain},
	{"Outbox", testOutbox},
	{"Scheduled", testScheduled},
	{"ScheduledGroupsRecheck", testScheduledGroupsRecheck},
	{"ScheduledApproverRecheck", testScheduledApproverRecheck},
	{"ScheduledApprovedAfterStart", testScheduledApprovedAfterStart},
	{"ApprovalRechecksRequester", testApprovalRechecksRequester},
	{"ApprovalsTightened", testApprovalsTightened},
	{"SamePersonTwoTokens", testSamePersonTwoTokens},
	{"Schedules", testSchedules},
	{"SchedulesAfterRestore", testSchedulesAfterRestore},
	{"ScheduleDeletedBeforeItsOccurrence", testScheduleDeletedBeforeItsOccurrence},
	{"ScheduleOfRemovedTarget", testScheduleOfRemovedTarget},
	{"OverlappingOccurrences", testOverlappingOccurrences},
}

// RunConfigured runs the cases that need a store opened with a particular
// store.Config (the rules' parameters arrive at construction): open must
// return a new, empty store opened with cfg and register its closing with
// t.Cleanup.
func RunConfigured(t *testing.T, open func(t *testing.T, cfg store.Config) *store.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, func(store.Config) *store.Store)
	}{
		{"ExpiryWarning", testExpiryWarning},
		{"ApprovalTimeout", testApprovalTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, func(cfg store.Config) *store.Store { return open(t, cfg) })
		})
	}
}
