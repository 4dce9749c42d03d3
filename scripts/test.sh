#!/usr/bin/env bash
# Runs every jitgate test, as CI does, on a fresh Debian machine (as root):
# installs what the kernel and end-to-end tests need, then runs the suite.
# Kernel tests fail (never skip) here when a privilege or a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test.sh: run as root (the tests create network namespaces and program nftables)" >&2
	exit 1
fi

need=()
for pkg_tool in make:make systemd:systemd-analyze util-linux:setpriv nftables:nft iproute2:ip openssh-server:sshd openssh-client:ssh conntrack:conntrack chromium:chromium xrdp:xrdp freerdp2-x11:xfreerdp xvfb:Xvfb; do
	pkg=${pkg_tool%%:*}
	tool=${pkg_tool##*:}
	if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
		need+=("$pkg")
	fi
done
# PostgreSQL's server binaries (initdb, postgres) live outside PATH; the store
# tests start a throwaway cluster with them (internal/testenv/postgres.go).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The OpenAPI linter (internal/api/openapi_lint_test.go): Redocly CLI at the
# version pinned in tools/openapi-lint/package-lock.json, installed with npm ci
# (node from Debian when absent; Redocly needs node >= 20.19).
if ! command -v npm >/dev/null 2>&1; then
	echo "installing: nodejs npm"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||a==20&&b>=19?0:1)'; then
	echo "scripts/test.sh: node $(node --version) is too old for the OpenAPI linter (Redocly CLI needs >= 20.19; Debian 12 has 18): install a newer nodejs (e.g. from NodeSource)" >&2
	exit 1
fi
if [ ! -x tools/openapi-lint/node_modules/.bin/redocly ]; then
	npm ci --prefix tools/openapi-lint --no-audit --no-fund --loglevel=error
fi
# axe-core for the console's accessibility check (internal/web/axe_test.go).
if [ ! -f tools/axe/node_modules/axe-core/axe.min.js ]; then
	npm ci --prefix tools/axe --no-audit --no-fund --loglevel=error
fi
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"
modprobe nf_tables 2>/dev/null || true

# Under CI=true a kernel test with missing privileges or tools fails instead of skipping.
export CI=true
# gofmt, go vet, golangci-lint (installed once into GOPATH/bin at the pinned
# version), go mod tidy -diff, and the domain packages' import rules.
make verify
go test -count=1 -timeout 20m ./...
# The concurrent packages once more under the race detector. The authorization
# matrix (hundreds of single-request cases, each on a fresh store: minutes under
# the race detector, and no concurrency to find) ran in the pass above.
go test -count=1 -race -timeout 15m -skip '^TestAuthorizationMatrix$' \
	./internal/api/... ./internal/agent/... ./internal/store/... ./internal/firewall/... ./internal/relay/...
