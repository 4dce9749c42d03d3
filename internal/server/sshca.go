package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// sshCAKeyName names the SSH CA's public key among the database's shared
// keys.
const sshCAKeyName = "ssh-ca-public-key"

// checkSharedCA makes every replica of one database sign SSH certificates
// with the same CA key. The key stays in a file of its own (0600; the
// database never holds the private key), but the first server to start on
// a database records its public key there, and a server whose key differs
// refuses to start: otherwise replicas would sign with different keys and a
// target trusting one would refuse certificates signed by the others,
// depending on which replica a request reached. With rotate set the
// server's key replaces the recorded one, audited (the rotation's step).
func checkSharedCA(ctx context.Context, st *store.Store, ca ssh.Signer, path string, rotate bool, replica string, log *slog.Logger, now time.Time) error {
	pub := bytes.TrimSpace(ssh.MarshalAuthorizedKey(ca.PublicKey()))
	mine := ssh.FingerprintSHA256(ca.PublicKey())
	if rotate {
		var old string
		if rec, err := st.SharedKey(ctx, sshCAKeyName, func() []byte { return pub }, now); err != nil {
			return fmt.Errorf("reading the SSH CA key recorded in the database: %w", err)
		} else if bytes.Equal(rec, pub) {
			log.Info("--ssh-ca-rotate: the database already records this SSH CA key", "key", mine)
			return nil
		} else {
			old = fingerprint(rec)
		}
		if err := st.ReplaceSharedKey(ctx, sshCAKeyName, pub, audit.Event{At: now, Actor: audit.System, Action: audit.SSHCAReplaced,
			Details: map[string]any{"old": old, "new": mine, "replica": replica}}); err != nil {
			return fmt.Errorf("recording the new SSH CA key: %w", err)
		}
		log.Warn("SSH CA key replaced in the database: replicas holding the old key refuse to start until given the new file", "old", old, "new", mine)
		return nil
	}
	rec, err := st.SharedKey(ctx, sshCAKeyName, func() []byte { return pub }, now)
	if err != nil {
		return fmt.Errorf("recording the SSH CA key in the database: %w", err)
	}
	if !bytes.Equal(rec, pub) {
		return fmt.Errorf("the SSH CA key %s (%s) is not the key the other servers of this database sign with (%s): "+
			"copy the ssh_ca_ed25519 file of a server already running on this database to %s (mode 0600), "+
			"or point --ssh-ca-key-file at a shared copy; to rotate the key on purpose, start with --ssh-ca-rotate (docs/operations.md)",
			path, mine, fingerprint(rec), path)
	}
	return nil
}

// fingerprint is the SHA256 fingerprint of an authorized_keys line, or the
// line itself when it does not parse.
func fingerprint(line []byte) string {
	k, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return fmt.Sprintf("unreadable key %q", line)
	}
	return ssh.FingerprintSHA256(k)
}
