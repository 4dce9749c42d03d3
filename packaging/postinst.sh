#!/bin/sh
# Creates the jitgate system user (sysusers.d), then reloads systemd. A
# first install starts no unit: the server needs its settings, the agent its
# enrollment token (docs/operations.md, "Install from the .deb"). An upgrade
# restarts the units that were running.
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
	# An upgrade ($2: the version replaced) restarts the units that run,
	# on the new binary; a first install starts nothing.
	if [ "$1" = configure ] && [ -n "$2" ]; then
		systemctl try-restart jitgate-server.service jitgate-agent.service || true
	fi
fi
exit 0
