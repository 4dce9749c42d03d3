package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/jitgate/jitgate/internal/testenv"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// Documentation addresses (RFC 5737).
const (
	srcA = "203.0.113.7"
	srcB = "198.51.100.9"
)

// fakeBackend is a small stand-in for firewalltest.Fake: it holds the state a
// kernel would hold after each Apply and counts calls.
type fakeBackend struct {
	mu       sync.Mutex
	state    firewall.State
	applies  int
	failWith error // when set, Apply fails and leaves the state as it is
	removed  bool
}

func (f *fakeBackend) Apply(ctx context.Context, rs firewall.Ruleset, now time.Time) (firewall.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.failWith != nil {
		return firewall.ApplyResult{}, f.failWith
	}
	next := firewall.State{Protected: rs.SortedProtected(), Elements: rs.Elements(now)}
	changed := !sameState(f.state, next)
	f.state = next
	return firewall.ApplyResult{Changed: changed, Elements: len(next.Elements)}, nil
}

func (f *fakeBackend) State(ctx context.Context, now time.Time) (firewall.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, nil
}

func (f *fakeBackend) Close() error { return nil }

func (f *fakeBackend) Remove(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = true
	f.state = firewall.State{}
	return nil
}

func (f *fakeBackend) snapshot() (firewall.State, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, f.applies, f.removed
}

func (f *fakeBackend) set(s firewall.State, failWith error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state, f.failWith = s, failWith
}

func sameState(a, b firewall.State) bool {
	return slices.Equal(a.Protected, b.Protected) && slices.EqualFunc(a.Elements, b.Elements, func(x, y firewall.Element) bool {
		return x.Key() == y.Key() && x.Expires.Equal(y.Expires)
	})
}

// fakeAPI implements the server's three agent endpoints as the protocol
// describes them: bearer enrollment token, bearer credential, long-poll with
// after/wait, 204 on report, 401 for a bad token, and a forced status (410,
// 401) for every call once set.
type fakeAPI struct {
	t           *testing.T
	enrollToken string
	credential  string
	target      string

	mu          sync.Mutex
	enrolls     []wire.EnrollRequest
	tokenUsed   bool
	rev         int64
	protected   []wire.Port
	grants      []wire.GrantEntry
	bastion     []wire.BastionGrant // served with the desired state (tunnel_test.go)
	changed     chan struct{}       // closed and replaced on every change
	forced      int                 // when non-zero, desired and report answer this
	reports     []wire.AgentReport
	polls       int
	waits       []string
	badRequests []string
	// answer, when set, writes the desired state's answer instead of
	// JSON: its Content-Type and body, given the state and the poll's
	// Accept (lines_test.go).
	answer func(ds wire.DesiredState, accept string) (string, []byte)
}

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{
		t:           t,
		enrollToken: "enroll-token-SECRET-1",
		credential:  "agent-credential-SECRET-2",
		target:      "web-1",
		rev:         1,
		protected:   []wire.Port{{Port: 22, Protocol: "tcp"}},
		changed:     make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agent/enroll", f.enroll)
	mux.HandleFunc("GET /api/v1/agent/desired", f.desired)
	mux.HandleFunc("POST /api/v1/agent/report", f.report)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(wire.Error{Error: msg})
}

func (f *fakeAPI) enroll(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+f.enrollToken || f.tokenUsed {
		writeErr(w, http.StatusUnauthorized, "invalid or used enrollment token")
		return
	}
	var req wire.EnrollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	f.tokenUsed = true
	f.enrolls = append(f.enrolls, req)
	json.NewEncoder(w).Encode(wire.EnrollResponse{Target: f.target, Credential: f.credential})
}

func (f *fakeAPI) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+f.credential {
		writeErr(w, http.StatusUnauthorized, "invalid credential")
		return false
	}
	if f.forced != 0 {
		writeErr(w, f.forced, http.StatusText(f.forced))
		return false
	}
	return true
}

