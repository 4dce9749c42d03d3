package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckServerURL(t *testing.T) {
	for _, tc := range []struct {
		url      string
		insecure bool
		refused  bool
	}{
		{url: "https://jit.example.com"},
		{url: "https://192.0.2.2:8443"},
		{url: "http://127.0.0.1:8080"},
		{url: "http://127.9.9.9:8080"},
		{url: "http://[::1]:8080"},
		{url: "http://[::ffff:127.0.0.1]:8080"},
		{url: "http://localhost:8080"},
		{url: "HTTP://LOCALHOST:8080"},
		{url: "http://192.0.2.2:8080", refused: true},
		{url: "http://[2001:db8::2]:8080", refused: true},
		{url: "http://0.0.0.0:8080", refused: true},
		{url: "http://jit.example.com", refused: true},
		{url: "http://localhost.example.com", refused: true},
		{url: "http://127.0.0.1.example.com", refused: true},
		{url: "Http://192.0.2.2", refused: true},
		{url: "http://192.0.2.2:8080", insecure: true},
		{url: "http://jit.example.com", insecure: true},
		// Several replicas: every URL is checked.
		{url: "https://a.example.com,https://b.example.com"},
		{url: "http://127.0.0.1:8080, http://127.0.0.2:8080"},
		{url: "https://a.example.com,http://192.0.2.3:8080", refused: true},
	} {
		err := CheckServerURL(tc.url, tc.insecure)
		if (err != nil) != tc.refused {
			t.Errorf("CheckServerURL(%q, insecure=%v) = %v, want refused %v", tc.url, tc.insecure, err, tc.refused)
			continue
		}
		if err != nil && (!strings.Contains(err.Error(), "--insecure-http") || strings.Contains(err.Error(), "\n")) {
			t.Errorf("CheckServerURL(%q): %q, want one line naming --insecure-http", tc.url, err)
		}
	}
}

// TestRunRefusesRemotePlainHTTP: the agent stops before it sends anything
// (neither the enrollment token nor a remembered credential) to a remote
// plain-http server.
func TestRunRefusesRemotePlainHTTP(t *testing.T) {
	t.Run("enrolling", func(t *testing.T) {
		err := Run(context.Background(), Config{ServerURL: "http://192.0.2.2:8080", EnrollToken: "jge_x", StateDir: t.TempDir()}, &fakeBackend{})
		if err == nil || !strings.Contains(err.Error(), "--insecure-http") {
			t.Fatalf("Run = %v, want a refusal naming --insecure-http", err)
		}
	})
	t.Run("remembered URL", func(t *testing.T) {
		dir := t.TempDir()
		if err := saveCredential(filepath.Join(dir, credentialName), credential{ServerURL: "http://192.0.2.2:8080", Target: "web-1", Credential: "jga_x"}); err != nil {
			t.Fatal(err)
		}
		err := Run(context.Background(), Config{StateDir: dir}, &fakeBackend{})
		if err == nil || !strings.Contains(err.Error(), "--insecure-http") {
			t.Fatalf("Run = %v, want a refusal naming --insecure-http", err)
		}
	})
}

func TestSameURL(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"https://a.example", "https://a.example/", true},
		{"https://a.example,https://b.example", "https://b.example/, https://a.example", true},
		{"https://a.example", "https://a.example,https://b.example", false},
		{"https://a.example,https://b.example", "https://a.example,https://c.example", false},
	} {
		if got := sameURL(tc.a, tc.b); got != tc.want {
			t.Errorf("sameURL(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
