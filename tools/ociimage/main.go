// Command ociimage builds the jitgate server's OCI image without a container
// engine (scripts/release.sh runs it; no Docker daemon is needed): one layer
// with the static binary, an empty state directory owned by the unprivileged
// user, and the CA bundle for outgoing TLS (OIDC, webhooks), on an empty
// (scratch) base. It writes an OCI image layout as a tar archive, which
// `podman load -i`, `skopeo copy oci-archive:…` and `docker load` read.
//
//	go run ./tools/ociimage -binary dist/jitgate_v1.2.3_linux_amd64 -arch amd64 \
//	    -version v1.2.3 -commit abc123 -o dist/jitgate-server_v1.2.3_linux_amd64.oci.tar
//
// packaging/Containerfile describes the same image for engines that build
// from source.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's user: distroless's "nonroot" (no passwd entry is needed for
// a numeric user).
const (
	uid = 65532
	gid = 65532
	// BinaryPath is where the image holds the binary.
	BinaryPath = "/usr/bin/jitgate"
	// DataDir is the server's state directory (a volume).
	DataDir = "/var/lib/jitgate"
)

// Options say what goes into the image.
type Options struct {
	Binary  string // the static linux binary
	Arch    string // GOARCH: amd64, arm64
	Version string
	Commit  string
	// CACerts is a CA bundle to copy to /etc/ssl/certs/ca-certificates.crt;
	// empty: none.
	CACerts string
	// Created is the image's creation time (the commit's time keeps builds
	// reproducible); zero: the Unix epoch.
	Created time.Time
}

func main() {
	var o Options
	var out string
	flag.StringVar(&o.Binary, "binary", "", "the static linux `binary` to put at "+BinaryPath)
	flag.StringVar(&o.Arch, "arch", "amd64", "the binary's GOARCH")
	flag.StringVar(&o.Version, "version", "devel", "the version (image label and reference name)")
	flag.StringVar(&o.Commit, "commit", "", "the commit (image label)")
	flag.StringVar(&o.CACerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to include (empty or missing: none)")
	flag.StringVar(&out, "o", "", "the OCI layout `tar` to write")
	flag.Parse()
	if o.Binary == "" || out == "" {
		fmt.Fprintln(os.Stderr, "ociimage: -binary and -o are required")
		os.Exit(2)
	}
	if _, err := os.Stat(o.CACerts); errors.Is(err, fs.ErrNotExist) {
		o.CACerts = ""
	}
	img, err := Build(o)
	if err == nil {
		err = WriteLayoutTar(out, img, o.Version)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

// Build assembles the image.
func Build(o Options) (v1.Image, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("reading the binary: %w", err)
	}
	var ca []byte
	if o.CACerts != "" {
		if ca, err = os.ReadFile(o.CACerts); err != nil {
			return nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
	}
	layerTar, err := layerTar(bin, ca, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making the layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{CreatedBy: "jitgate tools/ociimage", Created: v1.Time{Time: o.Created}}})
	if err != nil {
		return nil, fmt.Errorf("appending the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint:   []string{BinaryPath, "server"},
		Cmd:          []string{"--data-dir", DataDir, "--listen", "0.0.0.0:8443"},
		User:         fmt.Sprintf("%d:%d", uid, gid),
		WorkingDir:   DataDir,
		ExposedPorts: map[string]struct{}{"8443/tcp": {}},
		Volumes:      map[string]struct{}{DataDir: {}},
		Env:          []string{"PATH=/usr/bin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "jitgate server",
			"org.opencontainers.image.version":  o.Version,
			"org.opencontainers.image.revision": o.Commit,
			"org.opencontainers.image.source":   "https://github.com/jitgate/jitgate",
			"org.opencontainers.image.licenses": "Apache-2.0",
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting the config: %w", err)
	}
	return img, nil
}

// layerTar is the layer's file system: the binary, the state directory
// owned by the image's user, and the CA bundle if any.
func layerTar(bin, ca []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, owner int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: owner, Gid: owner, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/bin", 0o755, 0) },
		func() error { return file(BinaryPath[1:], 0o755, bin) },
		func() error { return dir("var", 0o755, 0) },
		func() error { return dir("var/lib", 0o755, 0) },
		func() error { return dir(DataDir[1:], 0o700, uid) },
		func() error { return dir("tmp", 0o1777, 0) },
	}
	if ca != nil {
		steps = append(steps,
			func() error { return dir("etc", 0o755, 0) },
			func() error { return dir("etc/ssl", 0o755, 0) },
			func() error { return dir("etc/ssl/certs", 0o755, 0) },
			func() error { return file("etc/ssl/certs/ca-certificates.crt", 0o644, ca) },
		)
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("writing the layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteLayoutTar writes img as an OCI image layout (index.json, oci-layout,
// blobs/) into a tar archive at path, naming it ref.
func WriteLayoutTar(path string, img v1.Image, ref string) error {
	dir, err := os.MkdirTemp("", "ociimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("writing the layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return fmt.Errorf("writing the image: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = tw.AddFS(os.DirFS(dir))
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}
