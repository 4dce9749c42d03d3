package server

import "os"

// profileSignals is empty: Windows has no SIGUSR1, so no CPU profile on a
// signal there (the binary is built for Windows as the CLI).
var profileSignals []os.Signal
