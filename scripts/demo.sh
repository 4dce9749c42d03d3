#!/usr/bin/env bash
# jitgate demo on one machine (as root): builds jitgate, makes a client host, a
# second client and a server host (network namespaces joined by veth pairs) with
# a real sshd, runs the jitgate server and agent on the server host, and shows a
# port closed, a refused request, a granted one (open for the requesting address
# only: the second client stays closed), an ssh login, and the port closing on
# time. Every step is checked: the script exits non-zero at the first claim that
# does not hold. It ends with the web console's address (on a terminal it waits
# for Enter so you can look; HOLD=0 skips that). Everything it creates is removed
# on exit. GRANT=1m (seconds s, minutes m; at most 1h) sets the grant's length.
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
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"
GRANT=${GRANT:-15s}
case "$GRANT" in
*[0-9]s) secs=${GRANT%s} ;;
*[0-9]m) secs=$((${GRANT%m} * 60)) ;;
*[0-9]) secs=$GRANT ;;
*) secs=x ;;
esac
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 5 ] || [ "$secs" -gt 3600 ]; then
	echo "scripts/demo.sh: GRANT=$GRANT: use seconds or minutes from 5s to 60m, such as GRANT=15s or GRANT=1m" >&2
	exit 2
fi
HOLD=${HOLD:-1}

work=$(mktemp -d /tmp/jitgate-demo.XXXXXX)
cli=jgdemo-client-$$
other=jgdemo-other-$$
srv=jgdemo-server-$$
hostif=jgdemo$$
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	ip netns delete "$cli" 2>/dev/null || true
	ip netns delete "$other" 2>/dev/null || true
	ip netns delete "$srv" 2>/dev/null || true
	ip link delete "$hostif" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

started=$SECONDS
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '   \033[32mok\033[0m: %s\n' "$*"; }
fail() {
	printf '\n\033[31mdemo FAILED\033[0m: %s\n' "$*" >&2
	for f in server agent; do
		[ -s "$work/$f.log" ] && { echo "--- last lines of the $f's log:" >&2; tail -n 15 "$work/$f.log" >&2; }
	done
	exit 1
}
in_cli() { ip netns exec "$cli" "$@"; }
in_srv() { ip netns exec "$srv" "$@"; }
# can NS open a TCP connection to the server's port 22?
reach() { ip netns exec "$1" timeout 0.5 bash -c "exec 3<>/dev/tcp/$2/22" 2>/dev/null; }
# expect open|closed NS SERVER-ADDRESS LABEL: waits up to 5 s for the state.
expect() {
	local want=$1 ns=$2 addr=$3 label=$4
	for _ in $(seq 20); do
		if reach "$ns" "$addr"; then got=open; else got=closed; fi
		[ "$got" = "$want" ] && { ok "port 22 from $label: $got"; return 0; }
		sleep 0.25
	done
	fail "port 22 from $label is $got, expected $want"
}
jg_cli() { in_cli "$jg" "$@"; }

step "building jitgate"
go build -o "$work/jitgate" ./cmd/jitgate || fail "go build"
jg="$work/jitgate"

step "making a client host (192.0.2.1), a second client (203.0.113.1) and a server host with sshd"
ip netns add "$cli"
ip netns add "$other"
ip netns add "$srv"
for ns in "$cli" "$other" "$srv"; do ip -n "$ns" link set lo up; done
ip -n "$cli" link add eth0 type veth peer name eth0 netns "$srv"
ip -n "$cli" addr add 192.0.2.1/24 dev eth0
ip -n "$srv" addr add 192.0.2.2/24 dev eth0
ip -n "$other" link add eth0 type veth peer name eth1 netns "$srv"
ip -n "$other" addr add 203.0.113.1/24 dev eth0
ip -n "$srv" addr add 203.0.113.2/24 dev eth1
# the console: this machine reaches the server host at 198.18.0.2
ip link add "$hostif" type veth peer name eth2 netns "$srv"
ip addr add 198.18.0.1/30 dev "$hostif"
ip -n "$srv" addr add 198.18.0.2/30 dev eth2
ip link set "$hostif" up
for l in "$cli:eth0" "$other:eth0" "$srv:eth0" "$srv:eth1" "$srv:eth2"; do ip -n "${l%%:*}" link set "${l#*:}" up; done
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
expect open "$cli" 192.0.2.2 "192.0.2.1 (no jitgate yet)"
expect open "$other" 203.0.113.2 "203.0.113.1 (no jitgate yet)"

