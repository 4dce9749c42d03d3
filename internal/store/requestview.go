package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// RequestView is what a client's long-poll on a request answers with: the
// request, what of its target the answer and its authorization read, and
// whether the caller's token is still live. ReadRequestView reads the three
// in one statement, so they are one committed state.
type RequestView struct {
	Request Request
	// Target holds only the target's Name, Labels (another's request is
	// authorized by them), CreatedAt (a target created after the request,
	// a namesake of the one it was made on, is not its target: the api
	// judges it by the name alone), Addresses, Gateway and Address (the
	// answer's connection hints); nil when no target bears the name. Its
	// policy, agent state and inventory are not read.
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

// requestViewQuery reads a request with its target's addressing and
// creation time and a token's liveness ($1 the request, $2 the token id, $3
// now in ms).
var requestViewQuery = `SELECT ` + qualify(requestColumns, "r") + `, t.name, t.labels, t.addresses, t.gateway, t.address, t.created_at,
	EXISTS (SELECT 1 FROM tokens WHERE ` + strings.ReplaceAll(humanKinds, "$1", "$3") + ` AND id = $2)
	FROM requests r JOIN targets t ON t.name = r.target WHERE r.id = $1`

// decodedAddressing is the memo of the labels and addresses a RequestView
// reads (apart from decodedTargets, whose texts include the policy: one
// memo for both would decode again at every change of reader).
var decodedAddressing memo[targetJSON]

// ReadRequestView returns request id, its target and whether token tokenID
// is live at now ("": not asked, TokenLive false), in one statement (two
// when the request waits for approvals: its decisions). A request whose
// target is gone is read alone, with no target.
//
// It is the long-poll's read (api.getRequest): the request, its target and
// the token re-check after a wait had been three statements.
func (s *Store) ReadRequestView(ctx context.Context, id, tokenID string, now time.Time) (RequestView, error) {
	var v RequestView
	ctx = s.pointCtx(ctx)
	row := s.db.QueryRowContext(ctx, requestViewQuery, id, tokenID, ms(now))
	var (
		t             Target
		labels, addrs string
		created       int64
	)
	// scanRequest names its destinations; the row is scanned with the
	// target's and the token's after them.
	q, err := scanRequest(scanFunc(func(rd ...any) error {
		return row.Scan(append(rd, &t.Name, &labels, &addrs, &t.Gateway, &t.Address, &created, &v.TokenLive)...)
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
	if err := decodeAddressing(&t, labels, addrs, created); err != nil {
		return RequestView{}, err
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

// decodeAddressing fills t's labels, addresses and creation time from the
// columns a RequestView reads (decoded once per distinct text).
func decodeAddressing(t *Target, labels, addrs string, created int64) error {
	d, err := decodedAddressing.get(t.Name, labels+"\x00"+addrs, func(string) (targetJSON, error) {
		var d targetJSON
		if err := json.Unmarshal([]byte(labels), &d.labels); err != nil {
			return d, fmt.Errorf("decoding labels of %s: %w", t.Name, err)
		}
		if err := json.Unmarshal([]byte(addrs), &d.addrs); err != nil {
			return d, fmt.Errorf("decoding addresses of %s: %w", t.Name, err)
		}
		return d, nil
	}, func(d targetJSON) targetJSON {
		return targetJSON{labels: maps.Clone(d.labels), addrs: slices.Clone(d.addrs)}
	})
	if err != nil {
		return err
	}
	t.Labels, t.Addresses, t.CreatedAt = d.labels, d.addrs, fromMS(created)
	return nil
}

// handedViewQuery reads what requestViewQuery reads beside the request: a
// target's addressing and creation time and a token's liveness ($1 the
// target, $2 the token id, $3 now in ms).
var handedViewQuery = `SELECT t.name, t.labels, t.addresses, t.gateway, t.address, t.created_at,
	EXISTS (SELECT 1 FROM tokens WHERE ` + strings.ReplaceAll(humanKinds, "$1", "$3") + ` AND id = $2)
	FROM targets t WHERE t.name = $1`

// HandedRequestView is ReadRequestView for a request r that the commit
// which woke a long-poll handed over as it left it (api.Hub.WatchRequestRow):
// r is not read again, but its target and token tokenID's liveness are, in
// one statement. The target is not taken from before the wait: a commit
// during it (the very report that activated r records the host's addresses;
// a new enrollment records others) may have moved where the answer's
// connection hints point (TestHandedOverTargetAsCommitted). When no target
// bears r's name any more, it is ReadRequestView (the old full read).
func (s *Store) HandedRequestView(ctx context.Context, r Request, tokenID string, now time.Time) (RequestView, error) {
	v := RequestView{Request: r}
	var (
		t             Target
		labels, addrs string
		created       int64
	)
	err := s.db.QueryRowContext(s.pointCtx(ctx), handedViewQuery, r.Target, tokenID, ms(now)).
		Scan(&t.Name, &labels, &addrs, &t.Gateway, &t.Address, &created, &v.TokenLive)
	if errors.Is(err, sql.ErrNoRows) {
		return s.ReadRequestView(ctx, r.ID, tokenID, now)
	}
	if err != nil {
		return RequestView{}, fmt.Errorf("reading target %s of request %s: %w", r.Target, r.ID, err)
	}
	if err := decodeAddressing(&t, labels, addrs, created); err != nil {
		return RequestView{}, err
	}
	v.Target = &t
	return v, nil
}
