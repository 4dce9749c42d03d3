package sshhost

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	ed  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
	ecd = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg="
)

// TestClean: only plain public keys pass, re-encoded without comment, once,
// sorted; options, certificates, garbage and escape sequences do not.
func TestClean(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"comment dropped", []string{ed + " root@host"}, []string{ed}},
		{"two kinds sorted, duplicates once", []string{ed, ecd, ed + " x"}, []string{ecd, ed}},
		{"options refused", []string{`command="sh" ` + ed}, nil},
		{"marker refused", []string{"@cert-authority * " + ed}, nil},
		{"garbage", []string{"not a key", "", "\x1b[31m" + ed}, nil},
		{"two keys in one entry", []string{ed + "\n" + ecd}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Clean(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("Clean = %q, want %q", got, tt.want)
			}
		})
	}
	many := make([]string, 0, MaxKeys+5)
	for range MaxKeys + 5 {
		many = append(many, ed)
	}
	if got := Clean(many); len(got) != 1 {
		t.Errorf("duplicates: %d keys", len(got))
	}
}

func TestRead(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "ssh_host_ed25519_key.pub"), []byte(ed+" root@h\n"), 0o644)
	os.WriteFile(filepath.Join(d, "ssh_host_ecdsa_key.pub"), []byte(ecd+"\n"), 0o644)
	os.WriteFile(filepath.Join(d, "ssh_host_big_key.pub"), []byte(strings.Repeat("A", MaxFile+1)), 0o644)
	got := Read(filepath.Join(d, "ssh_host_*_key.pub"))
	if !slices.Equal(got, []string{ecd, ed}) {
		t.Errorf("Read = %q", got)
	}
	if got := Read("none"); got != nil {
		t.Errorf("none: %q", got)
	}
}
