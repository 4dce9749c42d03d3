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

// SubscribeCommitted registers f to be told, as soon as a commit of this
// process returned and before it is durable, which enforcers' desired-state
// revisions it moved (their agents' long-polls are the grant path); cancel
// stops it. Only with pipelined durability (syncer.go), where the fsync
// comes after the commit: elsewhere a commit is durable when it returns
// and the change feed (Subscribe) tells it at once.
//
// It is a hint to start reading, never a report: what a reader woken by it
// reads may not be durable yet, so its answer must wait for Durable (called
// after its last read) before anything it read leaves the process, and a
// failed sync then fails it (store/syncer.go). The change feed still tells
// the same change once it is durable. f runs on the writer goroutine and
// must not block. A commit that found the database file replaced is not
// told, nor any after it until EndRestored ended what the copy brought back
// (the restore guard does that before the agents are woken).
func (s *Store) SubscribeCommitted(f func(targets ...string)) (cancel func()) {
	s.early.mu.Lock()
	defer s.early.mu.Unlock()
	if s.early.subs == nil {
		s.early.subs = map[int]func(...string){}
	}
	id := s.early.next
	s.early.next++
	s.early.subs[id] = f
	return func() {
		s.early.mu.Lock()
		defer s.early.mu.Unlock()
		delete(s.early.subs, id)
	}
}

// committed tells SubscribeCommitted's subscribers of owners, the
// enforcers whose revisions the writer's commit just moved; replaced: the
// commit found the file replaced under the store (see SubscribeCommitted).
func (s *Store) committed(owners []string, replaced bool) {
	if replaced {
		s.w.replacements.Add(1)
	}
	if len(owners) == 0 || s.w.replacements.Load() != s.w.restoresEnded.Load() {
		return
	}
	s.early.publish(owners...)
}

// restoreEnding returns what endedRestore needs to know which copies an
// EndRestored about to run covers: those found before it began.
func (s *Store) restoreEnding() int64 { return s.w.replacements.Load() }

// endedRestore lets commits be told early again (SubscribeCommitted) once an
// EndRestored that began after found replacements committed, unless a copy
// was found since: that one is not ended yet.
func (s *Store) endedRestore(found int64) {
	for {
		ended := s.w.restoresEnded.Load()
		if found <= ended || s.w.restoresEnded.CompareAndSwap(ended, found) {
			return
		}
	}
}
