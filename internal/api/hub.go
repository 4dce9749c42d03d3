package api

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// Hub wakes long-polls (agents waiting for desired state, clients waiting
// for a request to change) when a target's state changes. A waiter takes the
// channel before reading state, so a change committed between the read and
// the wait is never missed: the channel is already closed.
//
// Client long-polls on requests are told apart: a change to a target does
// not wake every client waiting on any request of it. The hub reads the
// versions of all the requests waited on at that target in one query
// (Deps.Store.RequestVersions) and wakes only the waiters whose request
// moved past the version they hold; the others keep waiting without a read
// of their own. At most one such check per target runs at a time; changes
// arriving during it are coalesced into one more check.
//
// When the store tells every change of a request's version as it commits
// (store.RequestChangesComplete: SQLite, one process writes), the hub is
// precise: the store names the requests each commit moved
// (store.SubscribeRequests → RequestsChanged) and only their waiters wake,
// with no read at all; a change of a target costs its request waiters
// nothing.
type Hub struct {
	mu sync.Mutex
	ch map[string]chan struct{}
	// gen counts notifications: a request waiter that read its request
	// before the latest one asks for a check of its target as it registers
	// (the change may be the one it has not seen).
	gen uint64
	// reqs are the request waiters by target.
	reqs map[string]*requestWaiters
	// versions reads the current versions of requests (nil: request
	// waiters wake at every change of their target).
	versions func(ctx context.Context, target string, ids []string) (map[string]int64, error)
	// woken counts request waiters woken (tests compare it).
	woken atomic.Int64
	// parked counts the agents' long-polls waiting for a change (Parked).
	parked atomic.Int64
	// handed counts request waiters given their request with the wake-up
	// (WatchRequestRow; tests compare it).
	handed atomic.Int64
	// precise: request waiters wake through RequestsChanged only. byID
	// are their waiters by request; changedAt is the gen at which each
	// request last changed, forgotten below floor (a waiter that read
	// before floor wakes at once).
	precise   bool
	byID      map[string]map[*requestWaiter]struct{}
	changedAt map[string]uint64
	// changes counts the notifications that named each request of
	// changedAt (CreatedGen).
	changes map[string]uint32
	floor   uint64
	// checks counts version reads (tests compare it).
	checks atomic.Int64
	// seq is, for each target, the hub's notification count (gen) at the
	// last notification that named it (Seq): a reader that knows a
	// target's state as of some value knows it is still current while the
	// value has not moved. Every value is new (gen only grows), so the map
	// can be forgotten (seqFloor) without a target's value ever coming
	// back to one a reader holds.
	seq map[string]uint64
	// seqFloor is gen when seq was last forgotten (maxSeq): the value of
	// every target it does not name.
	seqFloor uint64
}

// maxChangedAt bounds the requests whose last change a precise hub
// remembers.
const maxChangedAt = 65536

// maxSeq bounds the targets whose last notification the hub remembers
// (Seq). Every target name ever notified kept an entry, never removed: a
// fleet whose hosts come and go under new names grew it for as long as the
// server ran.
const maxSeq = 65536

type requestWaiter struct {
	target  string
	id      string
	version int64
	ch      chan struct{}
	// row is the request as the commit that woke the waiter left it, when
	// the store handed it over (RequestsChanged); nil: read it.
	row *store.Request
}

type requestWaiters struct {
	set             map[*requestWaiter]struct{}
	checking, again bool
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{ch: map[string]chan struct{}{}, reqs: map[string]*requestWaiters{}, seq: map[string]uint64{}}
}

