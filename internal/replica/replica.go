// Package replica is the channel between jitgate server replicas that share
// one database: a replica forwards a bastion stream to the replica that
// holds the target agent's relay connection (internal/api, replicas.go).
//
// The channel is authenticated by a secret shared by every replica (a file,
// --replica-secret-file). The secret itself never crosses the network: each
// request carries an HMAC-SHA256 of its method, path and query, a time and
// a random nonce, keyed by the secret. A receiver accepts a request only
// with a valid MAC, made within Window of its own clock, whose nonce it has
// not seen (a captured request cannot be replayed). Without the secret
// nothing reaches the endpoint; with it, the receiving replica still checks
// the stream against a live bastion grant itself before it splices, so a
// leaked secret alone opens nothing either.
package replica

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header carries the MAC: "v1 UNIX-SECONDS NONCE HEX-MAC".
const Header = "X-Jitgate-Replica"

// Window is how far a request's time may be from the receiver's clock.
const Window = 30 * time.Second

// MinSecret is the shortest secret accepted, in bytes.
const MinSecret = 32

// ErrUnauthenticated is a request without a valid MAC.
var ErrUnauthenticated = errors.New("not an authenticated replica")

// Secret is the shared secret of the replicas.
type Secret []byte

// LoadSecret reads the secret from path: at least MinSecret bytes once
// surrounding white space is cut, in a file no one but its owner may read.
func LoadSecret(path string) (Secret, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("replica secret: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("replica secret %s is readable by group or others (mode %s): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("replica secret: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < MinSecret {
		return nil, fmt.Errorf("replica secret %s holds %d bytes; at least %d are needed (e.g. head -c 32 /dev/urandom | base64 > %s)", path, len(b), MinSecret, path)
	}
	return Secret(b), nil
}

func (s Secret) mac(ts, nonce, method, path, query string) string {
	m := hmac.New(sha256.New, s)
	fmt.Fprintf(m, "jitgate-replica-v1\n%s\n%s\n%s\n%s\n%s", ts, nonce, method, path, query)
	return hex.EncodeToString(m.Sum(nil))
}

// Sign sets r's Header for now. It covers r's method, path and raw query.
func (s Secret) Sign(r *http.Request, now time.Time) {
	var n [16]byte
	rand.Read(n[:])
	nonce := hex.EncodeToString(n[:])
	ts := strconv.FormatInt(now.Unix(), 10)
	r.Header.Set(Header, "v1 "+ts+" "+nonce+" "+s.mac(ts, nonce, r.Method, r.URL.Path, r.URL.RawQuery))
}

// Verifier checks the requests of other replicas, remembering the nonces
// seen within the window. The zero value is ready.
type Verifier struct {
	mu   sync.Mutex
	seen map[string]time.Time // nonce -> when it may be forgotten
}

// Verify checks r's Header against secret at now; ErrUnauthenticated
// (wrapped with why) when there is no secret, or the header is missing,
// malformed, wrong, out of the window or replayed.
func (v *Verifier) Verify(secret Secret, r *http.Request, now time.Time) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: this server has no replica secret", ErrUnauthenticated)
	}
	f := strings.Fields(r.Header.Get(Header))
	if len(f) != 4 || f[0] != "v1" || len(f[2]) != 32 {
		return fmt.Errorf("%w: no valid %s header", ErrUnauthenticated, Header)
	}
	sec, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed time", ErrUnauthenticated)
	}
	want := secret.mac(f[1], f[2], r.Method, r.URL.Path, r.URL.RawQuery)
	if !hmac.Equal([]byte(want), []byte(f[3])) {
		return fmt.Errorf("%w: wrong MAC", ErrUnauthenticated)
	}
	at := time.Unix(sec, 0)
	if d := now.Sub(at); d > Window || d < -Window {
		return fmt.Errorf("%w: made %s from this server's clock (more than %s)", ErrUnauthenticated, d.Round(time.Second), Window)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = map[string]time.Time{}
	}
	for n, until := range v.seen {
		if now.After(until) {
			delete(v.seen, n)
		}
	}
	if _, ok := v.seen[f[2]]; ok {
		return fmt.Errorf("%w: replayed", ErrUnauthenticated)
	}
	v.seen[f[2]] = at.Add(Window + time.Second)
	return nil
}
