// Package sshhost reads and cleans the SSH host public keys an agent
// reports, shared by the agent (which reads them) and the server (which
// stores only what passes again), so both hold the same rule.
package sshhost

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Bounds: a host has a handful of host keys; a file larger than MaxFile is
// not a public key.
const (
	MaxKeys = 16
	MaxFile = 16 << 10
)

// Clean keeps the plain public keys among lines (authorized_keys form, no
// options, no certificates), re-encoded without comment, each once, sorted,
// at most MaxKeys: nothing a compromised agent sends reaches a known_hosts
// file but well-formed keys.
func Clean(lines []string) []string {
	var out []string
	for _, l := range lines {
		if len(l) > MaxFile {
			continue
		}
		k, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(l))
		if err != nil || len(opts) > 0 || strings.TrimSpace(string(rest)) != "" {
			continue
		}
		if _, ok := k.(*ssh.Certificate); ok {
			continue
		}
		s := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	if len(out) > MaxKeys {
		out = out[:MaxKeys]
	}
	return out
}

// Read reads the files matching glob (at most MaxKeys files of at most
// MaxFile bytes) and returns their keys, cleaned. Unreadable files are left
// out: an inventory is a report, never a reason to stop.
func Read(glob string) []string {
	if glob == "" || glob == "none" {
		return nil
	}
	files, _ := filepath.Glob(glob)
	var lines []string
	for i, f := range files {
		if i >= MaxKeys {
			break
		}
		fi, err := os.Stat(f)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > MaxFile {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines = append(lines, strings.TrimSpace(string(b)))
	}
	return Clean(lines)
}
