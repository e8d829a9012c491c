// Command build makes ctdoctor's container image without a container
// engine: it cross-builds the static binary (CGO_ENABLED=0, -trimpath,
// -ldflags "-s -w", the version stamped in) and writes an OCI image layout
// FROM scratch holding only the binary, /etc/passwd and /etc/group naming
// the non-root user 65532 the image runs as, its home and /tmp; the
// entrypoint, command, exposed port and labels are those of
// deploy/container/Containerfile. Run it from the repository:
//
//	go run ./deploy/container/build -o ctdoctor-oci -archive ctdoctor.tar
//
// -o is the OCI image layout (skopeo, podman, crane, umoci read it);
// -archive the same as one tar, which `docker load -i`, `podman load -i`
// and containerd's `ctr images import` take. Without -version the version
// is `git describe --tags --always --dirty`; the files' dates and the
// image's creation time are the commit's (or SOURCE_DATE_EPOCH), so the
// same source gives the same image digest.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

const modulePath = "github.com/ctdoctor/ctdoctor"

// versionVar is the variable -ldflags -X stamps the version into.
const versionVar = modulePath + "/internal/cli.Version"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "ctdoctor-oci", "`DIR` to write the OCI image layout to (empty, new, or an earlier layout, which is replaced)")
	archive := fs.String("archive", "", "also write the layout as one tar `FILE` (docker load -i, podman load -i, ctr images import)")
	arch := fs.String("arch", runtime.GOARCH, "the image's `GOARCH` (amd64, arm64, …)")
	version := fs.String("version", "", "the `VERSION` stamped into the binary and the labels (default: git describe --tags --always --dirty)")
	name := fs.String("name", "ghcr.io/ctdoctor/ctdoctor", "the image's `NAME`, for docker load")
	tag := fs.String("tag", "latest", "the image's `TAG`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./deploy/container/build [flags]\n\nBuilds ctdoctor's container image (static binary, FROM scratch, user %d) as an OCI image layout, without a container engine.\n\n", imageUID)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "build: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := buildAndWrite(*out, *archive, *arch, *version, *name, *tag, stdout); err != nil {
		fmt.Fprintf(stderr, "build: %v\n", err)
		return 1
	}
	return 0
}

func buildAndWrite(out, archive, arch, version, name, tag string, stdout io.Writer) error {
	if _, err := checkOut(out); err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	spec := imageSpec{Arch: arch, Version: version, Name: name, Tag: tag}
	if spec.Version == "" {
		spec.Version = gitOutput(root, "describe", "--tags", "--always", "--dirty")
		if spec.Version == "" {
			spec.Version = "dev"
		}
	}
	spec.Revision = gitOutput(root, "rev-parse", "HEAD")
	if spec.Created, err = sourceDate(root); err != nil {
		return err
	}
	if spec.Binary, err = buildBinary(root, arch, spec.Version); err != nil {
		return err
	}
	img, err := buildImage(spec)
	if err != nil {
		return err
	}
	if err := img.writeLayout(out); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	fmt.Fprintf(stdout, "%s: OCI image layout of %s:%s (linux/%s, ctdoctor %s), manifest %s, layer %.1f MB\n",
		out, name, tag, arch, spec.Version, img.manifest.desc.Digest, float64(img.layer.desc.Size)/1e6)
	if archive != "" {
		var b bytes.Buffer
		if err := img.writeArchive(&b, spec.Created); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		if err := os.WriteFile(archive, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		fmt.Fprintf(stdout, "%s: the same as one tar (docker load -i %s)\n", archive, archive)
	}
	return nil
}

// moduleRoot is the directory of ctdoctor's go.mod, from the working
// directory as the go command finds it.
func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run this from ctdoctor's repository")
	}
	mod, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(string(mod), "module "+modulePath+"\n") {
		return "", fmt.Errorf("%s is not %s's go.mod: run this from ctdoctor's repository", gomod, modulePath)
	}
	return filepath.Dir(gomod), nil
}

// buildBinary cross-builds the static ctdoctor for arch.
func buildBinary(root, arch, version string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "ctdoctor-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "ctdoctor")
	cmd := exec.Command("go", goBuildArgs(version, bin)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build for linux/%s: %w\n%s", arch, err, out)
	}
	return os.ReadFile(bin)
}

// goBuildArgs are the go command's arguments for the image's binary (the
// Containerfile runs the same build).
func goBuildArgs(version, out string) []string {
	return []string{"build", "-trimpath", "-ldflags=-s -w -X " + versionVar + "=" + version, "-o", out, "./cmd/ctdoctor"}
}

// gitOutput is git's answer in root, "" when git or the repository is missing.
func gitOutput(root string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// sourceDate is SOURCE_DATE_EPOCH, else the commit's time, else zero.
func sourceDate(root string) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		s = gitOutput(root, "log", "-1", "--format=%ct")
	}
	if s == "" {
		return time.Time{}, nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}
