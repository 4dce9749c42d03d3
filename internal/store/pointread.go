package store

import "context"

// pointCtx is the context a short read on the API's hot path runs with: on
// SQLite, ctx without its cancellation (and deadline). For a statement run
// with a context that can be cancelled, database/sql starts a goroutine to
// close the rows when it is, and the SQLite driver another to interrupt the
// statement: two goroutines, a channel and a context for a read of one row
// that takes tens of microseconds, which was 4 % of the server's CPU at
// 1,000 requests/s. Such a read finishes as fast as it would notice a
// cancellation (SQLite reads in WAL mode wait for no writer). On PostgreSQL,
// whose reads cross the network and may hang with it, ctx is kept.
func (s *Store) pointCtx(ctx context.Context) context.Context {
	if s.dialect.name != sqliteDialect.name || ctx.Done() == nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}
