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
# The server's settings may hold secrets: readable by the server's group,
# not by every user (0640 from the package). An operator's own group kept.
if [ "$(stat -c %G /etc/jitgate/server.yaml 2>/dev/null)" = root ]; then
	chgrp jitgate /etc/jitgate/server.yaml
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
