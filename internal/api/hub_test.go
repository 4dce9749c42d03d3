package api_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestHubWakesOnlyChangedRequest: client long-polls on requests X and Y of
// one target; another request of the target is made (a change there) and X
// is revoked. Only X's waiter wakes (one wake-up in all), and Y's keeps
// waiting without having been woken. Before, every change to the target
// woke every waiter of any of its requests, and each re-read its request:
// 2 wake-ups per change here, ~55 µs per waiter per change with 1,000.
func TestHubWakesOnlyChangedRequest(t *testing.T) {
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	create := func(src string) wire.Request {
		t.Helper()
		r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src,
			Duration: wire.Duration(time.Hour), Reason: "wake test"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	x, y := create("192.0.2.1"), create("192.0.2.2")
	type answer struct {
		r   wire.Request
		err error
	}
	xDone, yDone := make(chan answer, 1), make(chan answer, 1)
	for _, w := range []struct {
		r    wire.Request
		done chan answer
	}{{x, xDone}, {y, yDone}} {
		go func() {
			r, err := e.c.WaitRequest(ctx, w.r.ID, w.r.State, 50*time.Second)
			w.done <- answer{r, err}
		}()
	}
	for hub.RequestWaiters("web-01") < 2 {
		time.Sleep(time.Millisecond)
	}
	woken := hub.Wakeups()
	create("192.0.2.3") // a change to the target, none to X or Y
	if _, err := e.c.Revoke(ctx, x.ID, "wake test"); err != nil {
		t.Fatal(err)
	}
	a := <-xDone
	if a.err != nil || a.r.State != "revoked" {
		t.Fatalf("X's long-poll answered %+v, %v; want revoked", a.r.State, a.err)
	}
	if n := hub.Wakeups() - woken; n != 1 {
		t.Errorf("%d waiters woken by two changes to the target, one of them to X; want 1 (X's)", n)
	}
	select {
	case a := <-yDone:
		t.Fatalf("Y's long-poll answered (%s, %v) though Y did not change", a.r.State, a.err)
	default:
	}
	if n := hub.RequestWaiters("web-01"); n != 1 {
		t.Errorf("%d waiters left on web-01, want 1 (Y's)", n)
	}
	// Y's turn: its change wakes it, and it alone.
	if _, err := e.c.Revoke(ctx, y.ID, "wake test"); err != nil {
		t.Fatal(err)
	}
	if a := <-yDone; a.err != nil || a.r.State != "revoked" {
		t.Fatalf("Y's long-poll answered %+v, %v; want revoked", a.r.State, a.err)
	}
	if n := hub.Wakeups() - woken; n != 2 {
		t.Errorf("%d wake-ups after X and Y changed, want 2", n)
	}
}

// TestHubPreciseOnSQLite: on SQLite the store names the requests each commit
// moved, so waiters on X and Y of a target cost no read when other requests
// of the target change (a new request, its activation by the agent) and X's
// waiter wakes on X's revocation, all with no read of request versions.
// Before, every change to the target read the versions of all the requests
// waited on there (one query of 1,000 ids per change with 1,000 waiters),
// and a waiter registering after any change anywhere asked for such a read.
func TestHubPreciseOnSQLite(t *testing.T) {
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	create := func(src string) wire.Request {
		t.Helper()
		r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src,
			Duration: wire.Duration(time.Hour), Reason: "wake test"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	x, y := create("192.0.2.1"), create("192.0.2.2")
	xDone, yDone := make(chan wire.Request, 1), make(chan wire.Request, 1)
	for _, w := range []struct {
		r    wire.Request
		done chan wire.Request
	}{{x, xDone}, {y, yDone}} {
		go func() {
			r, err := e.c.WaitRequestVersion(ctx, w.r.ID, w.r.Version, "50s")
			if err != nil {
				t.Error(err)
			}
			w.done <- r
		}()
	}
	for hub.RequestWaiters("web-01") < 2 {
		time.Sleep(time.Millisecond)
	}
	reads, woken := hub.VersionReads(), hub.Wakeups()
	z := create("192.0.2.3")
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.c.Request(ctx, z.ID); err != nil || r.State != "active" {
		t.Fatalf("Z = %s, %v; want active (the agent confirmed it)", r.State, err)
	}
	// X and Y were activated by that report too: their waiters woke.
	for _, done := range []chan wire.Request{xDone, yDone} {
		if r := <-done; r.State != "active" {
			t.Fatalf("a waiter answered %s, want active", r.State)
		}
	}
	if n := hub.Wakeups() - woken; n != 2 {
		t.Errorf("%d waiters woken, want 2 (X and Y, activated)", n)
	}
	// Wait on X again; revoke Y: X's waiter stays.
	x, _ = e.c.Request(ctx, x.ID)
	go func() {
		r, err := e.c.WaitRequestVersion(ctx, x.ID, x.Version, "50s")
		if err != nil && ctx.Err() == nil {
			t.Error(err)
		}
		xDone <- r
	}()
	for hub.RequestWaiters("web-01") < 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := e.c.Revoke(ctx, y.ID, "wake test"); err != nil {
		t.Fatal(err)
	}
	create("192.0.2.4")
	// The wake-ups happen before the commit's callers are answered.
	if n := hub.Wakeups() - woken; n != 2 {
		t.Errorf("%d waiters woken after Y's revocation and a new request, want still 2 (X's waiter untouched)", n)
	}
	if _, err := e.c.Revoke(ctx, x.ID, "wake test"); err != nil {
		t.Fatal(err)
	}
	if r := <-xDone; r.State != "revoked" {
		t.Fatalf("X's long-poll answered %s, want revoked", r.State)
	}
	if n := hub.VersionReads() - reads; n != 0 {
		t.Errorf("%d reads of request versions, want 0 (the store names the requests it changed)", n)
	}
}

// TestHubNotifyRunsTheWokenFirst: the long-poll a change wakes (an agent
// waiting for a grant) runs before Notify returns to the notifier, whose
// own work after the commit (its reads, its answer to the client) would
// otherwise go first: on one processor the woken goroutine waited for the
// notifier to block. Checked on one processor, where "before" is an order
// and not a timing; the scheduler may pick the notifier first now and then
// for fairness, hence 90 of 100 rounds.
func TestHubNotifyRunsTheWokenFirst(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := api.NewHub()
	const rounds = 100
	first := 0
	for range rounds {
		ch := h.Watch("web-01")
		var ran atomic.Bool
		done := make(chan struct{})
		go func() {
			<-ch
			ran.Store(true)
			close(done)
		}()
		runtime.Gosched() // the watcher parks on its channel
		h.Notify("web-01")
		if ran.Load() {
			first++
		}
		<-done
	}
	if first < rounds*9/10 {
		t.Errorf("the woken watcher ran before Notify returned in %d of %d rounds, want at least %d", first, rounds, rounds*9/10)
	}
}

// TestHubSeq: the hub counts each target's notifications, once per
// notification however often it names the target, and WatchSeq's channel
// closes at the first notification after the count it returned. A report
// carrying its poll relies on it: its poll waits without reading the target
// again only while the count is the one the report's own notification left
// (api.longPoll), so a change committed after the report read the target's
// revision, which notifies the target, is never waited through.
func TestHubSeq(t *testing.T) {
	h := api.NewHub()
	if n := h.Seq("web-01"); n != 0 {
		t.Fatalf("Seq of a target never notified = %d, want 0", n)
	}
	h.Notify("web-01", "web-02", "web-01")
	one := h.Seq("web-01")
	if one == 0 || h.Seq("web-02") == 0 {
		t.Fatalf("after one notification naming web-01 twice: Seq %d, %d; want both moved", one, h.Seq("web-02"))
	}
	ch, n := h.WatchSeq("web-01")
	if n != one {
		t.Fatalf("WatchSeq = %d, want Seq's %d", n, one)
	}
	h.Notify("web-02")
	select {
	case <-ch:
		t.Fatal("web-01's channel closed by a notification of web-02")
	default:
	}
	if n := h.Seq("web-01"); n != one {
		t.Fatalf("Seq of web-01 after web-02's notification = %d, want %d", n, one)
	}
	before, after := h.NotifySeq("web-01", "web-02")
	select {
	case <-ch:
	default:
		t.Fatal("web-01's channel open after its notification")
	}
	if before != one || after == one || h.Seq("web-01") != after {
		t.Fatalf("NotifySeq = %d, %d, Seq then %d; want %d, another, the same", before, after, h.Seq("web-01"), one)
	}
}
