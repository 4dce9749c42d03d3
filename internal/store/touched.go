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
// With the ids come the rows of the requests whose last move in the commit
// was a statement that returned the row it left (transitionAll: the agent's
// report activating its requests), so that a woken waiter on its own
// request can answer without reading the request again. A row is handed
// over only when nothing moved the request after it in that transaction,
// and not at all when the operation that moved it was rolled back to its
// savepoint (the moves are kept in txState, which the writer puts back).
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
	movedRequest(tx, requestMove{id: id})
}

// touchRequestRow is touchRequest for a statement that returned the row it
// left: r is the request as the transaction leaves it, unless a later
// statement of the transaction moves it again.
func touchRequestRow(tx *sql.Tx, r Request) {
	touched.Lock()
	touched.m[tx] = append(touched.m[tx], r.ID)
	touched.Unlock()
	movedRequest(tx, requestMove{id: r.ID, row: &r})
}

// requestMove is one move of a request in a write transaction: row is the
// request as the moving statement returned it, nil when it returned none.
type requestMove struct {
	id  string
	row *Request
}

// movedRequest records m in tx's state (txState), which a rolled-back
// operation's savepoint takes back.
func movedRequest(tx *sql.Tx, m requestMove) {
	generations.Lock()
	defer generations.Unlock()
	st := generations.m[tx]
	st.moves = append(st.moves, m)
	generations.m[tx] = st
}

// movedRows returns the rows of the requests whose last move in tx returned
// its row (see SubscribeRequests).
func movedRows(tx *sql.Tx) []Request {
	st := peekGeneration(tx)
	var rows []Request
	seen := make(map[string]bool, len(st.moves))
	for i := len(st.moves) - 1; i >= 0; i-- {
		m := st.moves[i]
		if seen[m.id] {
			continue // moved again later in tx
		}
		seen[m.id] = true
		if m.row != nil {
			rows = append(rows, *m.row)
		}
	}
	return rows
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
	subs map[int]func(ids []string, rows []Request)
	next int
}

// SubscribeRequests registers f to be told, after each commit of this
// process, which requests' versions it moved (see RequestChangesComplete for
// what it misses), and rows: those of them as the commit left them, for the
// requests whose last move in it returned its row (a subset of ids, possibly
// empty; the others must be read). f must not block: it runs on the writer
// goroutine (on its syncer, once the commit is durable, when pipelined
// durability is on: syncer.go), and must not keep or change rows' slices
// and maps.
func (s *Store) SubscribeRequests(f func(ids []string, rows []Request)) (cancel func()) {
	s.reqFeed.mu.Lock()
	defer s.reqFeed.mu.Unlock()
	if s.reqFeed.subs == nil {
		s.reqFeed.subs = map[int]func([]string, []Request){}
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

func (s *Store) publishRequests(ids []string, rows []Request) {
	if len(ids) == 0 {
		return
	}
	s.reqFeed.mu.RLock()
	defer s.reqFeed.mu.RUnlock()
	for _, f := range s.reqFeed.subs {
		f(ids, rows)
	}
}