func (f *fakeAPI) desired(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.polls++
	if !f.authorized(w, r) {
		f.mu.Unlock()
		return
	}
	after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" && err == nil {
		f.waits = append(f.waits, s)
		wait, err = time.ParseDuration(s)
	}
	if err != nil {
		f.badRequests = append(f.badRequests, r.URL.RawQuery)
		f.mu.Unlock()
		writeErr(w, http.StatusBadRequest, "bad after or wait")
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for f.rev <= after && f.forced == 0 {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			f.mu.Lock()
			goto answer
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
answer:
	if !f.authorized(w, r) { // forced while the poll waited
		f.mu.Unlock()
		return
	}
	ds := wire.DesiredState{Target: f.target, Revision: f.rev, ServerTime: time.Now(), Protected: f.protected, Grants: f.grants, Bastion: f.bastion}
	answer := f.answer
	f.mu.Unlock()
	if answer != nil {
		ct, body := answer(ds, r.Header.Get("Accept"))
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush() // streamed, as a snapshot is
		w.Write(body)
		return
	}
	json.NewEncoder(w).Encode(ds)
}

func (f *fakeAPI) report(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authorized(w, r) {
		return
	}
	var rep wire.AgentReport
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	f.reports = append(f.reports, rep)
	w.WriteHeader(http.StatusNoContent)
}

// update publishes a new revision.
func (f *fakeAPI) update(protected []wire.Port, grants []wire.GrantEntry) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.protected, f.grants = protected, grants
	close(f.changed)
	f.changed = make(chan struct{})
	return f.rev
}

// force makes every later desired and report call answer status.
func (f *fakeAPI) force(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forced = status
	close(f.changed)
	f.changed = make(chan struct{})
}

// waitReport waits for a report matching ok and returns it.
func (f *fakeAPI) waitReport(t *testing.T, what string, ok func(wire.AgentReport) bool) wire.AgentReport {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		for _, r := range f.reports {
			if ok(r) {
				f.mu.Unlock()
				return r
			}
		}
		f.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t.Fatalf("no report %s within 5s; reports: %+v", what, f.reports)
	return wire.AgentReport{}
}

func (f *fakeAPI) countReports(ok func(wire.AgentReport) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.reports {
		if ok(r) {
			n++
		}
	}
	return n
}

func revision(n int64) func(wire.AgentReport) bool {
	return func(r wire.AgentReport) bool { return r.Revision == n && r.Error == "" }
}

// syncBuffer is testenv.Buffer under the name this file uses.
type syncBuffer = testenv.Buffer

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is an agent running in the background.
type running struct {
	agent  *Agent
	cancel context.CancelFunc
	done   chan error
}

// start runs an agent against url with fast backoff; stop or wait ends it.
func start(t *testing.T, cfg Config, backend firewall.Backend) *running {
	t.Helper()
	a, err := New(cfg, backend)
	if err != nil {
		t.Fatal(err)
	}
	a.minBackoff, a.maxBackoff = 10*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// wait returns Run's result, failing if it does not return soon.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // keep it for stop
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s")
		return nil
	}
}

func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// enrolledConfig writes a credential for srv into a fresh state directory,
// as an earlier enrollment would have.
func enrolledConfig(t *testing.T, api *fakeAPI, url string, log *slog.Logger) Config {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := saveCredential(filepath.Join(dir, credentialName), credential{ServerURL: url, Target: api.target, Credential: api.credential}); err != nil {
		t.Fatal(err)
	}
	return Config{ServerURL: url, StateDir: dir, PollWait: 2 * time.Second, Version: "test", Logger: log}
}

