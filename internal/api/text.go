package api

import (
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/jitgate/jitgate/internal/wire"
)

// Text a database cannot hold. PostgreSQL's text refuses a NUL byte and
// bytes that are not UTF-8 (SQLSTATE 22021); SQLite keeps them. A path or
// query parameter reaches the store as given (?target=, ?actor=, a request
// id in the path, a string inside a cursor), so on PostgreSQL such input
// was a 500 with the database's error in the log, where the same call on
// SQLite matched nothing. It is bad input on either store: refused with
// 400 before any handler reads it. Bodies are checked field by field by
// their own validation (names, labels, reasons).

// plainAddress refuses a request whose path or query holds a NUL byte or
// bytes that are not UTF-8 (after percent-decoding).
func plainAddress(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !storable(r.URL.Path) {
			writeProblem(w, http.StatusBadRequest, wire.Error{Error: "the path holds a NUL byte or bytes that are not UTF-8"})
			return
		}
		// A query without percent-escapes is checked as it came: its keys
		// and values are pieces of it ('+' decodes to a space), so they
		// are storable when it is. Only a query with escapes is decoded
		// here (every call's query was parsed twice: here and by its
		// handler).
		if raw := r.URL.RawQuery; !strings.Contains(raw, "%") && storable(raw) {
			next.ServeHTTP(w, r)
			return
		}
		for k, vs := range r.URL.Query() {
			ok := storable(k)
			for _, v := range vs {
				ok = ok && storable(v)
			}
			if !ok {
				name := strings.ToValidUTF8(strings.ReplaceAll(k, "\x00", ""), "?")
				writeProblem(w, http.StatusBadRequest, wire.Error{Error: name + ": holds a NUL byte or bytes that are not UTF-8", Field: name})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// storable reports whether s is UTF-8 without NUL bytes.
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// hasNUL reports whether a string anywhere in v (exported fields,
// pointers) holds a NUL byte: a cursor's JSON may carry "\u0000", which
// decodes into one (invalid UTF-8 in JSON decodes to U+FFFD).
func hasNUL(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && hasNUL(v.Elem())
	case reflect.String:
		return strings.ContainsRune(v.String(), 0)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() && hasNUL(v.Field(i)) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if hasNUL(v.Index(i)) {
				return true
			}
		}
	}
	return false
}
