package api_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// newPipelinedEnv is newEnv on a store with pipelined durability on (a
// server's default; store.SetPipelinedDurability makes sure of it whatever
// another test set), whose syncs the test can hold.
func newPipelinedEnv(t *testing.T) *env {
	t.Helper()
	was := store.SetPipelinedDurability(true)
	e := newEnv(t)
	store.SetPipelinedDurability(was)
	return e
}

// TestAnswersWaitForTheSync: on SQLite a commit is read by every other
// connection before the syncer fsynced it (store/syncer.go). An answer
// built from such a read (a request listed pending, its audit event read
// or exported, a gauge scraped) tells a state change that a power loss can
// take back to someone who is not its caller. Here the fsync is held after
// a create committed: the request list, the audit trail, its export and
// /metrics answer nothing until the sync returned, then show the request.
// Before, all four answered at once with the unsynced request (the test
// failed on "answered before the sync").
func TestAnswersWaitForTheSync(t *testing.T) {
	e := newPipelinedEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01") // its agent never reports: the request stays pending
	e.setPolicy(t, "web-01", sshPolicy())

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.st.SyncWith(func(f *os.File) error {
		once.Do(func() { close(entered) })
		<-release
		return f.Sync()
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(func() { releaseOnce(); e.st.SyncWith(nil) })

	created := make(chan error, 1)
	go func() {
		_, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
			Duration: wire.Duration(30 * time.Minute), Reason: "unsynced"})
		created <- err
	}()
	<-entered
	// Committed (read here without waiting), not synced: the create is
	// not answered.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if n, err := e.st.CountRequests(ctx, access.Pending); err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the create never committed")
		}
	}

	type answer struct {
		path   string
		status int
		body   string
	}
	paths := []string{"/api/v1/requests?target=web-01", "/api/v1/audit?action=request.created",
		"/api/v1/audit/export", "/metrics"}
	answers := make(chan answer, len(paths))
	waits0 := e.st.DurableWaits()
	for _, p := range paths {
		go func() {
			status, b := e.raw(t, http.MethodGet, p, e.admin, "", nil)
			answers <- answer{p, status, string(b)}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); e.st.DurableWaits() < waits0+int64(len(paths)); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			break // the answers below say which did not wait
		}
	}
	select {
	case a := <-answers:
		t.Fatalf("GET %s answered before the sync: %d %.300s", a.path, a.status, a.body)
	case err := <-created:
		t.Fatalf("the create was answered before its sync: %v", err)
	default:
	}

	releaseOnce()
	if err := <-created; err != nil {
		t.Fatalf("create: %v", err)
	}
	for range paths {
		a := <-answers
		if a.status != http.StatusOK || !strings.Contains(a.body, "unsynced") && !strings.Contains(a.body, "jitgate_") {
			t.Errorf("GET %s after the sync: %d %.300s; want the request", a.path, a.status, a.body)
		}
	}
}

// TestAnswersFailClosedAfterAFailedSync: when the fsync of a commit fails,
// its caller is told it failed (store/syncer.go), but the commit is in the
// database file's pages and every other connection reads it. The API must
// not show it: every later answer that reads state fails (the store fails
// closed until the server restarts), while /healthz still answers and
// /readyz says why. Before, the request list showed the request whose
// create had just failed, pending (the test failed on "200").
func TestAnswersFailClosedAfterAFailedSync(t *testing.T) {
	e := newPipelinedEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	e.st.SyncWith(func(*os.File) error { return syscall.EIO })
	_, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(30 * time.Minute), Reason: "sync failed"})
	if err == nil {
		t.Fatal("create with the sync failing: done, want an error")
	}
	if status, b := e.raw(t, http.MethodGet, "/api/v1/requests?target=web-01", e.admin, "", nil); status < 500 || strings.Contains(string(b), "sync failed") {
		t.Errorf("request list after a failed sync: %d %.300s; want a 5xx without the failed create", status, b)
	}
	if status, b := e.raw(t, http.MethodGet, "/api/v1/audit?action=request.created", e.admin, "", nil); status < 500 || strings.Contains(string(b), "sync failed") {
		t.Errorf("audit after a failed sync: %d %.300s; want a 5xx without the failed create", status, b)
	}
	if status, _ := e.raw(t, http.MethodGet, "/healthz", "", "", nil); status != http.StatusOK {
		t.Errorf("/healthz after a failed sync: %d, want 200 (the process answers)", status)
	}
	if status, _ := e.raw(t, http.MethodGet, "/readyz", "", "", nil); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz after a failed sync: %d, want 503", status)
	}
}

