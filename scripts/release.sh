#!/usr/bin/env bash
# Builds a jitgate release into dist/ (or $OUT):
#   - static binaries (CGO_ENABLED=0) stamped with the version and commit
#     (internal/buildinfo): linux/amd64 and linux/arm64 (server, agent and
#     CLI: one binary), and the CLI for darwin/amd64, darwin/arm64 and
#     windows/amd64;
#   - a .deb per Linux architecture (nfpm, packaging/nfpm.yaml): the binary,
#     systemd units for the server and the agent, /etc/jitgate/server.yaml and
#     the jitgate system user;
#   - the server's OCI image per Linux architecture, as an OCI layout tar
#     (tools/ociimage: no container engine needed; `podman load -i` or
#     `skopeo copy oci-archive:FILE docker://…` take it);
#   - SHA256SUMS over all of them.
# Usage: scripts/release.sh [VERSION]   (default: git describe)
#        ONLY=deb scripts/release.sh     just this machine's linux binary and .deb
#                                        (the package test, e2e/package_test.go)
#        TRIMPATH=0                      build without -trimpath (reuses the test
#                                        build cache; releases keep the default)
set -euo pipefail
# A failed build inside $(build …) must stop the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

# nfpm as a Go tool at a pinned version (no system package needed).
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
VERSION=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
OUT=${OUT:-dist}
ONLY=${ONLY:-}
TRIMPATH=${TRIMPATH:-1}
PKG=github.com/jitgate/jitgate/internal/buildinfo
LDFLAGS="-s -w -X $PKG.Version=$VERSION -X $PKG.Commit=$COMMIT"
FLAGS=()
[ "$TRIMPATH" = 1 ] && FLAGS+=(-trimpath)
mkdir -p "$OUT"

build() { # GOOS GOARCH: prints the binary's path
	local ext=""
	[ "$1" = windows ] && ext=.exe
	local bin="$OUT/jitgate_${VERSION}_$1_$2$ext"
	echo "building $bin" >&2
	CGO_ENABLED=0 GOOS=$1 GOARCH=$2 go build "${FLAGS[@]}" -ldflags "$LDFLAGS" -o "$bin" ./cmd/jitgate || exit 1
	echo "$bin"
}

deb() { # GOARCH binary
	# Debian versions must start with a digit.
	local v=${VERSION#v}
	[[ $v =~ ^[0-9] ]] || v="0.0.0~$v"
	echo "packaging jitgate_${v}_$1.deb" >&2
	# nfpm expands the environment in version and arch, not in a content's
	# source path: name the binary in a copy of the configuration.
	local conf
	conf=$(mktemp "$OUT/.nfpm-XXXXXX.yaml")
	sed "s|\${BINARY}|$2|" packaging/nfpm.yaml >"$conf"
	VERSION="$v" ARCH="$1" go run "$NFPM" package --config "$conf" --packager deb --target "$OUT/" >&2
	rm -f "$conf"
}

image() { # GOARCH binary
	local img="$OUT/jitgate-server_${VERSION}_linux_$1.oci.tar"
	echo "building the OCI image $img" >&2
	go run ./tools/ociimage -binary "$2" -arch "$1" -version "$VERSION" -commit "$COMMIT" -o "$img"
}

if [ "$ONLY" = deb ]; then
	arch=$(go env GOARCH)
	bin=$(build linux "$arch")
	deb "$arch" "$bin"
	exit 0
fi

for arch in amd64 arm64; do
	bin=$(build linux "$arch")
	deb "$arch" "$bin"
	image "$arch" "$bin"
done
for target in darwin/amd64 darwin/arm64 windows/amd64; do
	bin=$(build "${target%/*}" "${target#*/}")
done
(cd "$OUT" && rm -f SHA256SUMS && sha256sum -- jitgate* >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
echo "release $VERSION ($COMMIT) in $OUT/:" >&2
ls -l "$OUT" >&2
