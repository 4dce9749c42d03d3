package store_test

import (
	"os/exec"
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

// TestStoreDoesNotSpeakWire fails when the store depends, even indirectly,
// on the API's wire types: it keeps domain types (the inventory as
// inventory.Host, webhook events as WebhookEvent snapshots), and
// internal/api and internal/notify convert them.
func TestStoreDoesNotSpeakWire(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == module+"internal/wire" {
			t.Error("internal/store depends on internal/wire: keep domain types in the store; convert in internal/api or internal/notify")
		}
	}
}