func TestEnrollWritesCredentialAndReusesIt(t *testing.T) {
	api, srv := newFakeAPI(t)
	var logs syncBuffer
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := Config{ServerURL: srv.URL, EnrollToken: api.enrollToken, StateDir: stateDir, PollWait: 2 * time.Second, Version: "v-test", Logger: testLogger(&logs)}
	backend := &fakeBackend{}

	first := start(t, cfg, backend)
	api.waitReport(t, "for revision 1", revision(1))
	if st := first.agent.Status(); st.Target != "web-1" || st.AppliedRevision != 1 {
		t.Errorf("Status() = %+v, want target web-1 at revision 1", st)
	}
	if err := first.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}

	credPath := filepath.Join(stateDir, credentialName)
	fi, err := os.Stat(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("credential file mode = %v, want 0600", got)
	}
	if di, err := os.Stat(stateDir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v (%v), want 0700", di.Mode().Perm(), err)
	}
	cred, err := loadCredential(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := (credential{ServerURL: srv.URL, Target: "web-1", Credential: api.credential}); cred != want {
		t.Errorf("credential file = %+v, want %+v", cred, want)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(stateDir, ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left in the state dir: %v", leftovers)
	}
	api.mu.Lock()
	if len(api.enrolls) != 1 || api.enrolls[0].Hostname == "" || api.enrolls[0].Version != "v-test" {
		t.Errorf("enroll requests = %+v, want one with hostname and version", api.enrolls)
	}
	api.mu.Unlock()

	// Restart without the (now spent) token: the credential file suffices.
	cfg.EnrollToken = ""
	second := start(t, cfg, backend)
	rev := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}, {Port: 53, Protocol: "udp"}}, nil)
	api.waitReport(t, "for revision 2 after restart", revision(rev))
	if err := second.stop(t); err != nil {
		t.Fatalf("second Run = %v, want nil", err)
	}
	api.mu.Lock()
	if len(api.enrolls) != 1 {
		t.Errorf("enrolled %d times, want once", len(api.enrolls))
	}
	api.mu.Unlock()

	for _, secret := range []string{api.enrollToken, api.credential} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain a secret %q:\n%s", secret, logs.String())
		}
	}
}

func TestEnrollWithRejectedTokenFails(t *testing.T) {
	api, srv := newFakeAPI(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	backend := &fakeBackend{}
	r := start(t, Config{ServerURL: srv.URL, EnrollToken: "wrong", StateDir: stateDir, Logger: testLogger(&syncBuffer{})}, backend)
	err := r.wait(t)
	if err == nil || !strings.Contains(err.Error(), "enrollment token rejected") {
		t.Fatalf("Run = %v, want enrollment token rejected", err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, credentialName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("credential file exists after a failed enrollment (stat: %v)", err)
	}
	if _, applies, _ := backend.snapshot(); applies != 0 {
		t.Errorf("Apply called %d times, want 0", applies)
	}
	_ = api
}

func TestNotEnrolledWithoutTokenFails(t *testing.T) {
	_, srv := newFakeAPI(t)
	err := Run(context.Background(), Config{ServerURL: srv.URL, StateDir: t.TempDir()}, &fakeBackend{})
	if err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("Run = %v, want a not-enrolled error", err)
	}
}

func TestDesiredChangeIsAppliedAndReported(t *testing.T) {
	api, srv := newFakeAPI(t)
	backend := &fakeBackend{}
	r := start(t, enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{})), backend)
	api.waitReport(t, "for revision 1", revision(1))

	exp := time.Now().Add(time.Hour)
	rev := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, []wire.GrantEntry{
		{Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: exp},
	})
	rep := api.waitReport(t, "for revision 2", revision(rev))
	if rep.Elements != 1 || rep.Version != "test" {
		t.Errorf("report = %+v, want 1 element and version test", rep)
	}
	state, _, _ := backend.snapshot()
	now := time.Now()
	if !state.Allows(netip.MustParseAddr(srcA), firewall.TCP, 22, now) {
		t.Errorf("%s -> 22/tcp refused after the grant was applied; state %+v", srcA, state)
	}
	if state.Allows(netip.MustParseAddr(srcB), firewall.TCP, 22, now) {
		t.Errorf("%s -> 22/tcp accepted without a grant", srcB)
	}
	if state.Allows(netip.MustParseAddr(srcA), firewall.TCP, 22, exp.Add(time.Second)) {
		t.Errorf("%s -> 22/tcp still accepted after the deadline", srcA)
	}
	if st := r.agent.Status(); st.AppliedRevision != rev || st.LastError != "" || st.LastContact.IsZero() {
		t.Errorf("Status() = %+v, want revision %d, no error, a contact time", st, rev)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.badRequests) != 0 {
		t.Errorf("server refused queries: %v", api.badRequests)
	}
	if !slices.Contains(api.waits, "2s") {
		t.Errorf("long-polls sent waits %v, want the configured 2s", api.waits)
	}
}

