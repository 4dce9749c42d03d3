package store_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// TestOpenValidatesConfig: the configuration arrives with the store's
// construction and an invalid one is refused, naming the field, before
// any file is created.
func TestOpenValidatesConfig(t *testing.T) {
	valid := store.DefaultConfig()
	tests := []struct {
		name    string
		edit    func(*store.Config)
		wantErr string // "" for valid
	}{
		{"default", func(*store.Config) {}, ""},
		{"warnings and no brute-force alerts", func(c *store.Config) { c.ExpiryWarning, c.BruteForceThreshold = 10*time.Minute, 0 }, ""},
		{"zero approval timeout", func(c *store.Config) { c.ApprovalTimeout = 0 }, "approval timeout"},
		{"negative approval timeout", func(c *store.Config) { c.ApprovalTimeout = -time.Second }, "approval timeout"},
		{"negative expiry warning", func(c *store.Config) { c.ExpiryWarning = -time.Minute }, "expiry warning"},
		{"negative brute-force threshold", func(c *store.Config) { c.BruteForceThreshold = -1 }, "brute-force threshold"},
		{"zero value", func(c *store.Config) { *c = store.Config{} }, "approval timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			path := filepath.Join(t.TempDir(), "sub", "jitgate.db")
			s, err := store.OpenSQLite(t.Context(), path, cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("OpenSQLite(%+v): %v", cfg, err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("OpenSQLite(%+v) accepted an invalid configuration", cfg)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("OpenSQLite(%+v): error %q does not name %q", cfg, err, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("an invalid configuration created %s (stat: %v)", filepath.Dir(path), err)
			}
		})
	}
}
