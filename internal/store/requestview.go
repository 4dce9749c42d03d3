package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RequestView is what a client's long-poll on a request answers with: the
// request, its target (for the answer's connection hints and, for another's
// request, the labels its authorization is judged by), and whether the
// caller's token is still live. ReadRequestView reads the three in one
// statement, so they are one committed state.
type RequestView struct {
	Request Request
	// Target is nil when the target is gone.
	Target *Target
	// TokenLive says the token asked about is a person's or a service's,
	// unexpired and not revoked (GetToken would return it); false when no
	// token was named.
	TokenLive bool
}

// qualify prefixes each column of a column list with alias.
func qualify(cols, alias string) string {
	fields := strings.Split(cols, ",")
	for i, f := range fields {
		fields[i] = alias + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}

// requestViewQuery reads a request with its target and a token's liveness
// ($1 the request, $2 the token id, $3 now in ms).
var requestViewQuery = `SELECT ` + qualify(requestColumns, "r") + `, ` + qualify(targetColumns, "t") + `,
	EXISTS (SELECT 1 FROM tokens WHERE ` + strings.ReplaceAll(humanKinds, "$1", "$3") + ` AND id = $2)
	FROM requests r JOIN targets t ON t.name = r.target WHERE r.id = $1`

// ReadRequestView returns request id, its target and whether token tokenID
// is live at now ("": not asked, TokenLive false), in one statement (two
// when the request waits for approvals: its decisions). A request whose
// target is gone is read alone, with no target.
//
// It is the long-poll's read after its wait (api.getRequest): the request,
// its target and the token re-check had been three statements.
func (s *Store) ReadRequestView(ctx context.Context, id, tokenID string, now time.Time) (RequestView, error) {
	var v RequestView
	row := s.db.QueryRowContext(ctx, requestViewQuery, id, tokenID, ms(now))
	var t Target
	// scanRequest and scanTarget each scan a part of the one row: the
	// row is scanned once both have named their destinations.
	q, err := scanRequest(scanFunc(func(rd ...any) error {
		var terr error
		t, terr = scanTarget(scanFunc(func(td ...any) error {
			dest := make([]any, 0, len(rd)+len(td)+1)
			dest = append(append(append(dest, rd...), td...), &v.TokenLive)
			return row.Scan(dest...)
		}))
		return terr
	}))
	if errors.Is(err, sql.ErrNoRows) {
		// No such request, or its target is gone: read it alone.
		r, err := s.GetRequest(ctx, id)
		if err != nil {
			return RequestView{}, err
		}
		v.Request = r
		if tokenID != "" {
			if _, err := s.GetToken(ctx, tokenID, now); err == nil {
				v.TokenLive = true
			} else if !errors.Is(err, ErrNotFound) {
				return RequestView{}, err
			}
		}
		return v, nil
	}
	if err != nil {
		return RequestView{}, fmt.Errorf("reading request %s: %w", id, err)
	}
	if q.ApprovalsRequired > 0 {
		if q.Decisions, err = s.decisions(ctx, id); err != nil {
			return RequestView{}, err
		}
		q.Tally = tally(q)
	}
	v.Request, v.Target = q, &t
	return v, nil
}
