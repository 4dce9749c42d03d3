package api

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// durableAnswers holds every answer of the API until what its reads may
// have seen is durable. On SQLite the group-commit writer commits without
// fsync and its syncer fsyncs after (store/syncer.go): between the two,
// every other connection already reads the commit. A read answered there
// (a request shown approved or active, an audit event exported, a gauge
// scraped) would report a state change that a power loss then takes back,
// to someone who was never its caller. So before an answer's first byte,
// and before each later write of a streamed answer, the store's Durable
// waits until every commit begun so far is fsynced: every read the handler
// made before that write is covered. Idle it costs two atomic loads; under
// load the answer waits for the sync in flight. On PostgreSQL (COMMIT
// returns durable), and on SQLite with pipelined durability off
// (--write-inline-sync: the COMMIT fsyncs), it never waits.
//
// A failed sync (the store fails closed) or a caller gone before the sync
// turns an answer not begun into the error's; a stream already begun is cut
// (http.ErrAbortHandler), so that nothing read after its last durable write
// goes out. Upgraded connections (terminals, tunnels) are the caller's:
// what opens them is checked by reads that wait themselves
// (Store.BastionGrant).
func durableAnswers(st *store.Store, log *slog.Logger, next http.Handler) http.Handler {
	if st == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			// They report the process and the store, no state: /readyz
			// fails on its own after a failed sync (Store.Ping).
			next.ServeHTTP(w, r)
			return
		}
		d := &durableWriter{ResponseWriter: w, ctx: r.Context(), st: st, log: log}
		next.ServeHTTP(d, r)
		if !d.begun && d.failed == nil && !d.hijacked {
			// A handler that wrote nothing gets net/http's 200 with the
			// headers it set (an ETag, a revision): waited for here.
			// A hijacked connection is the handler's. Hijacked, not
			// asked for in the request (Upgrade: websocket): anyone can
			// send that header to a handler that never upgrades.
			d.WriteHeader(http.StatusOK)
		}
	})
}

// durableWriter is the ResponseWriter of durableAnswers.
type durableWriter struct {
	http.ResponseWriter
	ctx context.Context
	st  *store.Store
	log *slog.Logger
	// begun: the status line went out; failed: the answer was replaced by
	// the error of a failed wait (later writes are dropped).
	begun  bool
	failed error
	// hijacked: the handler took the connection (Hijack); nothing more
	// is written for it here.
	hijacked bool
}

// replacedHeaders are what a handler may have set about the answer the
// failed wait replaces.
var replacedHeaders = []string{"Content-Type", "Content-Length", "Content-Encoding", "Content-Disposition",
	"ETag", "Last-Modified", "Location", "Set-Cookie", "Server-Timing"}

func (d *durableWriter) WriteHeader(code int) {
	if d.failed != nil {
		return
	}
	if d.begun || code < 200 {
		// Informational answers (1xx) report nothing.
		d.ResponseWriter.WriteHeader(code)
		return
	}
	if err := d.st.Durable(d.ctx); err != nil {
		d.failed = err
		for _, h := range replacedHeaders {
			d.ResponseWriter.Header().Del(h)
		}
		if d.ctx.Err() != nil {
			// The call ended (the client left, the server stops) before
			// the sync: nothing is told, and a client still there must
			// not take the empty answer for one.
			writeProblem(d.ResponseWriter, http.StatusServiceUnavailable,
				wire.Error{Error: "the call ended before what it read was durable; ask again"})
			return
		}
		writeError(d.ResponseWriter, d.log, err)
		return
	}
	d.begun = true
	d.ResponseWriter.WriteHeader(code)
}

func (d *durableWriter) Write(b []byte) (int, error) {
	if !d.begun && d.failed == nil {
		d.WriteHeader(http.StatusOK)
	} else if d.begun {
		if err := d.st.Durable(d.ctx); err != nil {
			d.failed = err
			d.log.Error("cutting an answer short: what it would say next is not durable", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	if d.failed != nil {
		return 0, d.failed
	}
	return d.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (flushes, deadlines, hijacking)
// reach the connection.
func (d *durableWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// Hijack hands the connection to the handler (terminals, tunnels: what
// opens them waits itself, Store.BastionGrant) and notes it, so that
// durableAnswers does not answer for it afterwards. http.ResponseController
// and the websocket libraries find it walking Unwrap, before the
// connection's own.
func (d *durableWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(d.ResponseWriter).Hijack()
	if err == nil {
		d.hijacked = true
	}
	return c, rw, err
}

// Flush lets long-polls flush through; what they wrote was waited for.
func (d *durableWriter) Flush() {
	if !d.begun && d.failed == nil {
		// A flush sends the status line: waited for like a write.
		d.WriteHeader(http.StatusOK)
	}
	if d.failed != nil {
		return
	}
	if f, ok := d.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// answerWaits returns ctx for the reads of a handler that answers through w
// only: when w is (or wraps) a durableWriter, which waits for Durable before
// every write, the store's reads under the returned context leave their own
// waits to it (store.AnswerWaits), so that a long-poll woken at a commit
// reads and builds its whole answer while the sync runs and waits once,
// before its first byte. Elsewhere ctx as it is.
func answerWaits(w http.ResponseWriter, ctx context.Context) context.Context {
	for {
		if d, ok := w.(*durableWriter); ok && d.st != nil {
			return store.AnswerWaits(ctx)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return ctx
		}
		w = u.Unwrap()
	}
}
