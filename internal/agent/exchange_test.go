package agent

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/firewall/firewalltest"
	"github.com/jitgate/jitgate/internal/wire"
)

// exchangeCounter counts the agent's desired-state polls and reports as they
// reach the server; edit, when set, may change a call before the server
// sees it, or answer it itself (true).
type exchangeCounter struct {
	mu                      sync.Mutex
	polls, reports, carried int
	edit                    func(w http.ResponseWriter, r *http.Request) bool
}

func (e *exchangeCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/agent/desired":
			e.polls++
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/agent/report":
			e.reports++
			if r.URL.Query().Has("after") {
				e.carried++
			}
		}
		edit := e.edit
		e.mu.Unlock()
		if edit != nil && edit(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// counts returns the polls, the reports and the reports carrying a poll.
func (e *exchangeCounter) counts() (polls, reports, carried int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.polls, e.reports, e.carried
}

// exchangeEnv runs the agent (the fake gate, which takes deltas) against the
// real server behind ex; it returns the admin client and a func that asks
// for 22 on web-01 from src and waits until the request is active.
func exchangeEnv(t *testing.T, ex *exchangeCounter) (*client.Client, *countingFake, func(src string)) {
	t.Helper()
	ctx := context.Background()
	c, url, enroll := realServerWith(t, ex.wrap)
	if _, err := c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}}); err != nil {
		t.Fatal(err)
	}
	gate := &countingFake{Fake: firewalltest.NewFake()}
	start(t, Config{ServerURL: url, EnrollToken: enroll, StateDir: filepath.Join(t.TempDir(), "state"), PollWait: 25 * time.Second,
		Version: "test", Logger: testLogger(&syncBuffer{})}, gate)
	request := func(src string) {
		t.Helper()
		r, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src, Duration: wire.Duration(time.Hour), Reason: "x"})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "request "+r.ID+" active", func() bool {
			got, err := c.Request(ctx, r.ID)
			return err == nil && got.State == "active"
		})
	}
	return c, gate, request
}

// TestAgentChangeIsOneExchange: an agent applying a change makes one HTTP
// exchange per change: its report carries its next long-poll (POST
// /api/v1/agent/report?after=…), which the server answers with the next
// change. Before, each change cost two: the report (204), then the poll.
// At start the agent polls (the snapshot), reports its full apply on its
// own and polls again: two polls, one report; then five grants, each a
// delta, make five exchanges, each a report carrying a poll, and each
// request is active (the report was recorded before the poll waited).
func TestAgentChangeIsOneExchange(t *testing.T) {
	ex := &exchangeCounter{}
	_, gate, request := exchangeEnv(t, ex)
	eventually(t, "the agent waits in its poll after the snapshot's report", func() bool {
		polls, reports, _ := ex.counts()
		return polls == 2 && reports == 1
	})
	polls0, reports0, _ := ex.counts()
	deltas := gate.deltas.Load()
	const changes = 5
	for i := range changes {
		request("198.51.100." + string(rune('1'+i)))
	}
	polls, reports, carried := ex.counts()
	if n := (polls - polls0) + (reports - reports0); n != changes || carried != changes {
		t.Errorf("%d changes took %d exchanges (%d polls, %d reports, %d of them carrying a poll); want %d, each a report carrying the poll",
			changes, n, polls-polls0, reports-reports0, carried, changes)
	}
	if d := gate.deltas.Load() - deltas; d != changes {
		t.Errorf("%d deltas applied for %d changes", d, changes)
	}
}

// TestAgentFallsBackToItsOwnPoll: a server older than the report carrying a
// poll ignores the poll's parameters and answers 204; a server (or a proxy)
// that refuses the combined call answers an error. Either way the agent
// delivers its report and polls on its own, as it did before: every request
// activates and reaches the gate.
func TestAgentFallsBackToItsOwnPoll(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(w http.ResponseWriter, r *http.Request) bool
	}{
		{"older server answers 204", func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPost && r.URL.Path == "/api/v1/agent/report" {
				r.URL.RawQuery = "" // what an older server reads of it
			}
			return false
		}},
		{"combined call refused", func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPost && r.URL.Path == "/api/v1/agent/report" && r.URL.Query().Has("after") {
				writeErr(w, http.StatusBadGateway, "not here")
				return true
			}
			return false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := &exchangeCounter{edit: tc.edit}
			_, gate, request := exchangeEnv(t, ex)
			eventually(t, "the agent waits in its poll after the snapshot's report", func() bool {
				polls, reports, _ := ex.counts()
				return polls == 2 && reports == 1
			})
			polls0, _, _ := ex.counts()
			const changes = 3
			for i := range changes {
				request("198.51.100." + string(rune('1'+i)))
			}
			eventually(t, "the agent polls on its own after each change", func() bool {
				polls, _, _ := ex.counts()
				return polls-polls0 == changes
			})
			st, err := gate.State(context.Background(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Elements) != changes {
				t.Errorf("the gate holds %d elements, want %d", len(st.Elements), changes)
			}
		})
	}
}