// readVersionsWith sets how the hub reads request versions (api.New gives
// it the store's).
func (h *Hub) readVersionsWith(f func(ctx context.Context, target string, ids []string) (map[string]int64, error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.versions = f
}

// preciseFrom makes h precise (see Hub): subscribe registers its
// RequestsChanged with the store.
func (h *Hub) preciseFrom(subscribe func(func(ids []string, rows []store.Request)) func()) {
	h.mu.Lock()
	h.precise = true
	h.byID = map[string]map[*requestWaiter]struct{}{}
	h.changedAt = map[string]uint64{}
	h.changes = map[string]uint32{}
	h.mu.Unlock()
	subscribe(h.RequestsChanged)
}

// RequestsChanged wakes the waiters of requests ids, whose versions a
// commit just moved (a precise hub's only wake-up of request waiters). rows
// are some of them as that commit left them (store.SubscribeRequests): a
// waiter woken for one of those gets it (WatchRequestRow), and need not read
// it again.
func (h *Hub) RequestsChanged(ids []string, rows []store.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.precise {
		return
	}
	h.gen++
	// The rows by id, indexed at the first woken waiter: a report that
	// activates n waited-on requests must not scan the n rows for each (n²
	// under the hub's lock, on the goroutine that answers every write:
	// 160 ms at 10,000; BenchmarkRequestsChangedRows).
	var rowOf map[string]*store.Request
	for _, id := range ids {
		if h.changedAt[id] != h.gen {
			h.changes[id]++ // once per notification, however often named
		}
		h.changedAt[id] = h.gen
		var row *store.Request
		if len(h.byID[id]) > 0 && len(rows) > 0 {
			if rowOf == nil {
				rowOf = make(map[string]*store.Request, len(rows))
				for i := range rows {
					rowOf[rows[i].ID] = &rows[i]
				}
			}
			row = rowOf[id]
		}
		for w := range h.byID[id] {
			if row != nil && row.Version > w.version {
				w.row = row
			}
			close(w.ch)
			h.woken.Add(1)
			if rw := h.reqs[w.target]; rw != nil {
				delete(rw.set, w)
				if len(rw.set) == 0 {
					delete(h.reqs, w.target)
				}
			}
		}
		delete(h.byID, id)
	}
	if len(h.changedAt) > maxChangedAt {
		h.changedAt = map[string]uint64{}
		h.changes = map[string]uint32{}
		h.floor = h.gen
	}
}

// Watch returns a channel closed at the next change of target.
func (h *Hub) Watch(target string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watchLocked(target)
}

func (h *Hub) watchLocked(target string) chan struct{} {
	c, ok := h.ch[target]
	if !ok {
		c = make(chan struct{})
		h.ch[target] = c
	}
	return c
}

// Seq returns a value that moves (grows) at every notification naming
// target, and only then. State of the target read after Seq returned n is
// still current while Seq returns n: every commit that changes a target
// notifies it after the commit (the store's change feed, which also brings
// other replicas' changes).
func (h *Hub) Seq(target string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seqLocked(target)
}

func (h *Hub) seqLocked(target string) uint64 {
	if n, ok := h.seq[target]; ok {
		return n
	}
	return h.seqFloor
}

// WatchSeq is Watch and Seq at once: the channel closes at the first
// notification of target after the value returned.
func (h *Hub) WatchSeq(target string) (<-chan struct{}, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watchLocked(target), h.seqLocked(target)
}

// NotifySeq is Notify of target and others that also returns target's Seq
// just before this notification and just after it, read with it (under one
// lock): a caller that read Seq(target) = before earlier knows that no other
// notification named target in between.
func (h *Hub) NotifySeq(target string, others ...string) (before, after uint64) {
	h.mu.Lock()
	before = h.seqLocked(target)
	woke := h.notifyLocked(append([]string{target}, others...))
	after = h.seqLocked(target)
	h.mu.Unlock()
	if woke {
		runtime.Gosched() // as Notify
	}
	return before, after
}

// Gen returns the hub's notification count. A request waiter takes it
// before reading its request and hands it to WatchRequest.
func (h *Hub) Gen() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}

// CreatedGen is the generation a create that waits on its new request id
// hands to WatchRequest, given gen taken before its commit: on a precise
// hub, the generation of the notification of that commit (published before
// the create returned) when it is the only one that named id, so that the
// create's own change does not wake the wait at once (a spurious wake-up
// and a read); else gen (a later change, or counts forgotten since gen:
// WatchRequest wakes at once, as it must).
func (h *Hub) CreatedGen(id string, gen uint64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.precise && gen >= h.floor && h.changes[id] == 1 && h.changedAt[id] > gen {
		return h.changedAt[id]
	}
	return gen
}

// WatchRequest returns a channel closed once request id of target may have
// a version other than version (read after Gen returned gen), and a cancel
// to call when the wait ends.
func (h *Hub) WatchRequest(target, id string, version int64, gen uint64) (<-chan struct{}, func()) {
	ch, done := h.WatchRequestRow(target, id, version, gen)
	return ch, func() { done() }
}

// WatchRequestRow is WatchRequest whose end (done, called once the wait is
// over) also returns the request as the commit that woke the wait left it,
// when the store handed it over with the wake-up (ok true; a precise hub,
// the agent's report activating it); else the caller reads it.
func (h *Hub) WatchRequestRow(target, id string, version int64, gen uint64) (<-chan struct{}, func() (row store.Request, ok bool)) {
	none := func() (store.Request, bool) { return store.Request{}, false }
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.versions == nil {
		return h.watchLocked(target), none
	}
	w := &requestWaiter{target: target, id: id, version: version, ch: make(chan struct{})}
	if h.precise {
		if gen < h.floor || h.changedAt[id] > gen {
			// Changed since the waiter read it (or maybe, beyond
			// what the hub remembers): wake at once.
			close(w.ch)
			return w.ch, none
		}
		if h.byID[id] == nil {
			h.byID[id] = map[*requestWaiter]struct{}{}
		}
		h.byID[id][w] = struct{}{}
	}
	rw := h.reqs[target]
	if rw == nil {
		rw = &requestWaiters{set: map[*requestWaiter]struct{}{}}
		h.reqs[target] = rw
	}
	rw.set[w] = struct{}{}
	if h.gen != gen && !h.precise {
		h.checkLocked(target, rw)
	}
	return w.ch, func() (store.Request, bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(rw.set, w)
		if h.precise {
			if ws := h.byID[id]; ws != nil {
				delete(ws, w)
				if len(ws) == 0 {
					delete(h.byID, id)
				}
			}
			if len(rw.set) == 0 && h.reqs[target] == rw {
				delete(h.reqs, target)
			}
		}
		if w.row != nil {
			h.handed.Add(1)
			return *w.row, true
		}
		return store.Request{}, false
	}
}

