package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/exporter"
)

const testVersion = "v0.0.0-imagetest"

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  string
)

// built runs the command as a user does (once for all tests): the real
// go build, the layout in DIR/oci, the archive in DIR/ctdoctor.tar.
func built(t *testing.T) (layout, archive string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ctdoctor-image-test-")
		if buildErr != nil {
			return
		}
		var out, errb bytes.Buffer
		if code := run([]string{"-o", filepath.Join(buildDir, "oci"), "-archive", filepath.Join(buildDir, "ctdoctor.tar"), "-version", testVersion}, &out, &errb); code != 0 {
			buildErr = fmt.Errorf("build exited %d: %s", code, errb.String())
		}
		buildOut = out.String()
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "oci"), filepath.Join(buildDir, "ctdoctor.tar")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// readBlob reads the blob d names from the layout and checks its size and
// digest against the descriptor.
func readBlob(layout string, d descriptor) ([]byte, error) {
	hexSum, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok || len(hexSum) != 64 {
		return nil, fmt.Errorf("digest %q is not sha256", d.Digest)
	}
	b, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", hexSum))
	if err != nil {
		return nil, fmt.Errorf("blob of %s: %w", d.MediaType, err)
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%s: %d bytes, the descriptor says %d", d.Digest, len(b), d.Size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexSum {
		return nil, fmt.Errorf("%s: the content's sha256 is %x", d.Digest, sum)
	}
	return b, nil
}

// readJSON reads a layout file or blob (d non-nil) as JSON, refusing
// fields the type does not have.
func readJSON(layout, name string, d *descriptor, v any) error {
	var b []byte
	var err error
	if d != nil {
		b, err = readBlob(layout, *d)
	} else {
		b, err = os.ReadFile(filepath.Join(layout, name))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// loaded is the image read back from the layout, every digest and size checked.
type loaded struct {
	manifestDesc descriptor
	manifest     manifest
	config       imageConfig
	layerTar     []byte // uncompressed
}

// validateLayout reads the layout as a runtime would, from index.json
// down, and checks every descriptor's digest and size, the media types,
// the config's diff id against the uncompressed layer, that no other blob
// is stored, and that docker's manifest.json names the same blobs.
func validateLayout(layout string) (loaded, error) {
	var l loaded
	b, err := os.ReadFile(filepath.Join(layout, "oci-layout"))
	if err != nil || string(b) != `{"imageLayoutVersion":"1.0.0"}` {
		return l, fmt.Errorf("oci-layout: %q, %v", b, err)
	}
	var idx index
	if err := readJSON(layout, "index.json", nil, &idx); err != nil {
		return l, err
	}
	if idx.SchemaVersion != 2 || idx.MediaType != mediaIndex || len(idx.Manifests) != 1 {
		return l, fmt.Errorf("index.json: %+v", idx)
	}
	l.manifestDesc = idx.Manifests[0]
	if d := l.manifestDesc; d.MediaType != mediaManifest || d.Platform == nil || *d.Platform != (platform{runtime.GOARCH, "linux"}) || d.Annotations[refNameKey] != "latest" {
		return l, fmt.Errorf("index.json's manifest: %+v", d)
	}
	if err := readJSON(layout, "manifest", &l.manifestDesc, &l.manifest); err != nil {
		return l, err
	}
	m := l.manifest
	if m.SchemaVersion != 2 || m.MediaType != mediaManifest || m.Config.MediaType != mediaConfig || len(m.Layers) != 1 || m.Layers[0].MediaType != mediaLayerGz {
		return l, fmt.Errorf("manifest: %+v", m)
	}
	if err := readJSON(layout, "config", &m.Config, &l.config); err != nil {
		return l, err
	}
	gz, err := readBlob(layout, m.Layers[0])
	if err != nil {
		return l, fmt.Errorf("layer: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return l, fmt.Errorf("layer: %w", err)
	}
	if l.layerTar, err = io.ReadAll(zr); err != nil {
		return l, fmt.Errorf("layer: %w", err)
	}
	diffID := sha256.Sum256(l.layerTar)
	if c := l.config; c.RootFS.Type != "layers" || !slices.Equal(c.RootFS.DiffIDs, []string{"sha256:" + hex.EncodeToString(diffID[:])}) {
		return l, fmt.Errorf("config rootfs %+v: the uncompressed layer's digest is sha256:%x", c.RootFS, diffID)
	}
	if c := l.config; c.OS != "linux" || c.Architecture != runtime.GOARCH {
		return l, fmt.Errorf("config platform %s/%s", c.OS, c.Architecture)
	}
	// Nothing else is stored: every blob is one of the three.
	blobs, err := os.ReadDir(filepath.Join(layout, "blobs", "sha256"))
	if err != nil {
		return l, err
	}
	want := []string{l.manifestDesc.Digest, m.Config.Digest, m.Layers[0].Digest}
	for _, e := range blobs {
		if !slices.Contains(want, "sha256:"+e.Name()) {
			return l, fmt.Errorf("blob %s is not referenced", e.Name())
		}
	}
	// docker load's manifest.json names the same config and layer.
	var dm []dockerManifest
	if err := readJSON(layout, "manifest.json", nil, &dm); err != nil {
		return l, err
	}
	if len(dm) != 1 || dm[0].Config != "blobs/sha256/"+m.Config.Digest[7:] || !slices.Equal(dm[0].Layers, []string{"blobs/sha256/" + m.Layers[0].Digest[7:]}) ||
		!slices.Equal(dm[0].RepoTags, []string{"ghcr.io/ctdoctor/ctdoctor:latest"}) {
		return l, fmt.Errorf("manifest.json: %+v", dm)
	}
	return l, nil
}

func loadLayout(t *testing.T, layout string) loaded {
	t.Helper()
	l, err := validateLayout(layout)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tarEntry is one file of a tar, as the test compares it.
type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	data     []byte
}

func readTar(t *testing.T, b []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, data})
	}
}

