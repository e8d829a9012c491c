package host

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestUnprivileged re-runs itself as nobody: Read still returns the
// snapshot, and what failed is a Warning (or, for the entries, an error)
// that names the privilege needed.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("CTDOCTOR_UNPRIV_CHILD") == "1" {
		unprivilegedChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to switch to an unprivileged user")
	}
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_max"); err != nil {
		t.Skip("skipped: no nf_conntrack on this host")
	}
	// The test binary's build directory is private to root: run a copy.
	dir, err := os.MkdirTemp("", "ctdoctor-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := dir + "/host.test"
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestUnprivileged$", "-test.v")
	cmd.Env = append(os.Environ(), "CTDOCTOR_UNPRIV_CHILD=1")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil && (errors.Is(err, fs.ErrPermission) || strings.Contains(string(out), "permission denied")) && !strings.Contains(string(out), "--- FAIL") {
		t.Skipf("skipped: the test binary is not executable by nobody: %v", err)
	}
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("as nobody:\n%s", out)
}

func unprivilegedChild(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("child runs as root")
	}
	snap, err := Read(context.Background(), Options{Root: "/", Log: true})
	if err != nil {
		t.Fatalf("Read as nobody: %v", err)
	}
	if snap.Settings.Max <= 0 || snap.Settings.Count < 0 || len(snap.Settings.Timeouts) == 0 {
		t.Errorf("sysctls are world-readable, got %+v", snap.Settings)
	}
	all := strings.Join(snap.Warnings, "\n")
	t.Logf("warnings:\n%s", all)
	if snap.Settings.ObjectSize == 0 && !strings.Contains(all, "readable by root only") {
		t.Error("slab warning does not name root")
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/dmesg_restrict"); strings.TrimSpace(string(b)) == "1" && !strings.Contains(all, "CAP_SYSLOG") {
		t.Error("kernel log warning does not name CAP_SYSLOG")
	}
	if _, err := Entries(Options{Root: "/"}, snap); err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("Entries as nobody: %v, want an error naming CAP_NET_ADMIN", err)
	}
	if _, err := netlinkStats(""); err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("netlink stats as nobody: %v", err)
	}
}
