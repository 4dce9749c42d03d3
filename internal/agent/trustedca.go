package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/sshca/sshhost"
	"github.com/jitgate/jitgate/internal/wire"
)

// caFetcher is the part of the server the trusted-CA installer needs.
type caFetcher interface {
	AgentSSHCA(ctx context.Context) (wire.SSHCA, error)
}

// runTrustedCA keeps cfg.SSHTrustedCA holding the server's SSH certificate
// authority key (opt-in: the file sshd's TrustedUserCAKeys names). It fetches
// at start, retrying until it succeeds, then every resync period, so a
// rotated CA key reaches the host without a restart.
func (a *Agent) runTrustedCA(ctx context.Context, f caFetcher) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = a.cfg.ResyncEvery
		ca, err := f.AgentSSHCA(ctx)
		if err == nil {
			err = writeTrustedCA(a.cfg.SSHTrustedCA, ca.PublicKey)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("installing the SSH certificate authority key", "file", a.cfg.SSHTrustedCA, "err", err)
			wait = min(a.maxBackoff, time.Second)
		}
	}
}

// writeTrustedCA writes the CA key line to path (0644, sshd reads it as
// root; replaced by rename, so sshd never reads half a file) when it differs
// from what is there. Only a well-formed plain public key is written: a
// server that answered anything else would otherwise write sshd's trust.
func writeTrustedCA(path, line string) error {
	line = strings.TrimSpace(line)
	k, _, opts, rest, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil || len(opts) > 0 || strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("the server's CA key is not one plain public key (err %v)", err)
	}
	if _, ok := k.(*gossh.Certificate); ok {
		return errors.New("the server's CA key is a certificate")
	}
	// What is written is the key re-encoded, never the server's text.
	want := []byte(strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k))) + " jitgate-ssh-ca\n")
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, want) {
		return nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jitgate-ca-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(want); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// DefaultSSHHostKeys are the host key files OpenSSH's sshd uses by default.
const DefaultSSHHostKeys = "/etc/ssh/ssh_host_*_key.pub"

// readHostKeys reads the host's SSH host public keys for the inventory.
func readHostKeys(glob string) []string {
	if glob == "" {
		glob = DefaultSSHHostKeys
	}
	return sshhost.Read(glob)
}
