package api

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// Paging of lists. Every list answers a page: ?limit= sets its size (each
// list has its own default and maximum) and, when more may follow, the
// answer's Link header holds the next page's address with rel="next"
// (RFC 8288), the same query with ?cursor= (or, for the audit trail and a
// webhook's deliveries, the ?after=/?before= event id they already had) set
// to where the page ended. Pages are keyset pages read from the store (rows
// after the cursor's key), not offsets, so a row inserted meanwhile neither
// repeats nor hides another.
//
// A cursor is sealed: AES-256-GCM under a key every replica reads from the
// database (cursorSealKey), over the JSON of the last key read, with the
// list's path, the caller and the rest of the query as associated data. A
// list whose visibility is decided after the SQL (targets, requests,
// sessions) stops after a scan budget, possibly at a row the caller may not
// see: the seal keeps that row's key from being read, and a cursor cannot
// be made, altered, handed to another caller or replayed against another
// filter (each is refused with 400), so a client can only continue a
// listing the server began for it, and only for cursorLifetime: the sealed
// text starts with the cursor's expiry. The audit trail and the deliveries keep
// plain event ids: their filters are SQL alone, every row they read is the
// caller's to see, and `jitgate audit --after ID` names positions by hand.

// cursorSealKey names the cursor seal's key among the database's shared
// keys (store.SharedKey).
const cursorSealKey = "api-cursor-seal"

// maxCursor bounds a cursor's length before anything else reads it. It
// holds the longest key a list pages by: a binding's, with a principal of
// 256 characters and a label scope of 63 and 63, each character six bytes
// at most once in JSON (`\u003c`), padded (cursorPad) and sealed, is about
// 3,450 characters.
const maxCursor = 4096

// cursorPad is the block a cursor's plaintext is padded to (with spaces,
// which JSON ignores). GCM keeps the plaintext's length, so an unpadded
// cursor ending on a hidden target told its name's length; every key of
// the lists that hide rows (a target name, a request's or a session's
// time and id) fits in one block, so all their cursors are as long.
const cursorPad = 256

// cursorLifetime is how long a cursor is honored after the page that gave
// it. A cursor lets only its own caller continue a listing (its roles are
// read again at every page), but one copied into a log, a shell history or
// a bookmark would otherwise have worked for as long as its caller's
// access; an hour covers any listing a person or a script pages through,
// and each page gives a new cursor.
const cursorLifetime = time.Hour

// errCursorExpired is a cursor this server gave the caller for this list
// and query, older than cursorLifetime.
var errCursorExpired = &inputError{status: http.StatusBadRequest, field: "cursor",
	msg: "cursor: expired (a cursor lasts 1h after the page that gave it); list again from the first page"}

// errCursor is every cursor refused: malformed, forged, altered, another
// caller's, another list's or query's. They look alike on purpose.
var errCursor = &inputError{status: http.StatusBadRequest, field: "cursor",
	msg: "cursor: not a cursor this server gave you for this list and query (take the previous page's Link header as it is)"}

// cursorSeal is the AEAD of cursors, made at the first use.
type cursorSeal struct {
	mu   sync.Mutex
	aead cipher.AEAD
}

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

// readCursor opens ?cursor= into key; false when there is none. A cursor
// that is not one sealCursor made for this list, caller and query is
// refused with 400.
func (a *api) readCursor(r *http.Request, p store.Principal, key any) (bool, error) {
	s := r.URL.Query().Get("cursor")
	if s == "" {
		return false, nil
	}
	if len(s) > maxCursor {
		return false, errCursor
	}
	aead, err := a.cursorAEAD(r.Context())
	if err != nil {
		return false, err
	}
	if err := openCursor(aead, s, cursorAD(r, p), a.Now(), key); err != nil {
		return false, err
	}
	return true, nil
}

// openCursor opens the sealed cursor s, bound to ad, into key:
// errCursorExpired when it expired before now, errCursor when it is not a
// cursor sealCursor made with ad.
func openCursor(aead cipher.AEAD, s string, ad []byte, now time.Time, key any) error {
	// Strict: one spelling a cursor (no stray bits in its last character).
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(raw) < aead.NonceSize() {
		return errCursor
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, raw[:n], raw[n:], ad)
	if err != nil || len(plain) < 8 || json.Unmarshal(plain[8:], key) != nil || hasNUL(reflect.ValueOf(key)) {
		return errCursor
	}
	// Checked after the seal: only the caller it was given to learns that
	// a cursor expired.
	if now.UnixMilli() >= int64(binary.BigEndian.Uint64(plain)) {
		return errCursorExpired
	}
	return nil
}

