package store

import (
	"database/sql"
	"sync"
)

// Precise wake-ups of request watchers. Every statement that moves a
// request's version (transition, and the few updates that bump it without a
// transition) names the request with touchRequest, inside its write
// transaction; after the transaction commits, the group-commit writer hands
// the ids to the subscribers of SubscribeRequests. A client long-poll on a
// request then wakes when its own request changed, with no read of the
// versions of every other waited-on request (api.Hub).
//
// Only the writes of this process are seen: RequestChangesComplete says
// whether they are all the writes there are (SQLite, where every writer is
// in this process). On PostgreSQL other replicas write too, and the hub
// keeps reading versions after each change of a target.

var touched = struct {
	sync.Mutex
	m map[*sql.Tx][]string
}{m: map[*sql.Tx][]string{}}

// touchRequest records, in tx, that request id's version moved. A savepoint
// rolled back later may leave a name here for a request that did not move:
// a spurious wake-up, after which the waiter reads its request again and
// waits on.
func touchRequest(tx *sql.Tx, id string) {
	touched.Lock()
	touched.m[tx] = append(touched.m[tx], id)
	touched.Unlock()
}

// takeTouched returns and forgets the requests touched in tx.
func takeTouched(tx *sql.Tx) []string {
	touched.Lock()
	defer touched.Unlock()
	ids := touched.m[tx]
	delete(touched.m, tx)
	return ids
}

type requestFeed struct {
	mu   sync.RWMutex
	subs map[int]func(ids []string)
	next int
}

// SubscribeRequests registers f to be told, after each commit of this
// process, which requests' versions it moved (see RequestChangesComplete for
// what it misses). f must not block: it runs on the writer goroutine.
func (s *Store) SubscribeRequests(f func(ids []string)) (cancel func()) {
	s.reqFeed.mu.Lock()
	defer s.reqFeed.mu.Unlock()
	if s.reqFeed.subs == nil {
		s.reqFeed.subs = map[int]func([]string){}
	}
	id := s.reqFeed.next
	s.reqFeed.next++
	s.reqFeed.subs[id] = f
	return func() {
		s.reqFeed.mu.Lock()
		defer s.reqFeed.mu.Unlock()
		delete(s.reqFeed.subs, id)
	}
}

// RequestChangesComplete reports whether SubscribeRequests sees every
// change of a request's version: true when this process is the database's
// only writer (SQLite).
func (s *Store) RequestChangesComplete() bool { return s.dialect.name == sqliteDialect.name }

func (s *Store) publishRequests(ids []string) {
	if len(ids) == 0 {
		return
	}
	s.reqFeed.mu.RLock()
	defer s.reqFeed.mu.RUnlock()
	for _, f := range s.reqFeed.subs {
		f(ids)
	}
}
