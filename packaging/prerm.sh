#!/bin/sh
# Stops the units when the package is removed. Not on an upgrade: the
# postinst of the new version restarts the running ones (try-restart), so
# the agent is down only for the restart; stopped here and never started
# again, it left revocations unapplied until grants timed out.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop jitgate-server.service jitgate-agent.service 2>/dev/null || true
fi
exit 0