// The layout is a valid OCI image layout: index, manifest, config and
// layer agree in media types, digests and sizes, the config's diff id is
// the uncompressed layer's, and nothing else is stored.
func TestLayout(t *testing.T) {
	layout, _ := built(t)
	if !strings.Contains(buildOut, "OCI image layout of ghcr.io/ctdoctor/ctdoctor:latest") {
		t.Errorf("the command said %q", buildOut)
	}
	l := loadLayout(t, layout)
	if l.manifest.Annotations["org.opencontainers.image.version"] != testVersion {
		t.Errorf("manifest annotations %v", l.manifest.Annotations)
	}
}

// Each corrupted copy of the layout is refused, for its reason: the
// validation above is not vacuous.
func TestLayoutCorruptCopiesFail(t *testing.T) {
	layout, _ := built(t)
	l := loadLayout(t, layout)
	blobPath := func(d descriptor) string { return filepath.Join("blobs", "sha256", d.Digest[7:]) }
	edit := func(name, old, new string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Contains(b, []byte(old)) {
				t.Fatalf("%s has no %q (%v): update the corruption", name, old, err)
			}
			if err := os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
	}{
		{"a flipped byte in the config", edit(blobPath(l.manifest.Config), `"User":"65532:65532"`, `"User":"65533:65532"`), "the content's sha256 is"},
		{"a truncated layer", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, blobPath(l.manifest.Layers[0])), l.manifest.Layers[0].Size-1)
		}, fmt.Sprintf("%d bytes, the descriptor says %d", l.manifest.Layers[0].Size-1, l.manifest.Layers[0].Size)},
		{"the manifest's size in the index", edit("index.json", fmt.Sprintf(`"size":%d`, l.manifestDesc.Size), `"size":1`), "the descriptor says 1"},
		{"a missing layer", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, blobPath(l.manifest.Layers[0]))) }, "no such file"},
		{"a stray blob", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "blobs", "sha256", strings.Repeat("0", 64)), nil, 0o644)
		}, "is not referenced"},
		{"a misspelt index field", edit("index.json", `"manifests"`, `"manifest"`), `unknown field "manifest"`},
		{"another layout version", edit("oci-layout", "1.0.0", "2.0.0"), "oci-layout"},
		{"docker's manifest names another tag", edit("manifest.json", ":latest", ":stable"), "manifest.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(layout)); err != nil {
				t.Fatal(err)
			}
			tc.break_(t, dir)
			_, err := validateLayout(dir)
			if err == nil {
				t.Fatal("the corrupted copy passed")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// The root filesystem holds exactly the binary, passwd and group naming
// the image's user, its home and /tmp; the binary is static and stamped.
func TestRootFS(t *testing.T) {
	layout, _ := built(t)
	l := loadLayout(t, layout)
	var got []string
	var bin []byte
	for _, e := range readTar(t, l.layerTar) {
		got = append(got, fmt.Sprintf("%s %c %o %d:%d", e.name, e.typ, e.mode, e.uid, e.gid))
		switch e.name {
		case "usr/local/bin/ctdoctor":
			bin = e.data
		case "etc/passwd":
			if !strings.Contains(string(e.data), "\nnonroot:x:65532:65532:") {
				t.Errorf("passwd %q has no user 65532", e.data)
			}
		}
	}
	want := []string{
		"etc/ 5 755 0:0", "etc/group 0 644 0:0", "etc/passwd 0 644 0:0", "home/ 5 755 0:0", "home/nonroot/ 5 700 65532:65532",
		"tmp/ 5 1777 0:0", "usr/ 5 755 0:0", "usr/local/ 5 755 0:0", "usr/local/bin/ 5 755 0:0", "usr/local/bin/ctdoctor 0 755 0:0",
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := checkStatic(bin); err != nil {
		t.Error(err)
	}
	if !bytes.Contains(bin, []byte(testVersion)) {
		t.Errorf("the binary does not hold the version %s", testVersion)
	}
	// The files are dated at the commit (the config's created), not at the build.
	created, err := time.Parse(time.RFC3339, l.config.Created)
	if err != nil {
		t.Fatalf("created %q: %v", l.config.Created, err)
	}
	tr := tar.NewReader(bytes.NewReader(l.layerTar))
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		if !h.ModTime.Equal(created) {
			t.Errorf("%s dated %s, not %s", h.Name, h.ModTime, created)
		}
	}
}

// The archive is the layout as one tar, file for file.
func TestArchive(t *testing.T) {
	layout, archive := built(t)
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range readTar(t, b) {
		if e.typ == tar.TypeDir {
			continue
		}
		n++
		f, err := os.ReadFile(filepath.Join(layout, e.name))
		if err != nil || !bytes.Equal(f, e.data) {
			t.Errorf("%s differs from the layout's (%v)", e.name, err)
		}
	}
	if n != 6 { // oci-layout, index.json, manifest.json, three blobs
		t.Errorf("%d files in the archive, want 6", n)
	}
}

// The same spec gives the same bytes: the image digest depends on the
// source only.
func TestReproducible(t *testing.T) {
	layout, _ := built(t)
	l := loadLayout(t, layout)
	var bin []byte
	for _, e := range readTar(t, l.layerTar) {
		if e.name == "usr/local/bin/ctdoctor" {
			bin = e.data
		}
	}
	created, _ := time.Parse(time.RFC3339, l.config.Created)
	spec := imageSpec{Binary: bin, Arch: runtime.GOARCH, Version: testVersion, Revision: l.config.Config.Labels["org.opencontainers.image.revision"],
		Created: created, Name: "ghcr.io/ctdoctor/ctdoctor", Tag: "latest"}
	a, err := buildImage(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildImage(spec)
	if err != nil {
		t.Fatal(err)
	}
	if a.manifest.desc.Digest != b.manifest.desc.Digest || a.manifest.desc.Digest != l.manifestDesc.Digest {
		t.Errorf("manifest digests %s, %s and the built %s differ", a.manifest.desc.Digest, b.manifest.desc.Digest, l.manifestDesc.Digest)
	}
}

// A binary that needs a loader or libraries, or is not ELF, is refused.
func TestCheckStatic(t *testing.T) {
	if err := checkStatic([]byte("#!/bin/sh\n")); err == nil || !strings.Contains(err.Error(), "not ELF") {
		t.Errorf("a script: %v", err)
	}
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Skip("no /bin/sh to try a dynamic binary")
	}
	if err := checkStatic(sh); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh: %v", err)
	}
	if _, err := buildImage(imageSpec{Binary: sh, Arch: "amd64", Version: "v", Name: "n", Tag: "t"}); err == nil {
		t.Error("an image was built around /bin/sh")
	}
}

