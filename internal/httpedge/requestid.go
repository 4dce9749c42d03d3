package httpedge

import (
	"context"
	"net/http"
	"sync"

	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/store"
)

// RequestIDHeader carries a request's id: accepted from the client (or a
// proxy in front) when sane, else generated, and always sent back.
const RequestIDHeader = "X-Request-Id"

// maxRequestID bounds an incoming id; longer ones are replaced.
const maxRequestID = 64

// callInfo is what the edge learns of one call as it passes: its id, and
// the route pattern that served it (set by the API's mux wrapper).
type callInfo struct {
	id    string
	mu    sync.Mutex
	route string
}

type callKey struct{}

// RequestID gives each request an id before anything logs or audits it: a
// sane incoming X-Request-Id (1 to 64 of A-Z a-z 0-9 . _ - : the id reaches
// logs and the audit trail, so nothing else is let through), else a fresh
// random one. The id is echoed in the response's X-Request-Id, carried in
// the context for the log line (ID) and for the store, which writes it into
// the details of every audit event the request causes (http_request_id).
// A request that already has one (an outer RequestID) keeps it.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Value(callKey{}).(*callInfo); ok {
			next.ServeHTTP(w, r)
			return
		}
		id := r.Header.Get(RequestIDHeader)
		if !saneRequestID(id) {
			id = random.Hex(16)
		}
		w.Header().Set(RequestIDHeader, id)
		ctx := context.WithValue(r.Context(), callKey{}, &callInfo{id: id})
		next.ServeHTTP(w, r.WithContext(store.WithRequestID(ctx, id)))
	})
}

// ID returns the request id RequestID gave the call, or "".
func ID(ctx context.Context) string {
	if c, ok := ctx.Value(callKey{}).(*callInfo); ok {
		return c.id
	}
	return ""
}

// SetRoute records the route pattern that served the call, for the log line.
func SetRoute(ctx context.Context, route string) {
	if c, ok := ctx.Value(callKey{}).(*callInfo); ok {
		c.mu.Lock()
		c.route = route
		c.mu.Unlock()
	}
}

// Route returns the route pattern recorded by SetRoute, or "".
func Route(ctx context.Context) string {
	if c, ok := ctx.Value(callKey{}).(*callInfo); ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.route
	}
	return ""
}

func saneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
