// Package smallfile reads files that jitgate expects to be small (marks,
// locks, credentials) without trusting their size: a huge file, or a link to
// an endless one such as /dev/zero, is refused instead of exhausting memory.
package smallfile

import (
	"fmt"
	"io"
	"os"
)

// Read returns the contents of path, or an error when it holds more than max
// bytes. Errors from opening keep their kind (errors.Is(err, fs.ErrNotExist)).
func Read(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
