package store

import (
	"context"
	"fmt"
	"strings"
)

// RequestVersions returns the current version of each of the requests ids
// of target (those that exist), in one read per 500 ids: the API's hub
// checks every client long-poll waiting on a target with it after a change
// there, instead of each waiter re-reading its whole request.
func (s *Store) RequestVersions(ctx context.Context, target string, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, target)
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", i+2)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT id, version FROM requests WHERE target = $1 AND id IN (`+strings.Join(ph, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("reading the versions of requests of %s: %w", target, err)
		}
		for rows.Next() {
			var id string
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading the versions of requests of %s: %w", target, err)
			}
			out[id] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reading the versions of requests of %s: %w", target, err)
		}
	}
	return out, nil
}
