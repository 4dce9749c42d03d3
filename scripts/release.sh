#!/usr/bin/env bash
# Builds a jitgate release into dist/ (or $OUT):
#   - static binaries (CGO_ENABLED=0) stamped with the version and commit:
#     linux/amd64 and linux/arm64 (server, agent, CLI: one binary), and the
#     CLI for darwin/amd64, darwin/arm64 and windows/amd64;
#   - a .deb per Linux architecture (nfpm, packaging/nfpm.yaml): the binary,
#     systemd units for the server and the agent, /etc/jitgate/server.yaml and
#     the jitgate system user;
#   - SHA256SUMS over all of them;
#   - the server's OCI image context (packaging/Containerfile) — build it with
#     `docker build -f packaging/Containerfile .` or podman/buildah (no Go tool
#     builds OCI images offline here).
# Usage: scripts/release.sh [VERSION]   (default: git describe)
#        ONLY=deb-amd64 scripts/release.sh   builds just the linux/amd64 binary and .deb (tests)
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
VERSION=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
OUT=${OUT:-dist}
ONLY=${ONLY:-}
PKG=github.com/jitgate/jitgate/internal/buildinfo
LDFLAGS="-s -w -X $PKG.Version=$VERSION -X $PKG.Commit=$COMMIT"
mkdir -p "$OUT"

build() { # GOOS GOARCH
	local ext=""
	[ "$1" = windows ] && ext=.exe
	local bin="$OUT/jitgate_${VERSION}_$1_$2$ext"
	echo "building $bin" >&2
	CGO_ENABLED=0 GOOS=$1 GOARCH=$2 go build -trimpath -ldflags "$LDFLAGS" -o "$bin" ./cmd/jitgate
	echo "$bin"
}

deb() { # GOARCH binary
	# Debian versions must start with a digit.
	local v=${VERSION#v}
	[[ $v =~ ^[0-9] ]] || v="0.0.0~$v"
	echo "packaging jitgate_${v}_$1.deb" >&2
	VERSION="$v" ARCH="$1" BINARY="$2" go run "$NFPM" package --config packaging/nfpm.yaml --packager deb --target "$OUT/" >&2
}

if [ "$ONLY" = deb-amd64 ]; then
	deb amd64 "$(build linux amd64)"
	exit 0
fi

for arch in amd64 arm64; do
	deb "$arch" "$(build linux "$arch")"
done
build darwin amd64 >/dev/null
build darwin arm64 >/dev/null
build windows amd64 >/dev/null
(cd "$OUT" && rm -f SHA256SUMS && sha256sum -- * >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
echo "release $VERSION ($COMMIT) in $OUT/:" >&2
ls -l "$OUT" >&2
