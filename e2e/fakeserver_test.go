package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// fakeServer serves the three agent endpoints (enroll, desired with
// long-poll, report) with a desired state the test sets, and records the
// reports. It stands in for the server while gateway targets are not yet
// in its store; it listens on 127.0.0.1 inside a namespace, where the agent
// runs.
type fakeServer struct {
	URL string

	mu      sync.Mutex
	ds      wire.DesiredState
	changed chan struct{}
	reports []wire.AgentReport
}

const (
	fakeEnrollToken = "jge_fake-enroll"
	fakeCredential  = "jga_fake-credential"
)

func newFakeServer(t *testing.T, ns *testenv.Netns, ds wire.DesiredState) *fakeServer {
	t.Helper()
	f := &fakeServer{ds: ds, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agent/enroll", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeEnrollToken {
			writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "bad enrollment token"})
			return
		}
		writeJSON(w, http.StatusOK, wire.EnrollResponse{Target: f.state().Target, Credential: fakeCredential})
	})
	mux.HandleFunc("GET /api/v1/agent/desired", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeCredential {
			writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "bad credential"})
			return
		}
		after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for {
			f.mu.Lock()
			ds, ch := f.ds, f.changed
			f.mu.Unlock()
			if ds.Revision > after {
				break
			}
			select {
			case <-ch:
				continue
			case <-timer.C:
			case <-r.Context().Done():
				return
			}
			break
		}
		ds := f.state()
		ds.ServerTime = time.Now()
		writeJSON(w, http.StatusOK, ds)
	})
	mux.HandleFunc("POST /api/v1/agent/report", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeCredential {
			writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "bad credential"})
			return
		}
		var rep wire.AgentReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			writeJSON(w, http.StatusBadRequest, wire.Error{Error: err.Error()})
			return
		}
		f.mu.Lock()
		f.reports = append(f.reports, rep)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f.URL = fmt.Sprintf("http://%s", ln.Addr())
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeServer) state() wire.DesiredState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ds
}

// waitReport waits for a report (received at any time) that satisfies ok.
func (f *fakeServer) waitReport(t *testing.T, what string, d time.Duration, ok func(wire.AgentReport) bool) wire.AgentReport {
	t.Helper()
	seen := 0
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		for _, r := range f.reports[seen:] {
			if ok(r) {
				f.mu.Unlock()
				return r
			}
		}
		f.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t.Fatalf("no report %s within %s; last reports: %+v", what, d, f.reports[max(0, len(f.reports)-3):])
	return wire.AgentReport{}
}

// firstInventory returns the inventory of the earliest report carrying one.
func (f *fakeServer) firstInventory() *wire.Inventory {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reports {
		if r.Inventory != nil {
			return r.Inventory
		}
	}
	return nil
}

func (f *fakeServer) reportsSnapshot() []wire.AgentReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.AgentReport(nil), f.reports...)
}
