#!/usr/bin/env bash
# jitgate demo on one machine (as root): builds jitgate, makes a client host and
# a server host (network namespaces joined by a veth pair) with a real sshd,
# runs the jitgate server and agent on the server host, and shows a port
# closed, a request, an ssh login, and the port closing on time.
# Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/demo.sh: run as root (it creates network namespaces and programs nftables)" >&2
	exit 1
fi
need=()
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"
GRANT=${GRANT:-15s}

work=$(mktemp -d /tmp/jitgate-demo.XXXXXX)
cli=jgdemo-client-$$
srv=jgdemo-server-$$
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	ip netns delete "$cli" 2>/dev/null || true
	ip netns delete "$srv" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_cli() { ip netns exec "$cli" "$@"; }
in_srv() { ip netns exec "$srv" "$@"; }
probe() { # probe SOURCE: can SOURCE open a TCP connection to the server's port 22?
	if in_cli timeout 0.5 bash -c "exec 3<>/dev/tcp/192.0.2.2/22" 2>/dev/null; then echo "port 22 from $1: OPEN"; else echo "port 22 from $1: closed"; fi
}

step "building jitgate"
go build -o "$work/jitgate" ./cmd/jitgate
jg="$work/jitgate"

step "making a client host (192.0.2.1) and a server host (192.0.2.2) with sshd"
ip netns add "$cli"
ip netns add "$srv"
ip -n "$cli" link set lo up
ip -n "$srv" link set lo up
ip -n "$cli" link add eth0 type veth peer name eth0 netns "$srv"
ip -n "$cli" addr add 192.0.2.1/24 dev eth0
ip -n "$srv" addr add 192.0.2.2/24 dev eth0
ip -n "$cli" link set eth0 up
ip -n "$srv" link set eth0 up
mkdir -p "$work/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host"
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/id"
cp "$work/ssh/id.pub" "$work/ssh/authorized_keys"
cat >"$work/ssh/sshd_config" <<CONF
Port 22
HostKey $work/ssh/host
AuthorizedKeysFile $work/ssh/authorized_keys
PidFile $work/ssh/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
LogLevel ERROR
CONF
ip netns exec "$srv" /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config" 2>"$work/sshd.log" &
pids+=($!)

step "starting the jitgate server and enrolling the server host's agent"
ip netns exec "$srv" "$jg" server --listen 0.0.0.0:8080 --data-dir "$work/data" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/data/admin.token" ] && break; sleep 0.1; done
export JITGATE_SERVER=http://192.0.2.2:8080 JITGATE_TOKEN
JITGATE_TOKEN=$(cat "$work/data/admin.token")
enroll=$(in_cli "$jg" target add web-01 --label group=demo --output json | sed -n 's/.*"enroll_token": *"\([^"]*\)".*/\1/p')
JITGATE_ENROLL_TOKEN=$enroll ip netns exec "$srv" "$jg" agent --server http://127.0.0.1:8080 --state-dir "$work/agent" 2>"$work/agent.log" &
pids+=($!)
sleep 1
probe 192.0.2.1

step "jitgate policy set web-01 --port 22/tcp --max 1h   (per-request source: a single address)"
in_cli "$jg" policy set web-01 --port 22/tcp --max 1h
sleep 0.5
in_srv nft list table inet jitgate
probe 192.0.2.1

step "jitgate request web-01 --port 22 --duration $GRANT --reason 'demo' --wait"
in_cli "$jg" request web-01 --port 22 --duration "$GRANT" --reason "demo" --wait
probe 192.0.2.1
in_srv nft list set inet jitgate hosts4

step "ssh root@192.0.2.2 through the grant"
in_cli ssh -i "$work/ssh/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
	-o ConnectTimeout=2 -o LogLevel=ERROR root@192.0.2.2 'echo "logged in to $(hostname) over ssh: $SSH_CONNECTION"'

step "waiting for the grant to expire ($GRANT)"
in_cli "$jg" requests --active
secs=${GRANT%s}
sleep "$((secs + 1))"
probe 192.0.2.1
sleep 1
in_cli "$jg" requests
step "audit trail"
in_cli "$jg" audit --target web-01
step "done: cleaning up namespaces and processes"
