package store

import "sync"

// The change feed is part of the store's contract: after a commit that
// changed targets' desired state (or the state of their requests), the
// store tells every subscriber which targets changed, so long-polls waiting
// on them wake up (api.Hub) and the bookkeeping jobs look again.
//
// With SQLite every writer is in this process, and the feed is in-process.
// A store shared by several replicas (PostgreSQL) must also deliver the
// changes committed by the other replicas: notifications sent inside the
// committing transaction, received by a listener per replica, which wakes
// everything after it reconnects (notifications may have been missed).
//
// Delivery is at least once and may coalesce: a subscriber must re-read
// state rather than trust the list, and must not block (it runs on the
// committing goroutine).
type feed struct {
	mu   sync.RWMutex
	subs map[int]func(targets ...string)
	next int
}

// Subscribe registers f to be told, after each commit, which targets'
// state changed; cancel stops it.
func (s *Store) Subscribe(f func(targets ...string)) (cancel func()) {
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	if s.feed.subs == nil {
		s.feed.subs = map[int]func(...string){}
	}
	id := s.feed.next
	s.feed.next++
	s.feed.subs[id] = f
	return func() {
		s.feed.mu.Lock()
		defer s.feed.mu.Unlock()
		delete(s.feed.subs, id)
	}
}

// publish tells every subscriber about targets.
func (f *feed) publish(targets ...string) {
	if len(targets) == 0 {
		return
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, sub := range f.subs {
		sub(targets...)
	}
}
