package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/buildinfo"
	"github.com/jitgate/jitgate/internal/wire"
)

// versionInfo is this binary's build: the version stamped with -ldflags
// (scripts/release.sh sets internal/buildinfo.Version and .Commit; the
// older -X main.version still works) or the module build info.
func versionInfo() buildinfo.Info {
	if version != "" && buildinfo.Version == "" {
		buildinfo.Version = version
	}
	return buildinfo.Get()
}

// versionOutput is what jitgate version -o json prints.
type versionOutput struct {
	buildinfo.Info
	// Server is the version of the server the client settings name, when
	// there is one and it answered.
	Server *wire.ServerBuild `json:"server,omitempty"`
	// ServerError says why the server's version is missing, when a server
	// was named.
	ServerError string `json:"server_error,omitempty"`
}

func (a *app) newVersionCmd() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary, and of the server when one is configured",
		Long: `Print the version of this binary. When a server and a token are configured
(--server/--token, JITGATE_SERVER/JITGATE_TOKEN or the config file), ask the
server for its version too (--client: only this binary).`,
		Args: noArgs,
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only this binary's version; do not ask the server")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		out := versionOutput{Info: versionInfo()}
		if !clientOnly {
			if c, _, err := a.client(); err == nil {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				who, err := c.Whoami(ctx)
				switch {
				case err != nil:
					out.ServerError = errorLine(err)
				case who.Server == nil:
					out.ServerError = "the server does not report its version (older than this client)"
				default:
					out.Server = who.Server
				}
			}
		}
		if a.jsonOut() {
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "client: jitgate %s%s (%s, %s)\n", out.Version, shortCommit(out.Commit), out.Go, out.Platform)
		switch {
		case out.Server != nil:
			fmt.Fprintf(a.stdout, "server: jitgate %s%s (%s)\n", out.Server.Version, shortCommit(out.Server.Commit), out.Server.Go)
		case out.ServerError != "":
			fmt.Fprintf(a.stdout, "server: unknown (%s)\n", out.ServerError)
		}
		return nil
	})
	return cmd
}

// shortCommit renders a commit id as " commit <12 hex>", or nothing.
func shortCommit(c string) string {
	if c == "" {
		return ""
	}
	return " commit " + c[:min(len(c), 12)]
}
