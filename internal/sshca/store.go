package sshca

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/crypto/ssh"
)

// FileName is the CA key's file in the server's data dir.
const FileName = "ssh_ca_ed25519"

// LoadOrCreate reads the CA's private key from path (an OpenSSH private key
// file), or creates an ed25519 key there (mode 0600, written to a temporary
// file and renamed, so a crash leaves no half key) when none exists. A key
// file readable by group or others is refused: whoever reads it can sign
// logins to every target that trusts it.
func LoadOrCreate(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return create(path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the SSH CA key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading the SSH CA key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the SSH CA key %s has mode %v: it must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parsing the SSH CA key %s: %w", path, err)
	}
	return s, nil
}

func create(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the SSH CA key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "jitgate SSH CA")
	if err != nil {
		return nil, fmt.Errorf("encoding the SSH CA key: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writing the SSH CA key: %w", err)
	}
	if _, err := f.Write(pem.EncodeToMemory(blk)); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the SSH CA key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the SSH CA key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing the SSH CA key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("writing the SSH CA key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("loading the SSH CA key: %w", err)
	}
	return s, nil
}