// containerfile is the Containerfile's final stage, instructions joined
// across continuation lines.
type containerfile struct {
	user, entrypoint, cmd, expose string
	labels                        map[string]string
	buildRun                      string // the RUN line with go build
}

func parseContainerfile(t *testing.T) containerfile {
	t.Helper()
	b, err := os.ReadFile("../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	cont := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cont += s + " "
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	cf := containerfile{labels: map[string]string{}}
	label := regexp.MustCompile(`([a-z0-9.\-]+)="([^"]*)"`)
	for _, l := range lines {
		instr, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch instr {
		case "FROM":
			cf = containerfile{labels: map[string]string{}, buildRun: cf.buildRun}
		case "USER":
			cf.user = rest
		case "ENTRYPOINT":
			cf.entrypoint = rest
		case "CMD":
			cf.cmd = rest
		case "EXPOSE":
			cf.expose = rest
		case "LABEL":
			for _, m := range label.FindAllStringSubmatch(rest, -1) {
				cf.labels[m[1]] = m[2]
			}
		case "RUN":
			if strings.Contains(rest, "go build") {
				cf.buildRun = rest
			}
		}
	}
	return cf
}

// The Containerfile and the built image agree: user, entrypoint, command,
// exposed port, labels, and the go build itself.
func TestContainerfileMatchesImage(t *testing.T) {
	layout, _ := built(t)
	c := loadLayout(t, layout).config.Config
	cf := parseContainerfile(t)
	if cf.user != c.User || !strings.HasPrefix(cf.user, strconv.Itoa(imageUID)+":") {
		t.Errorf("USER %q, the image's %q", cf.user, c.User)
	}
	js := func(v []string) string { b, _ := json.Marshal(v); return string(b) }
	if cf.entrypoint != js(c.Entrypoint) || cf.cmd != js(c.Cmd) {
		t.Errorf("ENTRYPOINT %s CMD %s, the image's %s %s", cf.entrypoint, cf.cmd, js(c.Entrypoint), js(c.Cmd))
	}
	if _, ok := c.ExposedPorts[cf.expose]; !ok || len(c.ExposedPorts) != 1 || cf.expose != fmt.Sprintf("%d/tcp", exporter.DefaultPort) {
		t.Errorf("EXPOSE %s, the image's %v, the exporter's default port %d", cf.expose, c.ExposedPorts, exporter.DefaultPort)
	}
	for k, v := range c.Labels {
		switch k {
		case "org.opencontainers.image.version":
			if cf.labels[k] != "${VERSION}" || v != testVersion {
				t.Errorf("label %s: %q in the Containerfile, %q in the image", k, cf.labels[k], v)
			}
		case "org.opencontainers.image.revision", "org.opencontainers.image.created":
			// known at build time only
		default:
			if cf.labels[k] != v {
				t.Errorf("label %s: %q in the Containerfile, %q in the image", k, cf.labels[k], v)
			}
		}
	}
	for k := range cf.labels {
		if _, ok := c.Labels[k]; !ok {
			t.Errorf("label %s is in the Containerfile only", k)
		}
	}
	// The same go build: CGO off, and the builder's flags with the build argument.
	want := "CGO_ENABLED=0 go " + strings.Join(goBuildArgs("${VERSION}", "/out/ctdoctor"), " ")
	want = strings.Replace(want, "-ldflags=-s -w -X "+versionVar+"=${VERSION}", `"-ldflags=-s -w -X `+versionVar+`=${VERSION}"`, 1)
	if cf.buildRun != want {
		t.Errorf("the Containerfile builds with\n  %s\nthe builder with\n  %s", cf.buildRun, want)
	}
}

// skopeo and umoci, independent readers of the format, accept the layout
// and the archive and see the same image.
func TestOtherTools(t *testing.T) {
	layout, archive := built(t)
	l := loadLayout(t, layout)
	ran := false
	if _, err := exec.LookPath("skopeo"); err == nil {
		ran = true
		for _, ref := range []string{"oci:" + layout + ":latest", "oci-archive:" + archive + ":latest", "docker-archive:" + archive} {
			out, err := exec.Command("skopeo", "inspect", "--config", ref).Output()
			if err != nil {
				t.Errorf("skopeo inspect --config %s: %v\n%s", ref, err, stderrOf(err))
				continue
			}
			var cfg imageConfig
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatalf("skopeo inspect --config %s: %v", ref, err)
			}
			if a, b := fmt.Sprint(cfg), fmt.Sprint(l.config); a != b {
				t.Errorf("skopeo reads %s as\n%s\nnot\n%s", ref, a, b)
			}
		}
		out, err := exec.Command("skopeo", "inspect", "oci:"+layout+":latest").Output()
		if err != nil {
			t.Errorf("skopeo inspect: %v\n%s", err, stderrOf(err))
		} else if !bytes.Contains(out, []byte(l.manifestDesc.Digest)) {
			t.Errorf("skopeo inspect does not give the manifest digest %s:\n%s", l.manifestDesc.Digest, out)
		}
	}
	if _, err := exec.LookPath("umoci"); err == nil && os.Geteuid() == 0 {
		ran = true
		bundle := filepath.Join(t.TempDir(), "bundle")
		if out, err := exec.Command("umoci", "unpack", "--image", layout+":latest", bundle).CombinedOutput(); err != nil {
			t.Fatalf("umoci unpack: %v\n%s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var spec struct {
			Process struct {
				Args []string `json:"args"`
				User struct {
					UID uint32 `json:"uid"`
					GID uint32 `json:"gid"`
				} `json:"user"`
				Cwd string `json:"cwd"`
			} `json:"process"`
		}
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		if p := spec.Process; !slices.Equal(p.Args, []string{binaryPath, "exporter"}) || p.User.UID != imageUID || p.User.GID != imageUID || p.Cwd != "/" {
			t.Errorf("umoci's runtime config: %+v", p)
		}
		fi, err := os.Stat(filepath.Join(bundle, "rootfs", binaryPath))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("umoci's rootfs: %v %v", fi, err)
		}
	}
	if !ran {
		t.Skip("skipped: neither skopeo nor umoci (as root) is installed (apt-get install skopeo umoci)")
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// inNamespace runs the image's root filesystem as a container runtime
// would, with nothing else from the host in it: in fresh mount, network
// and PID namespaces, chrooted into the extracted layer with a new /proc
// and /dev/null, /dev/zero and /dev/urandom (what a runtime provides). It
// prints the version, then runs the image's entrypoint and command
// unchanged, once as the image's user and once as root (as the DaemonSet
// does), scrapes /metrics on loopback from inside the namespace until
// WANT_* is there, fetches the landing page and stops the exporter with
// SIGTERM.
const inNamespace = `set -eu
root=$1 out=$2 port=$3 user=$4; shift 4
ip link set lo up
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=755,size=64k tmpfs "$root/dev"
for d in null zero urandom; do touch "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"; done
chroot --userspec="$user" "$root" "$1" --version >"$out/version" 2>&1
run() { # name userspec pattern, then the command
	name=$1 spec=$2 pattern=$3; shift 3
	chroot --userspec="$spec" "$root" "$@" >"$out/$name.log" 2>&1 &
	pid=$!
	i=0
	until curl -sf "http://127.0.0.1:$port/metrics" >"$out/$name.metrics" && grep -qE "$pattern" "$out/$name.metrics"; do
		i=$((i+1))
		if [ $i -gt 600 ] || ! kill -0 $pid 2>/dev/null; then echo "$name: gave up waiting for $pattern" >"$out/$name.timeout"; break; fi
		sleep 0.1
	done
	curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" >"$out/$name.landing" || true
	kill -TERM $pid 2>/dev/null || true
	st=0; wait $pid || st=$?
	echo $st >"$out/$name.exit"
}
# Wait until the first background listing has ended (failed without
# privileges, done as root).
run user "$user" '^ctdoctor_exporter_up\{collector="breakdown",netns="[^"]+"\} 0$' "$@"
run root 0:0 '^ctdoctor_exporter_up\{collector="breakdown",netns="[^"]+"\} 1$' "$@"
`

// The image runs: its static binary, with nothing else in the
// filesystem, prints its version and serves /metrics on the exposed port
// with the image's own entrypoint, command and user; as root it also
// lists the table in its background child process.
func TestRunInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (unshare, chroot, mount)")
	}
	for _, tool := range []string{"unshare", "chroot", "ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s is not installed", tool)
		}
	}
	layout, _ := built(t)
	l := loadLayout(t, layout)
	root := filepath.Join(t.TempDir(), "rootfs")
	extract(t, l.layerTar, root)
	for _, d := range []string{"proc", "dev"} { // mount points, as a runtime makes them
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := l.config.Config
	var port string
	for p := range c.ExposedPorts {
		port = strings.TrimSuffix(p, "/tcp")
	}
	out := t.TempDir()
	args := append([]string{"--net", "--mount", "--pid", "--fork", "sh", "-c", inNamespace, "sh", root, out, port, c.User}, append(slices.Clone(c.Entrypoint), c.Cmd...)...)
	cmd := exec.Command("unshare", args...)
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(out, name))
		return string(b)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unshare: %v\n%s\nctdoctor --version in the image: %s", err, b, read("version"))
	}
	if got := read("version"); got != "ctdoctor "+testVersion+"\n" {
		t.Errorf("--version in the image: %q", got)
	}
	globalMax, _ := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	// The namespace's label is "self" or "init" (the exporter's is the one
	// of PID 1 when it may look): any label, the same on every line.
	has := func(m, metric, value string) bool {
		return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + `netns="[a-z]+"\} ` + regexp.QuoteMeta(value) + `$`).MatchString(m)
	}
	for _, run := range []string{"user", "root"} {
		m, log := read(run+".metrics"), read(run+".log")
		if to := read(run + ".timeout"); to != "" {
			t.Errorf("%s: %s\nlast /metrics:\n%s\nlog:\n%s", run, to, m, log)
			continue
		}
		for _, c := range []string{"table", "stats"} {
			if !has(m, `ctdoctor_exporter_up{collector="`+c+`",`, "1") {
				t.Errorf("%s: the %s collector is not up\nlog:\n%s", run, c, log)
			}
		}
		// The limit is the host's global one (read-only in another namespace).
		if len(globalMax) > 0 && !has(m, "ctdoctor_conntrack_entries_limit{", strings.TrimSpace(string(globalMax))) {
			t.Errorf("%s: the limit is not the global nf_conntrack_max %s", run, strings.TrimSpace(string(globalMax)))
		}
		if got := read(run + ".landing"); got != "200" {
			t.Errorf("%s: the landing page answers %q", run, got)
		}
		if got := strings.TrimSpace(read(run + ".exit")); got != "0" {
			t.Errorf("%s: exit status %q after SIGTERM, want 0\n%s", run, got, log)
		}
	}
	// Without CAP_NET_ADMIN the image's user cannot list the table (the
	// wait above ended on breakdown 0); root can, in the child process the
	// exporter starts from its own binary (/proc/self/exe) in the image.
	if log := read("user.log"); !strings.Contains(log, "that needs root (CAP_NET_ADMIN") {
		t.Errorf("user: the listing did not fail for want of privileges:\n%s", log)
	}
}

