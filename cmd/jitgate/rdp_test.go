package main

import (
	"errors"
	"slices"
	"testing"
)

// TestRDPCommand checks which RDP client jitgate rdp starts on each
// platform and the command line it points at the tunnel.
func TestRDPCommand(t *testing.T) {
	onPath := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			if slices.Contains(names, n) {
				return "/usr/bin/" + n, nil
			}
			return "", errors.New("not found")
		}
	}
	tests := []struct {
		name      string
		goos      string
		lookPath  func(string) (string, error)
		opts      []string
		wantFound bool
		want      []string
	}{
		{"linux xfreerdp", "linux", onPath("xfreerdp", "wlfreerdp"), []string{"/sec:tls"}, true, []string{"xfreerdp", "/v:127.0.0.1:40001", "/sec:tls"}},
		{"linux wayland only", "linux", onPath("wlfreerdp"), nil, true, []string{"wlfreerdp", "/v:127.0.0.1:40001"}},
		{"linux none", "linux", onPath(), nil, false, []string{"xfreerdp", "/v:127.0.0.1:40001"}},
		{"freebsd xfreerdp", "freebsd", onPath("xfreerdp"), nil, true, []string{"xfreerdp", "/v:127.0.0.1:40001"}},
		{"darwin", "darwin", onPath("open"), nil, true, []string{"open", "rdp://full%20address=s:127.0.0.1:40001"}},
		{"windows", "windows", onPath("mstsc"), []string{"/f"}, true, []string{"mstsc", "/v:127.0.0.1:40001", "/f"}},
		{"windows without mstsc", "windows", onPath(), nil, false, []string{"mstsc", "/v:127.0.0.1:40001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, found := rdpClient(tt.goos, tt.lookPath)
			if found != tt.wantFound {
				t.Errorf("rdpClient found = %v, want %v", found, tt.wantFound)
			}
			if got := rdpCommand(tt.goos, client, "127.0.0.1:40001", tt.opts); !slices.Equal(got, tt.want) {
				t.Errorf("rdpCommand = %q, want %q", got, tt.want)
			}
		})
	}
}
