package replica

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var (
	secret = Secret("0123456789abcdef0123456789abcdef")
	other  = Secret("fedcba9876543210fedcba9876543210")
	now    = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
)

func TestVerify(t *testing.T) {
	const target = "/api/v1/replica/tunnel?target=web-1&port=22"
	tests := []struct {
		name   string
		sign   Secret // nil: no header
		signAt time.Time
		edit   func(r *httptestRequest)
		ok     bool
	}{
		{name: "valid", sign: secret, signAt: now, ok: true},
		{name: "no header", signAt: now},
		{name: "wrong secret", sign: other, signAt: now},
		{name: "too old", sign: secret, signAt: now.Add(-Window - time.Second)},
		{name: "from the future", sign: secret, signAt: now.Add(Window + time.Second)},
		{name: "query changed", sign: secret, signAt: now, edit: func(r *httptestRequest) { r.URL.RawQuery = "target=db-1&port=22" }},
		{name: "path changed", sign: secret, signAt: now, edit: func(r *httptestRequest) { r.URL.Path = "/api/v1/other" }},
		{name: "garbage", signAt: now, edit: func(r *httptestRequest) { r.Header.Set(Header, "v1 x y z") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", target, nil)
			if tt.sign != nil {
				tt.sign.Sign(r, tt.signAt)
			}
			if tt.edit != nil {
				tt.edit(r)
			}
			v := &Verifier{}
			err := v.Verify(secret, r, now)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("error %v is not ErrUnauthenticated", err)
			}
		})
	}
}

type httptestRequest = http.Request

func TestReplay(t *testing.T) {
	r := httptest.NewRequest("GET", "/api/v1/replica/tunnel?target=web-1", nil)
	secret.Sign(r, now)
	v := &Verifier{}
	if err := v.Verify(secret, r, now); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(secret, r, now.Add(time.Second)); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("replayed request: %v, want refused", err)
	}
	// A server without a secret accepts nothing.
	if err := (&Verifier{}).Verify(nil, r, now); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("verifier without a secret: %v", err)
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	tests := []struct {
		path string
		ok   bool
	}{
		{write("good", string(secret)+"\n", 0o600), true},
		{write("short", "tooshort\n", 0o600), false},
		{write("readable", string(secret), 0o644), false},
		{filepath.Join(dir, "missing"), false},
	}
	for _, tt := range tests {
		s, err := LoadSecret(tt.path)
		if (err == nil) != tt.ok {
			t.Errorf("LoadSecret(%s) = %v, want ok %v", filepath.Base(tt.path), err, tt.ok)
		}
		if err == nil && string(s) != string(secret) {
			t.Errorf("LoadSecret(%s) = %q", tt.path, s)
		}
	}
}
