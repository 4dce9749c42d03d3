package store_test

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/jitgate/jitgate/"

// TestStoreDoesNotImportTheEdge fails when the store depends, even
// indirectly, on the API edge: it persists domain types, and the handlers
// convert them (internal/api/convert.go).
func TestStoreDoesNotImportTheEdge(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, edge := range []string{"internal/api", "internal/web", "internal/httpedge", "internal/server", "internal/client", "internal/agent", "cmd"} {
			if dep == module+edge || strings.HasPrefix(dep, module+edge+"/") {
				t.Errorf("internal/store depends on %s", dep)
			}
		}
	}
}

// wireImporters are the store's files that still speak the API's wire
// types, each for a reason being removed (issue 12): the desired state's
// entries (gateway.go), the webhook payload (outbox.go) and the host
// inventory (targets.go, gateway.go). The list only shrinks: a new file
// importing internal/wire fails the test, and so does a listed file that
// stopped (remove it from the list).
var wireImporters = []string{"gateway.go", "targets.go"}

func TestWireImportsShrink(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var importers []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == module+"internal/wire" {
				importers = append(importers, f)
			}
		}
	}
	for _, f := range importers {
		if !slices.Contains(wireImporters, f) {
			t.Errorf("%s imports internal/wire: the store returns domain types; convert in internal/api", f)
		}
	}
	for _, f := range wireImporters {
		if !slices.Contains(importers, f) {
			t.Errorf("%s no longer imports internal/wire: take it off wireImporters", f)
		}
	}
}
