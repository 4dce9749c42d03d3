package store

import "strings"

// SQLiteDSN returns the modernc.org/sqlite data source name that opens the
// file at path, with the given query parameters (each "key=value", already
// in URL query form, e.g. "_pragma=busy_timeout(5000)").
//
// The name is an SQLite URI filename ("file:..."), which is the only form
// in which SQLite's own parameters (mode=ro, ...) are honoured. In that form
// the driver splits the name at its first '?' and SQLite ends the path at
// '?' or '#' and decodes %HH in it, so a data directory such as "a#b?c%d"
// pasted verbatim opens a different file (silently: "a" is created). Every
// byte of path except the unreserved characters and '/' is therefore
// percent-encoded; SQLite decodes them back to the bytes of path.
//
// An absolute path gets an empty authority ("file:///..."): without it a
// path starting with "//" would be read as "file://authority/...".
// VACUUM INTO takes the same form (without parameters): on a connection
// opened as a URI, SQLite reads a target name starting with "file:" as a URI.
func SQLiteDSN(path string, params ...string) string {
	var b strings.Builder
	b.WriteString("file:")
	if strings.HasPrefix(path, "/") {
		b.WriteString("//")
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	for i, p := range params {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(p)
	}
	return b.String()
}