// wait is waitFor for an agent's long-poll parked on ch (from Watch),
// counted while it waits (Parked).
func (h *Hub) wait(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	h.parked.Add(1)
	defer h.parked.Add(-1)
	waitFor(ctx, ch, d)
}

// Parked is how many agents' long-polls wait for a change now: tests see a
// poll parked before they change its target.
func (h *Hub) Parked() int64 { return h.parked.Load() }

// RequestWaiters returns how many client long-polls wait on requests of
// target.
func (h *Hub) RequestWaiters(target string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rw := h.reqs[target]; rw != nil {
		return len(rw.set)
	}
	return 0
}

// VersionReads returns how many times the hub read request versions.
func (h *Hub) VersionReads() int64 { return h.checks.Load() }

// Handovers returns how many request waiters were given their request with
// the wake-up (WatchRequestRow). The caller may still read it again (another's
// request, one with approvals: awaitRequest).
func (h *Hub) Handovers() int64 { return h.handed.Load() }

// Wakeups returns how many request waiters the hub has woken.
func (h *Hub) Wakeups() int64 { return h.woken.Load() }

// Notify wakes every watcher of the targets, and checks their request
// waiters.
func (h *Hub) Notify(targets ...string) {
	if h.notify(targets) {
		// The woken long-polls (an agent waiting for this change: the
		// grant path) are ready to run on this goroutine's processor;
		// let them run now rather than after the notifier's own work
		// (its reads, its answer), or until another processor steals
		// them.
		runtime.Gosched()
	}
}

// Committed wakes the watchers of targets (the agents' long-polls) for a
// commit that is not durable yet (store.SubscribeCommitted): they read and
// build their answers while the store syncs, and durableAnswers holds each
// answer until the sync covers what it read. It runs on the store's writer
// goroutine, so it does not yield (Notify): the syncer, handed the commit
// next, starts the fsync on this processor while another takes the woken
// long-poll. The change feed's Notify follows once the commit is durable
// (it finds no watcher left of a long-poll that answered, or wakes one
// that began to wait since; a woken long-poll reads again either way).
func (h *Hub) Committed(targets ...string) { h.notify(targets) }

// notify is Notify without the yield; it reports whether it woke a
// watcher of the targets.
func (h *Hub) notify(targets []string) (woke bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notifyLocked(targets)
}

func (h *Hub) notifyLocked(targets []string) (woke bool) {
	if len(h.seq) >= maxSeq {
		// Forgotten, each target's value becomes the floor: not below
		// what it was, so none comes back to a value a reader holds.
		h.seq, h.seqFloor = map[string]uint64{}, h.gen
	}
	h.gen++
	for _, t := range targets {
		h.seq[t] = h.gen // the same value however often named
		if c, ok := h.ch[t]; ok {
			close(c)
			delete(h.ch, t)
			woke = true
		}
		if rw := h.reqs[t]; rw != nil && !h.precise {
			h.checkLocked(t, rw)
		}
	}
	return woke
}

// checkLocked starts a check of target's request waiters, or asks the
// running one for another round.
func (h *Hub) checkLocked(target string, rw *requestWaiters) {
	if rw.checking {
		rw.again = true
		return
	}
	rw.checking = true
	go h.check(target, rw)
}

// versionReadTimeout bounds one check's read.
const versionReadTimeout = 10 * time.Second

// check reads the versions of the requests waited on at target, in one
// read, and wakes the waiters whose request moved; it repeats while
// notifications arrived during the read.
func (h *Hub) check(target string, rw *requestWaiters) {
	for {
		h.mu.Lock()
		rw.again = false
		if len(rw.set) == 0 {
			rw.checking = false
			if h.reqs[target] == rw {
				delete(h.reqs, target)
			}
			h.mu.Unlock()
			return
		}
		seen := make([]*requestWaiter, 0, len(rw.set))
		ids := make([]string, 0, len(rw.set))
		have := map[string]bool{}
		for w := range rw.set {
			seen = append(seen, w)
			if !have[w.id] {
				have[w.id] = true
				ids = append(ids, w.id)
			}
		}
		read := h.versions
		h.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), versionReadTimeout)
		h.checks.Add(1)
		versions, err := read(ctx, target, ids)
		cancel()

		h.mu.Lock()
		for _, w := range seen {
			if _, waiting := rw.set[w]; !waiting {
				continue
			}
			// A failed read wakes everyone: each re-reads and reports.
			if v, ok := versions[w.id]; err != nil || !ok || v != w.version {
				close(w.ch)
				delete(rw.set, w)
				h.woken.Add(1)
			}
		}
		if !rw.again {
			rw.checking = false
			if len(rw.set) == 0 && h.reqs[target] == rw {
				delete(h.reqs, target)
			}
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}
