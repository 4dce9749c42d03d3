//go:build !linux

package main

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
)

// newAgentCmd says where the agent runs: it programs nftables, which only
// Linux has. The client commands (request, connect, ssh, ...) work here.
func (a *app) newAgentCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the agent on a protected host (Linux only)",
		Args:  cobra.ArbitraryArgs,
		RunE: a.runE(func(_ context.Context, _ []string) error {
			return errors.New("the agent runs on Linux only (it programs nftables)")
		}),
	}
}
