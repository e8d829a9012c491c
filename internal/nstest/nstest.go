// Package nstest creates throw-away network namespaces for tests that need
// the real kernel: real traffic on loopback, real nft rules and
// conntrack-tools as the oracle, without touching the host's own state.
// Every namespace is deleted in t.Cleanup, also when the test fails.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is a network namespace created for one test.
type NS struct {
	Name string
	t    testing.TB
}

// Require skips the test unless it runs as root with the named commands on PATH.
func Require(t testing.TB, cmds ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("skipped: %s is not installed (apt-get install %s)", c, pkgOf(c))
		}
	}
}

func pkgOf(cmd string) string {
	switch cmd {
	case "ip":
		return "iproute2"
	case "ping":
		return "iputils-ping"
	}
	return cmd
}

// New creates a namespace with loopback up. It skips the test when not root.
func New(t testing.TB, cmds ...string) *NS {
	t.Helper()
	Require(t, cmds...)
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := &NS{Name: "ctdtest-" + hex.EncodeToString(b[:]), t: t}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.Run("ip", "link", "set", "lo", "up")
	return n
}

// Path is the namespace's bind mount, usable with setns.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Inode returns the namespace's inode number, as the kernel log prints it.
func (n *NS) Inode() uint64 {
	var st unix.Stat_t
	if err := unix.Stat(n.Path(), &st); err != nil {
		n.t.Fatalf("stat %s: %v", n.Path(), err)
	}
	return st.Ino
}

// Run runs a command inside the namespace and returns its stdout; a
// failure fails the test.
func (n *NS) Run(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Output(name, args...)
	if err != nil {
		n.t.Fatalf("ip netns exec %s %s %s: %v", n.Name, name, strings.Join(args, " "), err)
	}
	return out
}

// Output runs a command inside the namespace and returns its stdout and an
// error that includes its stderr.
func (n *NS) Output(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Nft loads an nft ruleset (nft -f -) into the namespace.
func (n *NS) Nft(ruleset string) {
	n.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("nft -f in %s: %v: %s\n%s", n.Name, err, out, ruleset)
	}
}

// TrackRuleset is a minimal stateful ruleset: a fresh namespace tracks
// nothing until some rule uses conntrack.
const TrackRuleset = `table inet ctdtest {
	chain input {
		type filter hook input priority filter;
		ct state established,related accept
		iif "lo" accept
	}
}
`

// Track makes the kernel track connections in the namespace.
func (n *NS) Track() { n.Nft(TrackRuleset) }

// Do runs fn on an OS thread switched into the namespace. Sockets created
// by fn belong to the namespace. fn must not start goroutines that create
// sockets (they would run on other threads, in the caller's namespace).
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread goes back to its own namespace afterwards: were it the
		// process's main thread, Go would park it rather than end it, and a
		// thread left inside would keep the deleted namespace alive. Only a
		// thread back home is unlocked; one that could not return exits
		// with the goroutine.
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open(n.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open %s: %w", n.Path(), err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		err = fn()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// LoadFlows loads entries in `conntrack -R` format into the namespace's table.
func (n *NS) LoadFlows(file string) {
	n.t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", n.Name, "conntrack", "-R", file).CombinedOutput(); err != nil {
		n.t.Fatalf("conntrack -R %s: %v: %s", file, err, out)
	}
}

// GlobalMax returns the host's nf_conntrack_max, the limit every
// namespace's count is held to; it skips the test when the value cannot
// be read or is too large to fill in a test.
func GlobalMax(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	var max int
	fmt.Sscan(string(b), &max)
	if max <= 0 || max > 1<<20 {
		t.Skipf("skipped: nf_conntrack_max %d is too large to fill in a test", max)
	}
	return max
}

// AssuredFlows writes count ASSURED ESTABLISHED entries with an hour to
// live, in `conntrack -R` format, to a file in t.TempDir() and returns its
// path. Early drop cannot evict them: a table full of them drops.
func AssuredFlows(t testing.TB, count int) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "assured.txt")
	var b strings.Builder
	for i := range count {
		fmt.Fprintf(&b, "-I -t 3600 -u ASSURED -s 10.%d.%d.%d -d 10.200.0.1 -p tcp --sport %d --dport 80 --state ESTABLISHED\n",
			i>>16&255, i>>8&255, i&255, 1024+i%60000)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// FillAssured loads count ASSURED entries (see AssuredFlows) into the table.
func (n *NS) FillAssured(count int) {
	n.t.Helper()
	n.LoadFlows(AssuredFlows(n.t, count))
}
