package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// page is one page of a list: the body is the items, the Link header
// (rel="next") carries the next page's cursor.
type page[T any] struct {
	items []T
	next  string
}

func (p *page[T]) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &p.items) }

func (p *page[T]) receiveHeader(h http.Header) { p.next = nextCursor(h.Values("Link")) }

// Page reads one page of the list at path (query q, continuing at cursor
// when not ""); it returns the items and the next page's cursor ("" at the
// end).
func Page[T any](ctx context.Context, c *Client, path string, q url.Values, cursor string) ([]T, string, error) {
	v := url.Values{}
	for k, vs := range q {
		v[k] = vs
	}
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	var p page[T]
	err := c.do(ctx, http.MethodGet, path, v, nil, &p)
	return p.items, p.next, err
}

// listAll reads every page of the list at path.
func listAll[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	out := []T{}
	cursor := ""
	for {
		items, next, err := Page[T](ctx, c, path, q, cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" || next == cursor {
			return out, nil
		}
		cursor = next
	}
}
