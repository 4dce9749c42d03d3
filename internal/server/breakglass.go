package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
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
// that signs offline break-glass tokens: a file of its own, 0600, beside
// the SSH CA key (DATA_DIR by default), written the way that key is
// (sshca.LoadOrCreate: atomic, and refused when group or others may read
// it). It is not the SSH CA key: a token signature can never pass for a
// certificate, or the other way round. Replicas that share the CA key file
// (--ssh-ca-key-file) share this one too.
//
// The first server on a database records the public key there. A replica
// holding another key does not sign tokens or send its key to agents (nil
// is returned, and logged as an error): agents verify tokens against the
// key their server sent, and two keys would make tokens verify on some
// hosts only. It still starts, so that an operator's mistake with this key
// does not take down access for everyone.
func loadBreakGlassKey(ctx context.Context, st *store.Store, path string, log *slog.Logger, now time.Time) (ed25519.PrivateKey, error) {
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
		log.Error("the break-glass key is not the one the other servers of this database sign tokens with: this server neither issues tokens nor sends its key to agents; copy "+
			breakGlassKeyName+" of a server already running on this database beside the SSH CA key (mode 0600)", "file", path)
		return nil, nil
	}
	return *k, nil
}
