package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/jitgate/jitgate/internal/"

// domain lists the pure packages: the rules live here, once, and take now.
var domain = []string{"access", "policy", "authz", "inventory", "session", "audit", "alert", "text"}

// forbiddenStd are standard-library adapters: talking HTTP or SQL or
// running programs belongs to the edges that import the domain.
var forbiddenStd = []string{"net/http", "database/sql", "os/exec"}

// allowed says whether a (transitive) dependency of a domain package keeps
// the domain pure: the standard library minus its adapters, and the other
// domain packages. Everything else (internal/store, internal/api,
// google/nftables, a SQL driver…) is an adapter.
func allowed(dep string) bool {
	for _, d := range domain {
		if dep == module+d {
			return true
		}
	}
	for _, f := range forbiddenStd {
		if dep == f || strings.HasPrefix(dep, f+"/") {
			return false
		}
	}
	first, _, _ := strings.Cut(dep, "/")
	return !strings.Contains(first, ".") // standard library paths have no dot in their first element
}

// TestDomainImportsNoAdapter fails when a domain package depends, even
// indirectly, on an adapter.
func TestDomainImportsNoAdapter(t *testing.T) {
	args := []string{"list", "-deps", "-json=ImportPath,Deps"}
	for _, d := range domain {
		args = append(args, "../"+d)
	}
	cmd := exec.Command("go", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	dec := json.NewDecoder(out)
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		deps[p.ImportPath] = p.Deps
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, d := range domain {
		ds, ok := deps[module+d]
		if !ok {
			t.Errorf("go list did not list %s", module+d)
			continue
		}
		for _, dep := range ds {
			if !allowed(dep) {
				t.Errorf("domain package internal/%s depends on %s: keep adapters out of the domain (docs/design.md)", d, dep)
			}
		}
	}
}

// TestAllowed checks the rule itself on examples, so a wrong rule cannot
// make the test above pass vacuously.
func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		dep  string
		want bool
	}{
		{"time", true},
		{"net/netip", true},
		{"crypto/sha256", true},
		{module + "policy", true},
		{"net/http", false},
		{"net/http/httptest", false},
		{"database/sql", false},
		{"os/exec", false},
		{module + "store", false},
		{module + "api", false},
		{module + "firewall/nft", false},
		{"github.com/google/nftables", false},
		{"modernc.org/sqlite", false},
	} {
		if got := allowed(tc.dep); got != tc.want {
			t.Errorf("allowed(%q) = %v, want %v", tc.dep, got, tc.want)
		}
	}
}
