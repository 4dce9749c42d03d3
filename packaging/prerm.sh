#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl stop jitgate-server.service jitgate-agent.service 2>/dev/null || true
fi
exit 0
