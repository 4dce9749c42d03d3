package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
)

// stmtCacheSize bounds the prepared statements kept per connection.
const stmtCacheSize = 256

// cachingConnector opens SQLite connections that keep their prepared
// statements: parsing SQL was the largest share of an access request's CPU
// (the store runs the same few dozen statements over and over), and
// database/sql prepares afresh for every query with arguments.
type cachingConnector struct {
	dsn string
	drv *sqlite.Driver
	// queries counts the statements run on its connections (Store.Queries).
	queries *atomic.Int64
}

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &cachingConn{Conn: conn, stmts: map[string]driver.Stmt{}, queries: c.queries}, nil
}

func (c cachingConnector) Driver() driver.Driver { return c.drv }

// cachingConn prepares each statement once and reuses it. database/sql uses
// a connection from one goroutine at a time, so the cache needs no lock. A
// string that may hold several statements (one with a ';', as migrations)
// goes to the driver as it is; statements without arguments are cached too
// (the audit chain's head, the savepoints of group commit: re-parsing them
// was ~6 % of the server's CPU under load).
type cachingConn struct {
	driver.Conn
	stmts   map[string]driver.Stmt
	queries *atomic.Int64
}

var (
	_ driver.QueryerContext     = (*cachingConn)(nil)
	_ driver.ExecerContext      = (*cachingConn)(nil)
	_ driver.ConnBeginTx        = (*cachingConn)(nil)
	_ driver.ConnPrepareContext = (*cachingConn)(nil)
)

func (c *cachingConn) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	if s, ok := c.stmts[query]; ok {
		return s, nil
	}
	pc, ok := c.Conn.(driver.ConnPrepareContext)
	if !ok {
		return nil, errors.New("sqlite connection cannot prepare with a context")
	}
	s, err := pc.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if len(c.stmts) >= stmtCacheSize {
		for q, old := range c.stmts {
			old.Close()
			delete(c.stmts, q)
			break
		}
	}
	c.stmts[query] = s
	return s, nil
}

// uncacheable reports whether query must go to the driver as it is: it may
// hold more than one statement.
func uncacheable(query string, args []driver.NamedValue) bool {
	return len(args) == 0 && strings.Contains(query, ";")
}

// statementTimer, when set (by a benchmark: export_test.go), is told how
// long each statement on a caching connection took to run: an Exec to its
// end, a Query to its first row (SQLite runs an UPDATE ... RETURNING whole
// at its first step). nil in a server: one atomic load per statement.
var statementTimer atomic.Pointer[func(query string, d time.Duration)]

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if f := statementTimer.Load(); f != nil {
		start := time.Now()
		rows, err := c.query(ctx, query, args)
		(*f)(query, time.Since(start))
		return rows, err
	}
	return c.query(ctx, query, args)
}

func (c *cachingConn) query(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.queries.Add(1)
	if uncacheable(query, args) {
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	sq, ok := s.(driver.StmtQueryContext)
	if !ok {
		return nil, fmt.Errorf("sqlite statement cannot query with a context")
	}
	return sq.QueryContext(ctx, args)
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if f := statementTimer.Load(); f != nil {
		start := time.Now()
		res, err := c.exec(ctx, query, args)
		(*f)(query, time.Since(start))
		return res, err
	}
	return c.exec(ctx, query, args)
}

func (c *cachingConn) exec(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.queries.Add(1)
	if uncacheable(query, args) {
		return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	}
	s, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	se, ok := s.(driver.StmtExecContext)
	if !ok {
		return nil, fmt.Errorf("sqlite statement cannot exec with a context")
	}
	return se.ExecContext(ctx, args)
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

// ResetSession and IsValid keep database/sql's view of the connection.
func (c *cachingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *cachingConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *cachingConn) Close() error {
	for q, s := range c.stmts {
		s.Close()
		delete(c.stmts, q)
	}
	return c.Conn.Close()
}
