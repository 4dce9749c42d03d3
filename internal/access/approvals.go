package access

import (
	"fmt"
	"slices"
	"strings"
)

// GroupNeed is how many approvals a request needs from one group or role
// ("group:dba", "role:approver").
type GroupNeed struct {
	From  string `json:"from"`
	Count int    `json:"count"`
}

// Vote is one approval: who gave it, and the groups or roles of the
// request's needs the approver belonged to when approving.
type Vote struct {
	Approver string
	Member   []string
}

// Tally is where a request's approvals stand.
type Tally struct {
	// Approved is true when there are at least Required distinct approvers
	// and every group's count is met.
	Approved bool
	// Missing lists, per group still short, how many more approvals it
	// needs, in the order of the needs.
	Missing []GroupNeed
	// Short is how many more distinct approvers the request needs in all.
	Short int
}

// Counts reports whether one more vote by a member of member would bring a
// request with these needs and votes closer to approval. With approvals by
// group, a vote that fills no seat and is not needed for the total would
// be recorded for nothing; the store refuses it and says what is missing.
func Counts(required int, needs []GroupNeed, votes []Vote, v Vote) bool {
	before := Decide(required, needs, votes)
	after := Decide(required, needs, append(slices.Clip(votes), v))
	return after.Short < before.Short
}

// String says what is missing, such as "1 more from group:security".
func (t Tally) String() string {
	if t.Approved {
		return "approved"
	}
	var parts []string
	for _, m := range t.Missing {
		parts = append(parts, fmt.Sprintf("%d more from %s", m.Count, m.From))
	}
	if len(parts) == 0 && t.Short > 0 {
		parts = append(parts, fmt.Sprintf("%d more approval(s)", t.Short))
	}
	return strings.Join(parts, ", ")
}

// Decide tallies votes against a request that needs required distinct
// approvers and, by group, needs. It is the one place that says when a
// request with approvals by group is approved.
//
// Every approver counts at most once overall: one person in both dba and
// security satisfies one of the two groups, not both, so "one from each of
// two teams" always means two people. Which group a vote counts for is
// chosen to satisfy as many needs as possible (a maximum matching of votes
// to group seats), so the order in which approvals arrive never matters.
// The requester is kept out before a vote is recorded (store), and votes
// are expected to be from distinct approvers.
func Decide(required int, needs []GroupNeed, votes []Vote) Tally {
	// Seats: one per approval a group needs.
	var seats []string
	for _, n := range needs {
		for range n.Count {
			seats = append(seats, n.From)
		}
	}
	seatOf := make([]int, len(seats)) // seat -> vote index + 1 (0: free)
	var assign func(v int, seen []bool) bool
	assign = func(v int, seen []bool) bool {
		for s, from := range seats {
			if seen[s] || !slices.Contains(votes[v].Member, from) {
				continue
			}
			seen[s] = true
			if seatOf[s] == 0 || assign(seatOf[s]-1, seen) {
				seatOf[s] = v + 1
				return true
			}
		}
		return false
	}
	for v := range votes {
		assign(v, make([]bool, len(seats)))
	}
	t := Tally{Short: max(0, required-len(votes))}
	filled := map[string]int{}
	for s, from := range seats {
		if seatOf[s] != 0 {
			filled[from]++
		}
	}
	for _, n := range needs {
		if got := filled[n.From]; got < n.Count {
			t.Missing = append(t.Missing, GroupNeed{From: n.From, Count: n.Count - got})
		}
	}
	// Votes outside the seats count towards the total only; the seats
	// still empty need that many more people.
	seatsLeft := 0
	for _, m := range t.Missing {
		seatsLeft += m.Count
	}
	t.Short = max(t.Short, seatsLeft)
	t.Approved = len(t.Missing) == 0 && t.Short == 0
	return t
}

// Stricter is what a request awaiting approval needs once its target's
// rules changed: the larger number of approvals, and per group the larger
// count, of what it was created with (required, needs) and what its rules
// ask for now (nowRequired, nowNeeds), its own groups first. A tightened
// rule binds the requests not yet granted; a loosened one never lowers
// what they need, so editing a policy cannot wave a pending request
// through.
func Stricter(required int, needs []GroupNeed, nowRequired int, nowNeeds []GroupNeed) (int, []GroupNeed) {
	out := slices.Clone(needs)
	for _, n := range nowNeeds {
		i := slices.IndexFunc(out, func(o GroupNeed) bool { return o.From == n.From })
		if i < 0 {
			out = append(out, n)
		} else {
			out[i].Count = max(out[i].Count, n.Count)
		}
	}
	return max(required, nowRequired), out
}
