package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/sshca"
	"github.com/jitgate/jitgate/internal/store"
)

// breakGlassKeyName is the offline break-glass signing key's file in
// DATA_DIR, and breakGlassSharedName its public half among the database's
// shared keys.
const (
	breakGlassKeyName    = "breakglass_ed25519"
	breakGlassSharedName = "breakglass-public-key"
)

// loadBreakGlassKey reads (or makes, on the first start) the Ed25519 key
// that signs offline break-glass tokens: a file of its own in DATA_DIR,
// 0600, written the way the SSH CA key is (sshca.LoadOrCreate: atomic, and
// refused when group or others may read it). It is not the SSH CA key: a
// token signature can never pass for a certificate, or the other way round.
// As for the SSH CA, the first server on a database records the public key
// there and a replica holding another key refuses to start: agents verify
// tokens against the key their server sent, so every replica must sign with
// the same one.
func loadBreakGlassKey(ctx context.Context, st *store.Store, path string, now time.Time) (ed25519.PrivateKey, error) {
	if _, err := sshca.LoadOrCreate(path); err != nil {
		return nil, fmt.Errorf("break-glass key: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the break-glass key: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parsing the break-glass key %s: %w", path, err)
	}
	k, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the break-glass key %s is not an Ed25519 key", path)
	}
	pub := []byte(k.Public().(ed25519.PublicKey))
	rec, err := st.SharedKey(ctx, breakGlassSharedName, func() []byte { return pub }, now)
	if err != nil {
		return nil, fmt.Errorf("recording the break-glass public key in the database: %w", err)
	}
	if !bytes.Equal(rec, pub) {
		return nil, fmt.Errorf("the break-glass key %s is not the key the other servers of this database sign tokens with: copy %s of a server already running on this database (mode 0600)", path, breakGlassKeyName)
	}
	return *k, nil
}
