//go:build !unix

package agent

import "os"

// waitLock is a no-op where flock does not exist: the agent runs on Linux
// only (it programs nftables); this keeps the package building elsewhere.
func waitLock(*os.File) error { return nil }
