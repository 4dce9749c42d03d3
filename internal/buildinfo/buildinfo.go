// Package buildinfo says which build of jitgate is running: the version and
// commit stamped at build time (scripts/release.sh), else what the Go
// toolchain recorded. The server exposes it in /metrics
// (jitgate_build_info) and in whoami, so an operator can see what each
// replica runs.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are set at build time:
//
//	go build -ldflags "-X github.com/jitgate/jitgate/internal/buildinfo.Version=v1.2.3 -X github.com/jitgate/jitgate/internal/buildinfo.Commit=abc123"
//
// Empty, they come from the module build info ("devel" and the VCS
// revision for a build from a checkout).
var Version, Commit string

// Info describes this binary.
type Info struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// Get returns the stamped values, completed from the build info.
func Get() Info {
	bi := Info{Version: Version, Commit: Commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		info = &debug.BuildInfo{}
	}
	if bi.Version == "" {
		bi.Version = info.Main.Version
	}
	if bi.Version == "" || bi.Version == "(devel)" {
		bi.Version = "devel"
	}
	if bi.Commit == "" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				bi.Commit = s.Value
			}
		}
	}
	return bi
}
