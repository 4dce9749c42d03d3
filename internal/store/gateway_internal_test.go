package store

import (
	"context"
	"fmt"
	"testing"
)

// TestMigration0008 upgrades a database written before targets behind a
// gateway had several addresses and before unpublishing deleted mappings:
// the one address moves into the address list, and mappings of ports no
// longer published (or of targets without a policy) are deleted, so the
// gateway stops installing them.
func TestMigration0008(t *testing.T) {
	ctx := context.Background()
	s := remigrate(t, "0008_gateway_addresses",
		`INSERT INTO targets (name, labels, created_at, gateway, address, policy) VALUES ('a', '{}', 0, 'g', '10.0.0.5',
			'{"rules":[{"port":22,"protocol":"tcp","publish":true},{"port":3389,"protocol":"tcp"},{"port":53,"protocol":"udp","publish":true}]}')`,
		`INSERT INTO targets (name, labels, created_at, gateway, address) VALUES ('b', '{}', 0, 'g', '10.0.0.6')`,
		`INSERT INTO targets (name, labels, created_at, addresses) VALUES ('h', '{}', 0, '["192.0.2.5"]')`,
		`INSERT INTO mappings VALUES ('g','a','tcp',22,20000), ('g','a','tcp',3389,20001), ('g','a','udp',53,20000), ('g','a','tcp',53,20003), ('g','b','tcp',22,20002)`,
	)
	rows, err := s.db.QueryContext(ctx, `SELECT target, protocol, port FROM mappings ORDER BY target, protocol, port`)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for rows.Next() {
		var (
			tg, proto string
			port      int
		)
		rows.Scan(&tg, &proto, &port)
		left = append(left, fmt.Sprintf("%s %d/%s", tg, port, proto))
	}
	rows.Close()
	if fmt.Sprint(left) != "[a 22/tcp a 53/udp]" {
		t.Errorf("mappings after migration: %v, want only a's published 22/tcp and 53/udp", left)
	}
	for name, want := range map[string]string{"a": "[10.0.0.5]", "b": "[10.0.0.6]", "h": "[192.0.2.5]"} {
		tg, err := s.GetTarget(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(tg.Addresses) != want {
			t.Errorf("%s: addresses %v after migration, want %s", name, tg.Addresses, want)
		}
	}
}
