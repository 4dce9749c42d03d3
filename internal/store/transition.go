package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jitgate/jitgate/internal/access"
)

// The store writes no request state of its own: every state it stores is
// access.Start's or access.Next's, and every SQL filter on states is built
// here from access's lists (TestNoStateLiterals keeps it so).

// inStates renders states as a SQL list of string literals, for
// "state IN (...)". The states are access's constants, never input; one
// that is not a plain lower-case word would be a programming error.
func inStates(states ...access.State) string {
	quoted := make([]string, len(states))
	for i, s := range states {
		quoted[i] = stateLit(s)
	}
	return strings.Join(quoted, ", ")
}

// stateLit renders one state as a SQL string literal.
func stateLit(s access.State) string {
	if s == "" || strings.Trim(string(s), "abcdefghijklmnopqrstuvwxyz_") != "" {
		panic(fmt.Sprintf("store: state %q cannot be a SQL literal", s))
	}
	return "'" + string(s) + "'"
}

// SQL fragments on request states, generated from access.
var (
	// liveStates are the states a request can still leave.
	liveStates = inStates(access.LiveStates()...)
	// grantStates are the states whose grants are in the desired state.
	grantStates = inStates(access.GrantStates()...)
	// Single states, for filters that select one step of the machine.
	stateAwaiting  = stateLit(access.PendingApproval)
	statePending   = stateLit(access.Pending)
	stateActive    = stateLit(access.Active)
	stateScheduled = stateLit(access.Scheduled)
)

// set is one more column a transition writes with the state.
type set struct {
	column string
	value  any
}

// transition moves request id from state from, as read at version, by
// event ev: access.Next decides the next state (a transition the table
// forbids is refused, with ErrConflict), and the update is a
// compare-and-set on (state, version), so that a change committed since
// the read is never overwritten: it fails with ErrStale instead. With
// SQLite's serialized writers the guard never trips; with concurrent
// writers (PostgreSQL, several replicas) it is what lets a deny or a
// revocation win against a racing approval or activation. The version
// advances with every transition. It returns the new state.
func transition(ctx context.Context, tx *sql.Tx, id string, from access.State, version int64, ev access.Event, extra ...set) (access.State, error) {
	to, err := access.Next(from, ev)
	if err != nil {
		return from, fmt.Errorf("request %s: %w (%w)", id, err, ErrConflict)
	}
	q := `UPDATE requests SET state = $1, version = version + 1`
	args := []any{string(to)}
	for _, x := range extra {
		args = append(args, x.value)
		q += fmt.Sprintf(", %s = $%d", x.column, len(args))
	}
	args = append(args, id, string(from), version)
	n := len(args)
	q += fmt.Sprintf(` WHERE id = $%d AND state = $%d AND version = $%d`, n-2, n-1, n)
	err = execTransition(ctx, tx, q, args)
	if errors.Is(err, sql.ErrNoRows) {
		return from, fmt.Errorf("request %s is no longer %s at version %d: %w", id, from, version, ErrStale)
	}
	if err != nil {
		return from, fmt.Errorf("moving request %s from %s to %s: %w", id, from, to, err)
	}
	touchRequest(tx, id)
	return to, nil
}

// transitionAll moves every request the query ids selects (its ids; args
// are its parameters, $1 onwards) from state from by event ev, in one
// statement, and returns them as the update left them. The compare-and-set
// is on the state, in the statement that writes it: a request another
// writer moved since ids was planned is no longer in from and is left out
// (on PostgreSQL, READ COMMITTED re-checks the condition on a row changed
// by a concurrent transaction). The agent's report activates its pending
// requests with it: one statement instead of a read and an update each.
func transitionAll(ctx context.Context, tx *sql.Tx, ids string, args []any, from access.State, ev access.Event, extra ...set) ([]Request, error) {
	to, err := access.Next(from, ev)
	if err != nil {
		return nil, fmt.Errorf("requests in %s: %w (%w)", from, err, ErrConflict)
	}
	q, args := transitionAllStatement(ids, args, from, to, extra...)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("moving requests from %s to %s: %w", from, to, err)
	}
	defer rows.Close()
	var moved []Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("moving requests from %s to %s: %w", from, to, err)
		}
		moved = append(moved, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("moving requests from %s to %s: %w", from, to, err)
	}
	for _, r := range moved {
		touchRequestRow(tx, r)
	}
	// In the order they were asked (RETURNING's is the update's).
	slices.SortFunc(moved, func(a, b Request) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return moved, nil
}

// transitionAllStatement is transitionAll's update and its arguments. The
// state is compared as an expression (the state joined to an empty
// string), which no index serves: compared as itself, SQLite walked every
// request in from (index requests_state) and tested each against the ids
// instead of looking the few ids up (TestReportReadsPendingByTarget).
func transitionAllStatement(ids string, args []any, from, to access.State, extra ...set) (string, []any) {
	args = append(slices.Clip(args), string(to))
	key := transitionAllKey{ids: ids, params: len(args), from: from, to: to}
	for _, x := range extra {
		args = append(args, x.value)
		key.columns += x.column + ","
	}
	args = append(args, string(from))
	if q, ok := transitionAllStatements.Load(key); ok {
		return q.(string), args
	}
	q := fmt.Sprintf(`UPDATE requests SET state = $%d, version = version + 1`, key.params)
	for i, x := range extra {
		q += fmt.Sprintf(", %s = $%d", x.column, key.params+1+i)
	}
	q += fmt.Sprintf(` WHERE id IN (%s) AND state || '' = $%d RETURNING %s`, ids, len(args), requestColumns)
	// Its only caller, transitionAll, names every request the update
	// moved: touchRequestRow(tx, r) for each row it returned.
	transitionAllStatements.Store(key, q)
	return q, args
}

// transitionAllStatements are transitionAllStatement's updates, built once
// for each shape (the agent's report activates with one on every report).
// Their texts come from the store's own constants, never from input: a
// handful of keys.
var transitionAllStatements sync.Map // transitionAllKey -> string

// transitionAllKey is what an update of transitionAllStatement is built
// from: the query of the ids, the number of its parameters and the new
// state's (params), the states, and the extra columns written.
type transitionAllKey struct {
	ids      string
	params   int
	from, to access.State
	columns  string
}

// execTransition runs a transition's update: sql.ErrNoRows when it changed
// no row.
func execTransition(ctx context.Context, tx *sql.Tx, q string, args []any) error {
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	changed, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if changed != 1 {
		return sql.ErrNoRows
	}
	return nil
}
