package access_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/access"
)

func TestDecide(t *testing.T) {
	dba, sec := "group:dba", "group:security"
	two := []access.GroupNeed{{From: dba, Count: 1}, {From: sec, Count: 1}}
	vote := func(who string, member ...string) access.Vote { return access.Vote{Approver: who, Member: member} }
	tests := []struct {
		name     string
		required int
		needs    []access.GroupNeed
		votes    []access.Vote
		want     access.Tally
	}{
		{"no votes", 2, two, nil, access.Tally{Missing: two, Short: 2}},
		{"only dba", 2, two, []access.Vote{vote("bob", dba)}, access.Tally{Missing: []access.GroupNeed{{From: sec, Count: 1}}, Short: 1}},
		{"dba and security", 2, two, []access.Vote{vote("bob", dba), vote("carol", sec)}, access.Tally{Approved: true}},
		// One person in both groups fills one seat, never two.
		{"one person in both", 2, two, []access.Vote{vote("dave", dba, sec)}, access.Tally{Missing: []access.GroupNeed{{From: sec, Count: 1}}, Short: 1}},
		// Dave first took dba; Bob (dba only) arriving later moves Dave to
		// security: the order of arrival does not matter.
		{"reassigned", 2, two, []access.Vote{vote("dave", dba, sec), vote("bob", dba)}, access.Tally{Approved: true}},
		{"two from dba are not one from security", 2, two, []access.Vote{vote("bob", dba), vote("erin", dba)}, access.Tally{Missing: []access.GroupNeed{{From: sec, Count: 1}}, Short: 1}},
		{"count of two", 2, []access.GroupNeed{{From: dba, Count: 2}}, []access.Vote{vote("bob", dba)}, access.Tally{Missing: []access.GroupNeed{{From: dba, Count: 1}}, Short: 1}},
		// A total beyond the seats: anyone else in scope fills it.
		{"total beyond the groups", 3, two, []access.Vote{vote("bob", dba), vote("carol", sec)}, access.Tally{Short: 1}},
		{"total beyond the groups met", 3, two, []access.Vote{vote("bob", dba), vote("carol", sec), vote("frank")}, access.Tally{Approved: true}},
		{"no groups", 2, nil, []access.Vote{vote("bob"), vote("carol")}, access.Tally{Approved: true}},
		{"no groups, short", 2, nil, []access.Vote{vote("bob")}, access.Tally{Short: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := access.Decide(tt.required, tt.needs, tt.votes)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
	if got := access.Decide(2, two, []access.Vote{vote("bob", dba)}).String(); got != "1 more from group:security" {
		t.Errorf("String = %q", got)
	}
	// Counts: a second dba approver adds nothing while security is missing,
	// a security one does, and so does a dba one that frees a person in both.
	if access.Counts(2, two, []access.Vote{vote("bob", dba)}, vote("erin", dba)) {
		t.Error("a second dba vote counts")
	}
	if !access.Counts(2, two, []access.Vote{vote("bob", dba)}, vote("carol", sec)) {
		t.Error("a security vote does not count")
	}
	if !access.Counts(2, two, []access.Vote{vote("dave", dba, sec)}, vote("bob", dba)) {
		t.Error("a dba vote that frees dave for security does not count")
	}
	if access.Counts(2, two, nil, vote("frank")) {
		t.Error("a vote from no group counts when the groups' seats are the total")
	}
}

// TestStricter: a pending request's needs after its rules changed are the
// larger of the two, per group and in all; never smaller.
func TestStricter(t *testing.T) {
	dba, sec := access.GroupNeed{From: "group:dba", Count: 1}, access.GroupNeed{From: "group:security", Count: 1}
	dba2 := access.GroupNeed{From: "group:dba", Count: 2}
	tests := []struct {
		name      string
		req       int
		needs     []access.GroupNeed
		nowReq    int
		nowNeeds  []access.GroupNeed
		wantReq   int
		wantNeeds []access.GroupNeed
	}{
		{"unchanged", 1, []access.GroupNeed{dba}, 1, []access.GroupNeed{dba}, 1, []access.GroupNeed{dba}},
		{"a group added", 1, []access.GroupNeed{dba}, 2, []access.GroupNeed{dba, sec}, 2, []access.GroupNeed{dba, sec}},
		{"a count raised", 1, []access.GroupNeed{dba}, 2, []access.GroupNeed{dba2}, 2, []access.GroupNeed{dba2}},
		{"loosened: kept", 2, []access.GroupNeed{dba, sec}, 1, []access.GroupNeed{dba}, 2, []access.GroupNeed{dba, sec}},
		{"rule now automatic: kept", 1, nil, 0, nil, 1, nil},
		{"groups where there were none", 1, nil, 1, []access.GroupNeed{sec}, 1, []access.GroupNeed{sec}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, needs := access.Stricter(tt.req, tt.needs, tt.nowReq, tt.nowNeeds)
			if req != tt.wantReq || !cmp.Equal(needs, tt.wantNeeds) {
				t.Errorf("Stricter = %d %v, want %d %v", req, needs, tt.wantReq, tt.wantNeeds)
			}
		})
	}
}