// sealCursor seals key, bound to ad, as a cursor that expires
// cursorLifetime after now: the expiry (Unix milliseconds, 8 bytes big
// endian), then key's JSON, padded (padCursor).
func sealCursor(aead cipher.AEAD, key any, ad []byte, now time.Time) (string, error) {
	js, err := json.Marshal(key)
	if err != nil {
		return "", fmt.Errorf("encoding a cursor: %w", err)
	}
	plain := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(js)), uint64(now.Add(cursorLifetime).UnixMilli()))
	plain = padCursor(append(plain, js...))
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, ad)), nil
}

// setNextCursor links the next page of r's list, continuing after key.
func (a *api) setNextCursor(w http.ResponseWriter, r *http.Request, p store.Principal, key any) error {
	aead, err := a.cursorAEAD(r.Context())
	if err != nil {
		return err
	}
	c, err := sealCursor(aead, key, cursorAD(r, p), a.Now())
	if err != nil {
		return err
	}
	setNext(w, r, "cursor", c)
	return nil
}

// padCursor pads plain with spaces to a whole number of cursorPad blocks
// (at least one).
func padCursor(plain []byte) []byte {
	n := (len(plain)/cursorPad + 1) * cursorPad
	if len(plain)%cursorPad == 0 && len(plain) > 0 {
		n = len(plain)
	}
	return append(plain, bytes.Repeat([]byte{' '}, n-len(plain))...)
}

// cursorAD is what a cursor is bound to: the list (r's path), the caller
// (kind and name: a user and a service of the same name differ) and the
// query but for the cursor itself and the page size, which may change from
// page to page. url.Values.Encode sorts by name, so the order the client
// put the parameters in does not matter. v2: the sealed text starts with
// the expiry (a v1 cursor, without one, is refused as not a cursor).
func cursorAD(r *http.Request, p store.Principal) []byte {
	q := r.URL.Query()
	q.Del("cursor")
	q.Del("limit")
	caller := "user:" + p.Subject
	if p.Kind == store.KindService {
		caller = "service:" + p.Subject
	}
	return []byte("jitgate cursor v2\x00" + r.URL.Path + "\x00" + caller + "\x00" + q.Encode())
}

// cursorAEAD returns the cursor seal, reading (or, at the very first
// cursor, making) its key in the database, so that a cursor given out by
// one replica continues at any other.
func (a *api) cursorAEAD(ctx context.Context) (cipher.AEAD, error) {
	c := &a.cursors
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aead != nil {
		return c.aead, nil
	}
	aead, err := a.sharedAEAD(ctx, cursorSealKey)
	if err != nil {
		return nil, err
	}
	c.aead = aead
	return aead, nil
}

// sharedAEAD is AES-256-GCM under the database's shared key called name,
// made (32 random bytes) when no replica has made it yet.
func (a *api) sharedAEAD(ctx context.Context, name string) (cipher.AEAD, error) {
	key, err := a.Store.SharedKey(ctx, name, func() []byte {
		k := make([]byte, 32)
		rand.Read(k) // never fails (crypto/rand)
		return k
	}, a.Now())
	if err != nil {
		return nil, fmt.Errorf("reading the shared key %s: %w", name, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("the shared key %s in the database: %w", name, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("the seal of %s: %w", name, err)
	}
	return aead, nil
}

// setNext links the next page: r's own path and query with param set to
// value (a sealed cursor, or the audit trail's event id).
func setNext(w http.ResponseWriter, r *http.Request, param, value string) {
	next := url.Values{}
	for k, v := range r.URL.Query() {
		next[k] = v
	}
	next.Set(param, value)
	w.Header().Set("Link", "<"+r.URL.Path+"?"+next.Encode()+`>; rel="next"`)
}

// scanBudget is how many rows one page of a list filtered by authz reads
// at most: Deps.ListScan when set, else def.
func (a *api) scanBudget(def int) int {
	if a.ListScan > 0 {
		return a.ListScan
	}
	return def
}
