package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestImage builds an image from a stand-in binary, writes the OCI layout
// tar, reads it back as a container tool would, and checks what the
// server needs: the entrypoint, the unprivileged user, the platform, and a
// layer holding the binary (executable) and the user's state directory.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "jitgate")
	payload := []byte("\x7fELF stand-in for the static jitgate binary")
	if err := os.WriteFile(bin, payload, 0o755); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Build(Options{Binary: bin, Arch: "arm64", Version: "v1.2.3", Commit: "abc123", CACerts: ca,
		Created: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.oci.tar")
	if err := WriteLayoutTar(out, img, "v1.2.3"); err != nil {
		t.Fatal(err)
	}

	// Unpack the archive and read it with the layout reader.
	unpacked := filepath.Join(dir, "unpacked")
	untar(t, out, unpacked)
	idx, err := layout.ImageIndexFromPath(unpacked)
	if err != nil {
		t.Fatalf("reading the layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" {
		t.Fatalf("index manifests: %+v", im.Manifests)
	}
	got, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := got.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q, want OCI", mt)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/bin/jitgate", "server"}; !slices.Equal(cf.Config.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, want)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want the unprivileged 65532:65532", cf.Config.User)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want linux/arm64", cf.OS, cf.Architecture)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != "v1.2.3" || cf.Config.Labels["org.opencontainers.image.revision"] != "abc123" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	if _, ok := cf.Config.Volumes["/var/lib/jitgate"]; !ok {
		t.Errorf("volumes %v: want /var/lib/jitgate", cf.Config.Volumes)
	}

	layers, err := got.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	var content []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "usr/bin/jitgate" {
			content, _ = io.ReadAll(tr)
		}
	}
	if h := files["usr/bin/jitgate"]; h == nil || h.Mode&0o111 == 0 || !bytes.Equal(content, payload) {
		t.Errorf("layer's usr/bin/jitgate: header %+v, content %q", h, content)
	}
	if h := files["var/lib/jitgate/"]; h == nil || h.Uid != 65532 || h.Mode != 0o700 {
		t.Errorf("layer's var/lib/jitgate: %+v, want a 0700 directory of uid 65532", h)
	}
	if files["etc/ssl/certs/ca-certificates.crt"] == nil {
		t.Error("layer has no CA bundle")
	}
}

func untar(t *testing.T, archive, dst string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				var data []byte
				if data, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, data, 0o644)
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