func TestMalformedEntryIsReportedAndPreviousStateKept(t *testing.T) {
	api, srv := newFakeAPI(t)
	backend := &fakeBackend{}
	r := start(t, enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{})), backend)
	good := []wire.GrantEntry{{Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}}
	rev := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, good)
	api.waitReport(t, "for the good revision", revision(rev))
	before, applies, _ := backend.snapshot()

	bad := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, append(good, wire.GrantEntry{Source: "203.0.113.300/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}))
	failed := func(x wire.AgentReport) bool { return x.Revision == bad && strings.Contains(x.Error, "203.0.113.300") }
	rep := api.waitReport(t, "with the malformed revision's error", failed)
	if rep.Elements != 1 {
		t.Errorf("failed report says %d elements, want the 1 still in the kernel", rep.Elements)
	}
	// The agent retries (with backoff) rather than giving up on the revision.
	deadline := time.Now().Add(5 * time.Second)
	for api.countReports(failed) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := api.countReports(failed); n < 3 {
		t.Errorf("failed revision reported %d times, want retries", n)
	}
	after, applies2, _ := backend.snapshot()
	if !sameState(before, after) || applies2 != applies {
		t.Errorf("kernel changed by a malformed revision: %d -> %d applies, %+v -> %+v", applies, applies2, before, after)
	}
	if st := r.agent.Status(); st.AppliedRevision != rev || st.LastError == "" {
		t.Errorf("Status() = %+v, want applied revision %d and an error", st, rev)
	}

	fixed := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, nil)
	api.waitReport(t, "for the fixed revision", revision(fixed))
	if st := r.agent.Status(); st.AppliedRevision != fixed || st.LastError != "" {
		t.Errorf("Status() = %+v, want revision %d without error", st, fixed)
	}
}

func TestUnauthorizedStopsWithoutTouchingFirewall(t *testing.T) {
	api, srv := newFakeAPI(t)
	backend := &fakeBackend{}
	cfg := enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{}))

	t.Run("at start", func(t *testing.T) {
		api.force(http.StatusUnauthorized)
		err := start(t, cfg, backend).wait(t)
		if !errors.Is(err, ErrCredentialRejected) {
			t.Fatalf("Run = %v, want ErrCredentialRejected", err)
		}
		if _, applies, removed := backend.snapshot(); applies != 0 || removed {
			t.Errorf("backend touched: %d applies, removed %v", applies, removed)
		}
		api.force(0)
	})

	t.Run("after applying", func(t *testing.T) {
		r := start(t, cfg, backend)
		rev := api.update([]wire.Port{{Port: 22, Protocol: "tcp"}}, []wire.GrantEntry{{Source: srcA, Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}})
		api.waitReport(t, "for the revision", revision(rev))
		before, applies, _ := backend.snapshot()
		api.force(http.StatusUnauthorized)
		if err := r.wait(t); !errors.Is(err, ErrCredentialRejected) {
			t.Fatalf("Run = %v, want ErrCredentialRejected", err)
		}
		after, applies2, removed := backend.snapshot()
		if applies2 != applies || removed || !sameState(before, after) {
			t.Errorf("backend touched after 401: applies %d -> %d, removed %v", applies, applies2, removed)
		}
		if _, err := os.Stat(filepath.Join(cfg.StateDir, credentialName)); err != nil {
			t.Errorf("credential file gone after 401: %v", err)
		}
	})
}

func TestTargetRemovedRemovesTableAndCredential(t *testing.T) {
	api, srv := newFakeAPI(t)
	backend := &fakeBackend{}
	cfg := enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{}))
	r := start(t, cfg, backend)
	api.waitReport(t, "for revision 1", revision(1))
	api.force(http.StatusGone)
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v, want nil after 410", err)
	}
	if _, _, removed := backend.snapshot(); !removed {
		t.Error("Remove was not called after 410")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, credentialName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("credential file still there after 410 (stat: %v)", err)
	}
	// A target enrolled later from this directory starts from revision 0.
	if _, err := os.Stat(filepath.Join(cfg.StateDir, highWaterName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("applied-revision file still there after 410 (stat: %v)", err)
	}
}

