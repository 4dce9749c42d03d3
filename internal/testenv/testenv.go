// Package testenv gates tests that need the real kernel (root, network
// namespaces, the ip and nft tools) and gives them throwaway network
// namespaces and veth links.
//
// Outside CI a test whose requirements are missing is skipped, so a developer
// without root can still run the unit tests. When the CI environment variable
// is set the same test fails instead: CI must never report green for a kernel
// test that did not run.
//
// The package is for tests only; production code must not import it.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireRoot skips (or, under CI, fails) tb unless the process runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		unavailable(tb, "test needs root (euid is %d)", os.Geteuid())
	}
}

// RequireTool skips (or, under CI, fails) tb unless the named program is on PATH.
func RequireTool(tb testing.TB, name string) {
	tb.Helper()
	if _, err := exec.LookPath(name); err != nil {
		unavailable(tb, "test needs the %q tool: %v", name, err)
	}
}

// RequireKernel is RequireRoot plus RequireTool for "ip" and "nft": what a test
// that builds namespaces and inspects nftables needs.
func RequireKernel(tb testing.TB) {
	tb.Helper()
	RequireRoot(tb)
	RequireTool(tb, "ip")
	RequireTool(tb, "nft")
}

// InCI reports whether the CI environment variable is set.
func InCI() bool { return os.Getenv("CI") != "" }

func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("CI is set, refusing to skip: "+format, args...)
	}
	tb.Skipf(format, args...)
}
