package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
)

// Paging of lists. Every list answers a page: ?limit= sets its size (each
// list has its own default and maximum) and, when more may follow, the
// answer's Link header holds the next page's address with rel="next"
// (RFC 8288), the same query with ?cursor= (or, for the audit trail, the
// ?after= it already had) set to where the page ended. Pages are keyset
// pages read from the store (rows after the cursor's key), not offsets, so
// a row inserted meanwhile neither repeats nor hides another. A cursor is
// opaque to clients: base64url of the JSON of the last row's key.

// pageLimit reads ?limit=, def when absent, refused outside 1..max.
func pageLimit(q url.Values, def, max int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, invalidField("limit", "must be a number from 1 to %d", max)
	}
	return n, nil
}

// readCursor decodes ?cursor= into key; false when there is none.
func readCursor(q url.Values, key any) (bool, error) {
	s := q.Get("cursor")
	if s == "" {
		return false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, key) != nil || hasNUL(reflect.ValueOf(key)) {
		return false, invalidField("cursor", "not a cursor this server gave out (take it from the previous page's Link header)")
	}
	return true, nil
}

// setNext links the next page: r's own path and query with param set to
// value (a cursor made by cursorOf, or the audit trail's event id).
func setNext(w http.ResponseWriter, r *http.Request, param, value string) {
	next := url.Values{}
	for k, v := range r.URL.Query() {
		next[k] = v
	}
	next.Set(param, value)
	w.Header().Set("Link", "<"+r.URL.Path+"?"+next.Encode()+`>; rel="next"`)
}

// cursorOf is the opaque cursor of a row's key.
func cursorOf(key any) string {
	b, _ := json.Marshal(key)
	return base64.RawURLEncoding.EncodeToString(b)
}
