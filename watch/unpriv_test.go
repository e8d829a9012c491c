package watch

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// TestUnprivileged runs TestUnprivilegedHelper as nobody inside a test
// namespace: without CAP_NET_ADMIN the frame carries the error, naming
// the privilege, with the counters that need none; nothing panics.
func TestUnprivileged(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nft")
	ns.Track()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("skipped: setpriv (util-linux) is not installed, cannot drop privileges")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("skipped: cannot find the test binary: %v", err)
	}
	// The go test build directory is private to root: copy the binary.
	dir, err := os.MkdirTemp("", "ctdtest-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "watch.test")
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err == nil {
		_, err = io.Copy(out, in)
		out.Close()
	}
	in.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run=^TestUnprivilegedHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "CTDTEST_UNPRIV_HELPER=1")
	res, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(res), "--- PASS: TestUnprivilegedHelper") {
		t.Fatalf("helper as nobody: %v\n%s", err, res)
	}
	t.Logf("%s", res)
}

func TestUnprivilegedHelper(t *testing.T) {
	if os.Getenv("CTDTEST_UNPRIV_HELPER") != "1" {
		t.Skip("skipped: helper process of TestUnprivileged")
	}
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	frames, err := Once(ctx, nil, false, Options{Interval: 100 * time.Millisecond})
	if err != nil || len(frames) != 1 {
		t.Fatalf("Once as nobody: %d frames, %v", len(frames), err)
	}
	f := frames[0]
	t.Logf("frame: count %d max %d mode %s (%s)\nerror: %s\nkernel log: %s", f.Count, f.Max, f.Mode, f.ModeReason, f.Err, f.KernelLogError)
	if !strings.Contains(f.Err, "CAP_NET_ADMIN") || !strings.Contains(f.Err, "run as root") {
		t.Errorf("error %q, want one naming CAP_NET_ADMIN", f.Err)
	}
	if f.Mode != ModePolling || !strings.Contains(f.ModeReason, "CAP_NET_ADMIN") {
		t.Errorf("mode %s (%q): events need CAP_NET_ADMIN too", f.Mode, f.ModeReason)
	}
	if f.Count < 0 || f.Max <= 0 {
		t.Errorf("count %d, max %d: the sysctls need no privilege", f.Count, f.Max)
	}
}