func TestCredentialForAnotherServerIsRefused(t *testing.T) {
	api, srv := newFakeAPI(t)
	cfg := enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{}))
	cfg.ServerURL = "https://other.example"
	err := Run(context.Background(), cfg, &fakeBackend{})
	if err == nil || !strings.Contains(err.Error(), "is for server") {
		t.Fatalf("Run = %v, want a refusal to send the credential elsewhere", err)
	}
}

func TestToRuleset(t *testing.T) {
	local := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	exp := local.Add(time.Hour)
	grant := func(src, proto string) wire.GrantEntry {
		return wire.GrantEntry{Source: src, Protocol: proto, Port: 22, ExpiresAt: exp}
	}
	tests := []struct {
		name       string
		serverTime time.Time
		grants     []wire.GrantEntry
		protected  []wire.Port
		want       []firewall.Grant // nil with wantErr
		wantErr    string
	}{
		{
			name:       "clocks agree",
			serverTime: local,
			grants:     []wire.GrantEntry{grant(srcA+"/32", "tcp")},
			want:       []firewall.Grant{{Source: netip.MustParsePrefix(srcA + "/32"), Proto: firewall.TCP, Port: 22, Expires: exp}},
		},
		{
			name:       "agent behind by 10s closes 10s earlier by its clock",
			serverTime: local.Add(10 * time.Second),
			grants:     []wire.GrantEntry{grant(srcA+"/32", "tcp")},
			want:       []firewall.Grant{{Source: netip.MustParsePrefix(srcA + "/32"), Proto: firewall.TCP, Port: 22, Expires: exp.Add(-10 * time.Second)}},
		},
		{
			name:       "agent ahead by 10s keeps the deadline",
			serverTime: local.Add(-10 * time.Second),
			grants:     []wire.GrantEntry{grant(srcA+"/32", "tcp")},
			want:       []firewall.Grant{{Source: netip.MustParsePrefix(srcA + "/32"), Proto: firewall.TCP, Port: 22, Expires: exp}},
		},
		{
			name:   "no server time",
			grants: []wire.GrantEntry{grant(srcA+"/32", "tcp")},
			want:   []firewall.Grant{{Source: netip.MustParsePrefix(srcA + "/32"), Proto: firewall.TCP, Port: 22, Expires: exp}},
		},
		{
			name:       "udp, upper case, bare addresses and IPv6",
			serverTime: local,
			grants:     []wire.GrantEntry{grant(srcB, "UDP"), grant("2001:db8::/32", "tcp"), grant("2001:db8::7", "tcp")},
			want: []firewall.Grant{
				{Source: netip.MustParsePrefix(srcB + "/32"), Proto: firewall.UDP, Port: 22, Expires: exp},
				{Source: netip.MustParsePrefix("2001:db8::/32"), Proto: firewall.TCP, Port: 22, Expires: exp},
				{Source: netip.MustParsePrefix("2001:db8::7/128"), Proto: firewall.TCP, Port: 22, Expires: exp},
			},
		},
		{name: "bad prefix", grants: []wire.GrantEntry{grant("203.0.113.300/32", "tcp")}, wantErr: `source "203.0.113.300/32"`},
		{name: "bad prefix length", grants: []wire.GrantEntry{grant(srcA+"/33", "tcp")}, wantErr: "source"},
		{name: "not an address", grants: []wire.GrantEntry{grant("my-ip", "tcp")}, wantErr: "source"},
		{name: "unknown protocol", grants: []wire.GrantEntry{grant(srcA, "icmp")}, wantErr: "must be tcp or udp"},
		{name: "missing protocol", protected: []wire.Port{{Port: 22}}, wantErr: "must be tcp or udp"},
		{name: "port 0", protected: []wire.Port{{Port: 0, Protocol: "tcp"}}, wantErr: "port 0"},
		{name: "no deadline", grants: []wire.GrantEntry{{Source: srcA, Protocol: "tcp", Port: 22}}, wantErr: "no deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			protected := tt.protected
			if protected == nil {
				protected = []wire.Port{{Port: 22, Protocol: "tcp"}, {Port: 22, Protocol: "udp"}}
			}
			ds := wire.DesiredState{Revision: 3, ServerTime: tt.serverTime, Protected: protected, Grants: tt.grants}
			rs, err := toRuleset(ds, skewShift(ds.ServerTime, local), firewall.HostMode)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rs.Grants, tt.want) {
				t.Errorf("grants = %v, want %v", rs.Grants, tt.want)
			}
			if want := []firewall.PortKey{{Proto: firewall.TCP, Port: 22}, {Proto: firewall.UDP, Port: 22}}; !slices.Equal(rs.Protected, want) {
				t.Errorf("protected = %v, want %v", rs.Protected, want)
			}
		})
	}
}

