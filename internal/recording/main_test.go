package recording_test

import (
	"os"
	"testing"

	"github.com/jitgate/jitgate/internal/testenv"
)

// TestMain stops the throwaway PostgreSQL server TestRetentionSweep starts.
func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }
