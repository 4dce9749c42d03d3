#!/bin/sh
# Creates the jitgate system user (sysusers.d), then reloads systemd. The
# units are not started: the server needs its settings, the agent its
# enrollment token (docs/operations.md, "Install from the .deb").
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/jitgate.conf
elif ! getent passwd jitgate >/dev/null; then
	adduser --system --group --home /var/lib/jitgate --no-create-home jitgate
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