func TestNextShift(t *testing.T) {
	const m = skewMargin
	tests := []struct {
		estimate, inUse, want time.Duration
	}{
		{0, 0, 0},
		{3 * time.Millisecond, 0, 3*time.Millisecond + m},                // behind at all: never use less than the estimate
		{0, 3*time.Millisecond + m, 3*time.Millisecond + m},              // jitter back down: keep, no rewrite
		{10 * time.Second, m, 10*time.Second + m},                        // fell behind: move at once
		{10*time.Second + m/2, 10*time.Second + m, 10*time.Second + m},   // within the band
		{10*time.Second + 2*m, 10*time.Second + m, 10*time.Second + 3*m}, // above the band
		{10*time.Second - 2*m, 10*time.Second + m, 10*time.Second - m},   // well below: relax
		{0, 10 * time.Second, 0},                                         // clock fixed
	}
	for _, tt := range tests {
		if got := nextShift(tt.estimate, tt.inUse); got != tt.want {
			t.Errorf("nextShift(%v, %v) = %v, want %v", tt.estimate, tt.inUse, got, tt.want)
		}
		if got := nextShift(tt.estimate, tt.inUse); got < tt.estimate {
			t.Errorf("nextShift(%v, %v) = %v is below the estimate: a grant would close late", tt.estimate, tt.inUse, got)
		}
	}
}

// memServer is an in-memory server for tests in a synctest bubble, where
// real sockets would stop the fake clock.
type memServer struct {
	mu      sync.Mutex
	down    bool
	ds      wire.DesiredState
	offset  time.Duration // server clock minus agent clock
	changed chan struct{}
	polls   int
	reports []wire.AgentReport
}

var errUnreachable = errors.New("dial tcp 192.0.2.1:443: connect: connection refused")

func newMemServer(ds wire.DesiredState) *memServer {
	return &memServer{ds: ds, changed: make(chan struct{})}
}

func (m *memServer) Desired(ctx context.Context, after int64, wait time.Duration) (wire.DesiredState, error) {
	m.mu.Lock()
	m.polls++
	if m.down {
		m.mu.Unlock()
		return wire.DesiredState{}, fmt.Errorf("fetching desired state: %w", errUnreachable)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for m.ds.Revision <= after {
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			m.mu.Lock()
			goto answer
		case <-ctx.Done():
			return wire.DesiredState{}, ctx.Err()
		}
		m.mu.Lock()
	}
answer:
	defer m.mu.Unlock()
	if m.down {
		return wire.DesiredState{}, fmt.Errorf("fetching desired state: %w", errUnreachable)
	}
	ds := m.ds
	ds.ServerTime = time.Now().Add(m.offset)
	return ds, nil
}

func (m *memServer) Report(ctx context.Context, r wire.AgentReport) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errUnreachable
	}
	m.reports = append(m.reports, r)
	return nil
}

func (m *memServer) setDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

func (m *memServer) counts() (polls, reports int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.polls, len(m.reports)
}

// runInBubble starts an agent on srv inside the current synctest bubble and
// returns a function that stops it and returns Run's result.
func runInBubble(t *testing.T, srv server, backend firewall.Backend, cfg Config) (*Agent, func() error) {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(&syncBuffer{})
	}
	a, err := New(cfg, backend)
	if err != nil {
		t.Fatal(err)
	}
	a.srv = srv
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, func() error { cancel(); return <-done }
}

func protectedSSH(rev int64, grants ...wire.GrantEntry) wire.DesiredState {
	return wire.DesiredState{Target: "web-1", Revision: rev, Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}, Grants: grants}
}