// TestLongPollReadsDuringTheSync: an agent's long-poll is woken when a grant
// commits, not when its sync ends (store.SubscribeCommitted, Hub.Committed),
// and does its reads and builds its answer while the sync runs; its answer
// then waits, with nothing written, until the sync covers what it read
// (durableAnswers), and a failed sync fails it closed. Here the sync of a
// create is held: the poll has read the delta (its read left the wait to the
// answer) and waits, with nothing sent; released, the answer is the grant;
// failed, it is an error and no grant. Before, the poll slept through the
// sync (woken by the change feed after it) and the test failed on "the poll
// did not read during the sync".
//
// The snapshot cases take the other answer path (an agent that takes no
// deltas: AgentTarget, then DesiredHead and DesiredGrants streamed through
// the writer), whose reads leave their waits to the answer too: its head
// waits for the sync before its first byte (they passed before; they keep
// the streamed answer under the same rule).
func TestLongPollReadsDuringTheSync(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fail     bool
		snapshot bool
	}{{"sync completes", false, false}, {"sync fails", true, false},
		{"snapshot, sync completes", false, true}, {"snapshot, sync fails", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var hub *api.Hub
			was := store.SetPipelinedDurability(true)
			e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
			store.SetPipelinedDurability(was)
			agent := e.addTarget(t, "web-01", "198.51.100.10")
			e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
			cur, err := agent.DesiredSince(ctx, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}

			type answer struct {
				ds  wire.DesiredState
				err error
			}
			polled := make(chan answer, 1)
			go func() {
				since := cur.Revision
				if tc.snapshot {
					since = 0
				}
				ds, err := agent.DesiredSince(ctx, cur.Revision, since, 30*time.Second)
				polled <- answer{ds, err}
			}()
			waitFor(t, "the poll to wait for a change", func() bool { return hub.Parked() == 1 })

			release := make(chan struct{})
			e.st.SyncWith(func(f *os.File) error {
				<-release
				if tc.fail {
					return syscall.EIO
				}
				return f.Sync()
			})
			releaseOnce := sync.OnceFunc(func() { close(release) })
			t.Cleanup(func() { releaseOnce(); e.st.SyncWith(nil) })
			waits0, left0 := e.st.DurableWaits(), e.st.WaitsLeftToAnswers()
			created := make(chan error, 1)
			go func() {
				_, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
					Duration: wire.Duration(30 * time.Minute), Reason: "overlap"})
				created <- err
			}()
			// The poll's answer waits for the sync (durableAnswers)
			// after its delta's read, which did not wait itself.
			waitFor(t, "the poll to read during the sync", func() bool {
				return e.st.DurableWaits() > waits0 && e.st.WaitsLeftToAnswers() > left0
			})
			select {
			case a := <-polled:
				t.Fatalf("the poll answered before the sync: %+v, %v", a.ds, a.err)
			case err := <-created:
				t.Fatalf("the create was answered before its sync: %v", err)
			default:
			}

			releaseOnce()
			a, err := <-polled, <-created
			if tc.fail {
				if err == nil || a.err == nil || len(a.ds.Grants) > 0 {
					t.Fatalf("after a failed sync: create %v, poll %+v %v; want both failed, no grant", err, a.ds, a.err)
				}
				return
			}
			if err != nil || a.err != nil {
				t.Fatalf("after the sync: create %v, poll %v", err, a.err)
			}
			wantSince := cur.Revision
			if tc.snapshot {
				wantSince = 0
			}
			if a.ds.Revision <= cur.Revision || a.ds.Since != wantSince || len(a.ds.Grants) != 1 || !strings.HasPrefix(a.ds.Grants[0].Source, "198.51.100.7") {
				t.Errorf("the poll's answer after the sync: %+v; want the delta with the new grant", a.ds)
			}
		})
	}
}