// extract writes the layer's files under root, as a runtime unpacks it.
func extract(t *testing.T, layer []byte, root string) {
	t.Helper()
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range readTar(t, layer) {
		p := filepath.Join(root, e.name)
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Fatalf("layer entry %q escapes the root", e.name)
		}
		mode := os.FileMode(e.mode & 0o777)
		if e.mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		switch e.typ {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.WriteFile(p, e.data, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("layer entry %q of type %c", e.name, e.typ)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, e.uid, e.gid); err != nil {
			t.Fatal(err)
		}
	}
}

// The output directory is created, or an empty one or an earlier layout
// is used; anything else is left alone.
func TestCheckOut(t *testing.T) {
	dir := t.TempDir()
	if replace, err := checkOut(filepath.Join(dir, "new")); err != nil || replace {
		t.Errorf("a new directory: %v, %v", replace, err)
	}
	if replace, err := checkOut(dir); err != nil || replace {
		t.Errorf("an empty directory: %v, %v", replace, err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	if _, err := checkOut(dir); err == nil || !strings.Contains(err.Error(), "not overwriting it") {
		t.Errorf("a directory of other files: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	if replace, err := checkOut(dir); err != nil || !replace {
		t.Errorf("an earlier layout: %v, %v", replace, err)
	}
}
