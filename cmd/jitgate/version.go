package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildInfo describes this binary.
type buildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// versionInfo reads the version from -ldflags or the module build info.
func versionInfo() buildInfo {
	bi := buildInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
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
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			bi.Commit = s.Value
		}
	}
	return bi
}

func (a *app) newVersionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  noArgs,
	}
	cmd.RunE = a.runE(func(context.Context, []string) error {
		bi := versionInfo()
		if a.jsonOut() {
			return a.printJSON(bi)
		}
		commit := ""
		if bi.Commit != "" {
			commit = " commit " + bi.Commit[:min(len(bi.Commit), 12)]
		}
		fmt.Fprintf(a.stdout, "jitgate %s%s (%s, %s)\n", bi.Version, commit, bi.Go, bi.Platform)
		return nil
	})
	return cmd
}