step "starting the jitgate server and enrolling the server host's agent"
ip netns exec "$srv" "$jg" server --listen 0.0.0.0:8080 --data-dir "$work/data" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/data/admin.token" ] && break; sleep 0.1; done
[ -s "$work/data/admin.token" ] || fail "the server did not start (no admin token)"
export JITGATE_SERVER=http://192.0.2.2:8080 JITGATE_TOKEN NO_COLOR=1
JITGATE_TOKEN=$(cat "$work/data/admin.token")
enroll=$(jg_cli target add web-01 --label group=demo --jq .enroll_token) || fail "jitgate target add"
JITGATE_ENROLL_TOKEN=$enroll ip netns exec "$srv" "$jg" agent --server http://127.0.0.1:8080 --state-dir "$work/agent" 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 50); do [ "$(jg_cli target show web-01 --jq .agent.state)" = connected ] && break; sleep 0.2; done
[ "$(jg_cli target show web-01 --jq .agent.state)" = connected ] || fail "the agent did not connect"
ok "agent of web-01 connected"

step "jitgate policy set web-01 --port 22/tcp --max 1h   (per-request source: a single address)"
jg_cli policy set web-01 --port 22/tcp --max 1h || fail "jitgate policy set"
expect closed "$cli" 192.0.2.2 192.0.2.1
expect closed "$other" 203.0.113.2 203.0.113.1
in_srv nft list table inet jitgate

step "a request the policy refuses: jitgate request web-01 --port 22 --duration 2h --reason demo"
if out=$(jg_cli request web-01 --port 22 --duration 2h --reason "demo" 2>&1); then
	fail "a 2h request was granted under a 1h maximum: $out"
fi
echo "   $out"
grep -q "1h" <<<"$out" || fail "the refusal does not say the maximum: $out"
ok "refused, and the refusal says why"
expect closed "$cli" 192.0.2.2 "192.0.2.1 after the refusal"

step "jitgate request web-01 --port 22 --duration $GRANT --reason 'demo' --wait"
jg_cli request web-01 --port 22 --duration "$GRANT" --reason "demo" --wait || fail "the request did not become active"
expect open "$cli" 192.0.2.2 "192.0.2.1 (the requester)"
expect closed "$other" 203.0.113.2 "203.0.113.1 (another source: stays closed)"
in_srv nft list set inet jitgate hosts4

step "ssh root@192.0.2.2 through the grant"
out=$(in_cli ssh -i "$work/ssh/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
	-o ConnectTimeout=2 -o LogLevel=ERROR root@192.0.2.2 'echo "logged in to $(hostname) over ssh: $SSH_CONNECTION"') || fail "ssh through the grant"
echo "   $out"
grep -q "^logged in" <<<"$out" || fail "ssh printed: $out"
ok "ssh login through the grant"

step "waiting for the grant to expire ($GRANT)"
jg_cli requests --active
sleep "$secs"
expect closed "$cli" 192.0.2.2 "192.0.2.1 after the grant's end"
for _ in $(seq 20); do [ "$(jg_cli requests --jq '.[0].state')" = expired ] && break; sleep 0.25; done
[ "$(jg_cli requests --jq '.[0].state')" = expired ] || fail "the request is not shown expired"
jg_cli requests
ok "closed on time, and the request shows when it ended"

step "audit trail (newest first)"
jg_cli audit --target web-01 --limit 12
for a in request.refused request.activated request.expired; do
	[ -n "$(jg_cli audit --target web-01 --action "$a" --jq '.[0].id')" ] || fail "no $a event in the audit trail"
done
jg_cli audit verify || fail "jitgate audit verify"
ok "refusal, activation and expiry audited; the hash chain is intact"

step "web console"
code=$(curl -sL -o /dev/null -w '%{http_code}' --max-time 5 http://198.18.0.2:8080/ui/) || code=none
[ "$code" = 200 ] || fail "the console at http://198.18.0.2:8080/ui/ answered $code"
ok "demo passed in $((SECONDS - started)) s"
hold=0
if [ "$HOLD" = 1 ] && [ -t 0 ]; then hold=1; fi
[ $hold = 1 ] || echo "(the console below stops when this script exits: run it on a terminal to keep it up until you press Enter)"
echo
echo "Console: http://198.18.0.2:8080/ui/   sign in with the admin token in $work/data/admin.token"
echo "         (from another machine: ssh -L 8080:198.18.0.2:8080 root@this-host, then http://localhost:8080/ui/)"
if [ $hold = 1 ]; then
	read -r -p "Press Enter to stop the demo and remove everything it created. " _ || true
fi