func TestServerDownLeavesFirewallUntouched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The kernel holds a gate from an earlier run; nobody can be reached.
		earlier := firewall.State{
			Protected: []firewall.PortKey{{Proto: firewall.TCP, Port: 22}},
			Elements: []firewall.Element{{From: netip.MustParseAddr(srcA), To: netip.MustParseAddr(srcA),
				Proto: firewall.TCP, Port: 22, Expires: time.Now().Add(time.Hour)}},
		}
		backend := &fakeBackend{}
		backend.set(earlier, nil)
		srv := newMemServer(protectedSSH(1))
		srv.setDown(true)
		a, stop := runInBubble(t, srv, backend, Config{})

		time.Sleep(2 * time.Minute)
		synctest.Wait()
		state, applies, removed := backend.snapshot()
		if applies != 0 || removed || !sameState(state, earlier) {
			t.Errorf("firewall touched while the server was down: %d applies, removed %v", applies, removed)
		}
		// Backoff 200ms doubling to 10s: about 17 polls in 2 minutes.
		if polls, _ := srv.counts(); polls < 10 || polls > 40 {
			t.Errorf("%d polls in 2 minutes of outage, want retries with capped backoff (10..40)", polls)
		}
		if st := a.Status(); !strings.Contains(st.LastError, "connection refused") || !st.LastContact.IsZero() {
			t.Errorf("Status() = %+v, want the connection error and no contact", st)
		}

		// The server comes back: its state is applied promptly (backoff cap 10s).
		srv.setDown(false)
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if st := a.Status(); st.AppliedRevision != 1 {
			t.Fatalf("Status() = %+v after the server came back, want revision 1", st)
		}

		// It goes away again: the last state stays; resyncs re-apply it, unchanged.
		state, _, _ = backend.snapshot()
		srv.setDown(true)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		after, _, removed := backend.snapshot()
		if removed || !sameState(state, after) {
			t.Errorf("firewall changed during the second outage: %+v -> %+v", state, after)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestResyncRepairsEditedTable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := &fakeBackend{}
		grant := wire.GrantEntry{Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}
		srv := newMemServer(protectedSSH(1, grant))
		var logs syncBuffer
		_, stop := runInBubble(t, srv, backend, Config{ResyncEvery: time.Minute, Logger: testLogger(&logs)})
		time.Sleep(time.Second)
		synctest.Wait()
		want, applies, _ := backend.snapshot()
		if applies != 1 || len(want.Elements) != 1 {
			t.Fatalf("after start: %d applies, state %+v; want one apply with one element", applies, want)
		}

		backend.set(firewall.State{}, nil) // someone ran `nft flush table`
		time.Sleep(time.Minute)
		synctest.Wait()
		got, _, _ := backend.snapshot()
		if !sameState(got, want) {
			t.Errorf("state after resync = %+v, want %+v", got, want)
		}
		if !strings.Contains(logs.String(), "repaired") {
			t.Errorf("repair not logged:\n%s", logs.String())
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestApplyFailureIsReportedAndRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := &fakeBackend{}
		backend.set(firewall.State{}, errors.New("netlink: operation not permitted"))
		srv := newMemServer(protectedSSH(1))
		a, stop := runInBubble(t, srv, backend, Config{})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		_, applies, _ := backend.snapshot()
		if applies < 3 || applies > 12 {
			t.Errorf("%d apply attempts in 5s, want retries with backoff (3..12)", applies)
		}
		srv.mu.Lock()
		if len(srv.reports) == 0 || srv.reports[0].Revision != 1 || !strings.Contains(srv.reports[0].Error, "not permitted") {
			t.Errorf("reports = %+v, want revision 1 with the apply error", srv.reports)
		}
		srv.mu.Unlock()
		if st := a.Status(); st.AppliedRevision != 0 || st.LastError == "" {
			t.Errorf("Status() = %+v, want nothing applied and an error", st)
		}

		backend.set(firewall.State{}, nil)
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if st := a.Status(); st.AppliedRevision != 1 || st.LastError != "" {
			t.Errorf("Status() = %+v after the fault cleared, want revision 1", st)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestSkewMovesKernelDeadlinesEarlier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := &fakeBackend{}
		// The server's clock is an hour ahead and the grant ends 2h after the
		// server's now: the agent must close it 2h from its own now, not 3h.
		srv := newMemServer(protectedSSH(1, wire.GrantEntry{Source: srcA, Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(3 * time.Hour)}))
		srv.offset = time.Hour
		var logs syncBuffer
		a, stop := runInBubble(t, srv, backend, Config{Logger: testLogger(&logs)})
		time.Sleep(time.Second)
		synctest.Wait()
		state, _, _ := backend.snapshot()
		if len(state.Elements) != 1 {
			t.Fatalf("state = %+v, want one element", state)
		}
		left := time.Until(state.Elements[0].Expires)
		if left > 2*time.Hour-time.Second || left < 2*time.Hour-2*time.Second { // 1s slept, 100ms margin
			t.Errorf("element closes in %v by the agent's clock, want just under 2h (the server's reading)", left)
		}
		if st := a.Status(); st.Skew < 59*time.Minute {
			t.Errorf("Status().Skew = %v, want about 1h", st.Skew)
		}
		if !strings.Contains(logs.String(), "clock skew") {
			t.Errorf("large skew not logged:\n%s", logs.String())
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestDesiredStateForAnotherTargetIsRefused(t *testing.T) {
	a, err := New(Config{StateDir: t.TempDir()}, &fakeBackend{})
	if err != nil {
		t.Fatal(err)
	}
	a.setTarget("web-1")
	if err := a.checkTarget(wire.DesiredState{Target: "db-1"}); err == nil {
		t.Error("desired state of db-1 accepted by the agent of web-1")
	}
	if err := a.checkTarget(wire.DesiredState{Target: "web-1"}); err != nil {
		t.Errorf("own desired state refused: %v", err)
	}
}

// TestLeftoverAgentOfRemovedTargetLeavesTheTable: the host is target web-1
// now; a leftover agent of a removed target (an old unit, another state
// directory) takes the host lock while web-1's agent restarts and hears 410.
// It deleted the table, opening every port web-1 protects. The host lock
// records which target programmed the table: the leftover agent leaves it,
// deletes only its own credential and stops; web-1's own agent, told the
// same, deletes it.
func TestLeftoverAgentOfRemovedTargetLeavesTheTable(t *testing.T) {
	lockDir := t.TempDir()
	backend := &fakeBackend{}
	apiX, srvX := newFakeAPI(t)
	cfgX := enrolledConfig(t, apiX, srvX.URL, testLogger(&syncBuffer{}))
	lock, err := LockHost(lockDir, cfgX.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	cfgX.Table = lock
	x := start(t, cfgX, backend)
	apiX.waitReport(t, "for revision 1", revision(1))
	if err := x.stop(t); err != nil {
		t.Fatal(err)
	}
	lock.Release()

	apiY, srvY := newFakeAPI(t)
	apiY.target = "web-old"
	cfgY := enrolledConfig(t, apiY, srvY.URL, testLogger(&syncBuffer{}))
	if lock, err = LockHost(lockDir, cfgY.StateDir); err != nil {
		t.Fatal(err)
	}
	cfgY.Table = lock
	apiY.force(http.StatusGone)
	if err := start(t, cfgY, backend).wait(t); err != nil {
		t.Fatalf("leftover agent: Run = %v, want nil after 410", err)
	}
	if _, _, removed := backend.snapshot(); removed {
		t.Error("the leftover agent of a removed target deleted the table web-1's agent programmed")
	}
	if _, err := os.Stat(filepath.Join(cfgY.StateDir, credentialName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the leftover agent kept its credential (stat: %v)", err)
	}
	lock.Release()

	if lock, err = LockHost(lockDir, cfgX.StateDir); err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	cfgX.Table = lock
	apiX.force(http.StatusGone)
	if err := start(t, cfgX, backend).wait(t); err != nil {
		t.Fatalf("web-1's agent: Run = %v, want nil after 410", err)
	}
	if _, _, removed := backend.snapshot(); !removed {
		t.Error("web-1's own agent did not delete its table after 410")
	}
}
