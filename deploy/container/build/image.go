package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/ctdoctor/ctdoctor/exporter"
)

// The image's fixed parts; the Containerfile says the same (the tests
// compare them).
const (
	binaryPath = "/usr/local/bin/ctdoctor"
	imageUID   = 65532 // "nonroot", as in distroless
	sourceURL  = "https://github.com/ctdoctor/ctdoctor"
	title      = "ctdoctor"
	describe   = "Diagnose and fix a full Linux conntrack table; a Prometheus exporter per network namespace"
)

// OCI media types (image-spec v1.1).
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
	refNameKey    = "org.opencontainers.image.ref.name"
)

// imageSpec is what goes into the image.
type imageSpec struct {
	Binary   []byte    // the static ctdoctor for Arch
	Arch     string    // GOARCH, which OCI uses too
	Version  string    // the version stamped into the binary
	Revision string    // the source's commit ("" unknown)
	Created  time.Time // zero: unknown (files dated 1970, no "created")
	Name     string    // e.g. ghcr.io/ctdoctor/ctdoctor
	Tag      string    // e.g. latest
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// containerConfig is the "config" of an image configuration.
type containerConfig struct {
	User         string              `json:"User"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint"`
	Cmd          []string            `json:"Cmd"`
	WorkingDir   string              `json:"WorkingDir"`
	Labels       map[string]string   `json:"Labels"`
}

type history struct {
	Created   string `json:"created,omitempty"`
	CreatedBy string `json:"created_by"`
	Comment   string `json:"comment,omitempty"`
}

type imageConfig struct {
	Created      string          `json:"created,omitempty"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       containerConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []history `json:"history"`
}

// dockerManifest is one entry of a docker-archive's manifest.json, what
// `docker load` reads.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// blob is content stored under blobs/sha256.
type blob struct {
	data []byte
	desc descriptor
}

func newBlob(mediaType string, data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{data: data, desc: descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}}
}

func (b blob) path() string { return filepath.Join("blobs", "sha256", b.desc.Digest[len("sha256:"):]) }

// image is a built image: its blobs and the files around them.
type image struct {
	config, manifest, layer blob
	index                   []byte
	docker                  []byte // manifest.json for docker load
}

// checkStatic refuses a binary that needs a dynamic loader or shared
// libraries: the image has none.
func checkStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("the binary is not ELF: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("the binary is dynamically linked (it has an ELF interpreter): build it with CGO_ENABLED=0")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		return fmt.Errorf("the binary needs shared libraries %v: build it with CGO_ENABLED=0", libs)
	}
	return nil
}

// buildLayer writes the single layer, the whole root filesystem: the
// binary, a passwd and group file naming root and the image's user, its
// home and /tmp. It returns the tar (whose digest is the diff id) and its
// gzip, both byte-for-byte reproducible from the spec.
func buildLayer(spec imageSpec) (tarball, gz []byte, err error) {
	mtime := time.Unix(0, 0)
	if !spec.Created.IsZero() {
		mtime = spec.Created
	}
	uid := strconv.Itoa(imageUID)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/", 0o755, nil},
		{"etc/group", 0o644, []byte("root:x:0:\nnonroot:x:" + uid + ":\n")},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:" + uid + ":" + uid + ":nonroot:/home/nonroot:/sbin/nologin\n")},
		{"home/", 0o755, nil},
		{"home/nonroot/", 0o700, nil}, // owned by the image's user below
		{"tmp/", 0o1777, nil},
		{"usr/", 0o755, nil},
		{"usr/local/", 0o755, nil},
		{"usr/local/bin/", 0o755, nil},
		{binaryPath[1:], 0o755, spec.Binary},
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(f.data))}
		if f.name[len(f.name)-1] == '/' {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if f.name == "home/nonroot/" {
			h.Uid, h.Gid = imageUID, imageUID
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, nil, fmt.Errorf("layer: %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, nil, fmt.Errorf("layer: %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, fmt.Errorf("layer: %w", err)
	}
	var gb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gb, gzip.BestCompression) // no name, no time: reproducible
	if err != nil {
		return nil, nil, err
	}
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("layer: gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, nil, fmt.Errorf("layer: gzip: %w", err)
	}
	return tb.Bytes(), gb.Bytes(), nil
}

// labels are the image's labels (org.opencontainers.image.* annotations
// keys, as the Containerfile's LABEL).
func labels(spec imageSpec) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.description": describe,
		"org.opencontainers.image.source":      sourceURL,
		"org.opencontainers.image.version":     spec.Version,
	}
	if spec.Revision != "" {
		l["org.opencontainers.image.revision"] = spec.Revision
	}
	if !spec.Created.IsZero() {
		l["org.opencontainers.image.created"] = spec.Created.UTC().Format(time.RFC3339)
	}
	return l
}

// buildImage makes the image's blobs and index.
func buildImage(spec imageSpec) (*image, error) {
	if err := checkStatic(spec.Binary); err != nil {
		return nil, err
	}
	if spec.Name == "" || spec.Tag == "" || spec.Arch == "" || spec.Version == "" {
		return nil, errors.New("an image needs a name, a tag, an architecture and a version")
	}
	tarball, gz, err := buildLayer(spec)
	if err != nil {
		return nil, err
	}
	diffID := sha256.Sum256(tarball)
	var cfg imageConfig
	if !spec.Created.IsZero() {
		cfg.Created = spec.Created.UTC().Format(time.RFC3339)
	}
	cfg.Architecture, cfg.OS = spec.Arch, "linux"
	cfg.Config = containerConfig{
		User:         fmt.Sprintf("%d:%d", imageUID, imageUID),
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", exporter.DefaultPort): {}},
		Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Entrypoint:   []string{binaryPath},
		Cmd:          []string{"exporter"},
		WorkingDir:   "/",
		Labels:       labels(spec),
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{"sha256:" + hex.EncodeToString(diffID[:])}
	cfg.History = []history{{Created: cfg.Created, CreatedBy: "go run ./deploy/container/build", Comment: "static ctdoctor " + spec.Version + ", /etc/passwd, /etc/group, /tmp"}}
	img := &image{layer: newBlob(mediaLayerGz, gz)}
	if img.config, err = marshalBlob(mediaConfig, cfg); err != nil {
		return nil, err
	}
	m := manifest{SchemaVersion: 2, MediaType: mediaManifest, Config: img.config.desc, Layers: []descriptor{img.layer.desc}, Annotations: labels(spec)}
	if img.manifest, err = marshalBlob(mediaManifest, m); err != nil {
		return nil, err
	}
	top := img.manifest.desc
	top.Platform = &platform{Architecture: spec.Arch, OS: "linux"}
	top.Annotations = map[string]string{refNameKey: spec.Tag}
	if img.index, err = json.Marshal(index{SchemaVersion: 2, MediaType: mediaIndex, Manifests: []descriptor{top}}); err != nil {
		return nil, err
	}
	img.docker, err = json.Marshal([]dockerManifest{{Config: img.config.path(), RepoTags: []string{spec.Name + ":" + spec.Tag}, Layers: []string{img.layer.path()}}})
	return img, err
}

func marshalBlob(mediaType string, v any) (blob, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return blob{}, fmt.Errorf("%s: %w", mediaType, err)
	}
	return newBlob(mediaType, b), nil
}

// files are the layout's files and directories (ending in /) by path.
func (img *image) files() map[string][]byte {
	return map[string][]byte{
		"oci-layout":        []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json":        img.index,
		"manifest.json":     img.docker,
		img.config.path():   img.config.data,
		img.manifest.path(): img.manifest.data,
		img.layer.path():    img.layer.data,
		"blobs/":            nil,
		"blobs/sha256/":     nil,
	}
}

func sortedPaths(files map[string][]byte) []string {
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// checkOut says whether dir may take the layout: it must not exist, or
// be empty, or hold an earlier layout (which writeLayout replaces).
func checkOut(dir string) (replace bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case len(entries) == 0:
		return false, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return false, fmt.Errorf("%s is neither empty nor an OCI image layout: not overwriting it", dir)
	}
	return true, nil
}

// writeLayout writes the image as an OCI image layout in dir (see checkOut).
func (img *image) writeLayout(dir string) error {
	replace, err := checkOut(dir)
	if err != nil {
		return err
	}
	if replace {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	files := img.files()
	for _, p := range sortedPaths(files) {
		full := filepath.Join(dir, p)
		if p[len(p)-1] == '/' {
			if err := os.MkdirAll(full, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeArchive writes the same layout as one tar: `docker load`,
// `podman load` and `skopeo copy oci-archive:FILE` read it (manifest.json
// is docker's index, index.json the OCI one).
func (img *image) writeArchive(w io.Writer, mtime time.Time) error {
	tw := tar.NewWriter(w)
	files := img.files()
	for _, p := range sortedPaths(files) {
		h := &tar.Header{Name: p, Mode: 0o644, Size: int64(len(files[p])), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if p[len(p)-1] == '/' {
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(files[p]); err != nil {
			return err
		}
	}
	return tw.Close()
}
