package ctnetlink

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/internal/flowgen"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"golang.org/x/sys/unix"
)

// newNS creates a uniquely named throw-away namespace (ctdtest-…), deleted
// in t.Cleanup; it skips the test unless root with ip and conntrack installed.
func newNS(t *testing.T) *nstest.NS {
	t.Helper()
	return nstest.New(t, "conntrack")
}

// insertCommands are `conntrack -I` argument lists covering both families,
// TCP states, unreplied and assured UDP, ICMP and ICMPv6, zones (also per
// direction), marks, SCTP, GRE and UDP-Lite.
var insertCommands = []string{
	"-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1000 --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 300",
	"-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1001 --dport 80 --state SYN_SENT -t 120",
	"-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1002 --dport 443 --state TIME_WAIT -u SEEN_REPLY,ASSURED -t 120 --mark 7",
	"-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1003 --dport 443 --state SYN_RECV -u SEEN_REPLY -t 60",
	"-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1004 --dport 443 --state CLOSE_WAIT -u SEEN_REPLY,ASSURED -t 60 --zone 9",
	"-p udp -s 10.0.0.1 -d 10.0.0.2 --sport 2000 --dport 53 -t 30",
	"-p udp -s 10.0.0.1 -d 10.0.0.2 --sport 2001 --dport 53 -t 180 -u SEEN_REPLY,ASSURED",
	"-p udp -s 10.0.0.1 -d 10.0.0.2 --sport 2002 --dport 53 -t 30 --zone 7 --mark 42",
	"-p udp -s 10.0.0.1 -d 10.0.0.3 --sport 2003 --dport 53 -t 30 --orig-zone 3",
	"-p udp -s 10.0.0.1 -d 10.0.0.4 --sport 2004 --dport 53 -t 30 --reply-zone 4",
	"-p icmp -s 10.0.0.1 -d 10.0.0.2 --icmp-type 8 --icmp-code 0 --icmp-id 77 -t 30",
	"-p icmp -s 10.0.0.1 -d 10.0.0.2 --icmp-type 8 --icmp-code 0 --icmp-id 78 -t 30 -u SEEN_REPLY",
	"-p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 1000 --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 300",
	"-p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 1001 --dport 80 --state FIN_WAIT -u SEEN_REPLY,ASSURED -t 120 --mark 4294967295",
	"-p udp -s 2001:db8::1 -d 2001:db8::2 --sport 2000 --dport 53 -t 30",
	"-p udp -s ::ffff:10.0.0.1 -d 2001:db8::2 --sport 2001 --dport 53 -t 30 -u SEEN_REPLY,ASSURED --zone 65535",
	"-p icmpv6 -s 2001:db8::1 -d 2001:db8::2 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 7 -t 30",
	"-p sctp -s 10.0.0.1 -d 10.0.0.2 --sport 5 --dport 6 --state ESTABLISHED --orig-vtag 1 --reply-vtag 2 -t 30",
	"-p gre -s 10.0.0.1 -d 10.0.0.2 --srckey 5 --dstkey 6 -t 30",
	"-p udplite -s 10.0.0.1 -d 10.0.0.2 --sport 5 --dport 6 -t 30",
}

// loadVariety fills the namespace with insertCommands and, when traffic is
// set, real ICMP flows over loopback (non-zero counters).
func loadVariety(t *testing.T, ns *nstest.NS, traffic bool) int {
	t.Helper()
	for _, args := range insertCommands {
		if _, err := ns.Output("conntrack", append([]string{"-I"}, strings.Fields(args)...)...); err != nil {
			t.Fatalf("conntrack -I %s: %v", args, err)
		}
	}
	n := len(insertCommands)
	if traffic {
		if _, err := exec.LookPath("ping"); err != nil {
			t.Log("ping not installed: no real traffic, counters stay zero")
			return n
		}
		ns.Track()
		ns.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", "127.0.0.1")
		ns.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", "::1")
		n += 2
	}
	return n
}

var (
	reTimeout = regexp.MustCompile(`^(\S+ +\d+ )(\d+)( .*)$`)
	reUse     = regexp.MustCompile(` use=\d+$`)
	reDelta   = regexp.MustCompile(` delta-time=(\d+) `)
)

// normLine is a `conntrack -L` line with the columns that legitimately
// differ between two reads (timeout, delta-time, use) taken out.
type normLine struct {
	key            string
	timeout, delta int64
}

func normalise(t *testing.T, line string) normLine {
	t.Helper()
	m := reTimeout.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("unexpected line %q", line)
	}
	n := normLine{delta: -1}
	n.timeout, _ = strconv.ParseInt(m[2], 10, 64)
	rest := reUse.ReplaceAllString(m[3], " use=")
	if d := reDelta.FindStringSubmatch(rest); d != nil {
		n.delta, _ = strconv.ParseInt(d[1], 10, 64)
		rest = reDelta.ReplaceAllString(rest, " delta-time= ")
	}
	n.key = m[1] + "T" + rest
	return n
}

func normaliseAll(t *testing.T, text string) []normLine {
	var out []normLine
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if l != "" {
			out = append(out, normalise(t, l))
		}
	}
	slices.SortFunc(out, func(a, b normLine) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return int(a.timeout - b.timeout)
	})
	return out
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// compareWithConntrackL dumps the namespace with Conn and with `conntrack -L`
// and requires the same lines, up to ±1 s in timeout and delta-time.
func compareWithConntrackL(t *testing.T, ns *nstest.NS, want int) {
	t.Helper()
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ref := ns.Run("conntrack", "-L")
	var got []byte
	n := 0
	if err := c.Dump(func(f *conntrack.Flow) error {
		got = f.AppendConntrack(got)
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want >= 0 && n != want {
		t.Errorf("dumped %d flows, want %d", n, want)
	}
	a, b := normaliseAll(t, string(got)), normaliseAll(t, ref)
	if len(a) != len(b) {
		t.Fatalf("Dump gave %d lines, conntrack -L %d\nDump:\n%s\nconntrack -L:\n%s", len(a), len(b), got, ref)
	}
	bad := 0
	for i := range a {
		if a[i].key != b[i].key || abs(a[i].timeout-b[i].timeout) > 1 || abs(a[i].delta-b[i].delta) > 1 {
			bad++
			if bad <= 10 {
				t.Errorf("line %d differs:\n Dump:         %+v\n conntrack -L: %+v", i, a[i], b[i])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d lines differ", bad, len(a))
	}
}

func TestDumpMatchesConntrackL(t *testing.T) {
	ns := newNS(t)
	// Per-namespace sysctls inside the test namespace only.
	ns.Run("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1")
	n := loadVariety(t, ns, true)
	compareWithConntrackL(t, ns, n)
}

func TestDumpMatchesConntrackLPlain(t *testing.T) {
	ns := newNS(t)
	n := loadVariety(t, ns, false)
	compareWithConntrackL(t, ns, n)
}

func TestDumpMatchesConntrackLGenflows(t *testing.T) {
	ns := newNS(t)
	const n = 20000
	loadGenflows(t, ns.Name, n, 7)
	compareWithConntrackL(t, ns, n)
}

func TestDumpEmpty(t *testing.T) {
	ns := newNS(t)
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	if err := c.Dump(func(*conntrack.Flow) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("empty table: %d flows, err %v", n, err)
	}
}

// loadGenflows loads n entries of the repository's synthetic table
// (internal/flowgen, drawn for seed) into the named namespace.
func loadGenflows(tb testing.TB, ns string, n, seed int) {
	tb.Helper()
	f, err := os.CreateTemp("", "ctdtest-flows-*.txt")
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	if err := flowgen.WriteFile(f.Name(), n, uint64(seed)); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "conntrack", "-R", f.Name()).CombinedOutput(); err != nil {
		tb.Fatalf("conntrack -R: %v: %s", err, out)
	}
}

func TestStatsMatchesConntrackS(t *testing.T) {
	ns := newNS(t)
	loadVariety(t, ns, false)
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	ref := ns.Run("conntrack", "-S")
	cpus := 0
	inserts := uint64(0)
	for _, line := range strings.Split(strings.TrimSpace(ref), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu=") {
			t.Fatalf("unexpected conntrack -S line %q", line)
		}
		cpu, err := strconv.Atoi(strings.TrimPrefix(fields[0], "cpu="))
		if err != nil || cpu >= len(got) {
			t.Fatalf("conntrack -S line %q: cpu %d, Stats has %d", line, cpu, len(got))
		}
		cpus++
		s := got[cpu]
		present := 0
		for _, kv := range fields[1:] {
			k, v, _ := strings.Cut(kv, "=")
			field, ok := conntrack.StatFieldByHeader(k)
			if !ok {
				t.Errorf("cpu %d: conntrack -S prints unknown counter %q", cpu, k)
				continue
			}
			want, _ := strconv.ParseUint(v, 10, 64)
			g, has := s.Get(field)
			if !has || g != want {
				t.Errorf("cpu %d %s: Stats %d (present %v), conntrack -S %d", cpu, k, g, has, want)
			}
			present++
		}
		for f := range conntrack.NumStatFields {
			if s.Has(f) {
				present--
			}
		}
		if present != 0 {
			t.Errorf("cpu %d: Present %b does not match the %d counters conntrack -S prints", cpu, s.Present, len(fields)-1)
		}
		v, _ := s.Get(conntrack.StatInsert)
		inserts += v
		for _, f := range []conntrack.StatField{conntrack.StatClashResolve, conntrack.StatChainTooLong} {
			if !s.Has(f) {
				t.Errorf("cpu %d: %s missing", cpu, f)
			}
		}
	}
	if cpus != len(got) {
		t.Errorf("conntrack -S shows %d CPUs, Stats returned %d", cpus, len(got))
	}
	if inserts != uint64(len(insertCommands)) {
		t.Errorf("insert summed over CPUs = %d, want %d", inserts, len(insertCommands))
	}
}

func TestCountMatchesConntrackC(t *testing.T) {
	ns := newNS(t)
	n := loadVariety(t, ns, false)
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	count, max, err := c.Count()
	if err != nil {
		t.Fatal(err)
	}
	refC, _ := strconv.ParseInt(strings.TrimSpace(ns.Run("conntrack", "-C")), 10, 64)
	refMax, _ := strconv.ParseInt(strings.TrimSpace(ns.Run("cat", "/proc/sys/net/netfilter/nf_conntrack_max")), 10, 64)
	if count != refC || count != int64(n) {
		t.Errorf("Count = %d, conntrack -C = %d, inserted %d", count, refC, n)
	}
	if max != refMax {
		t.Errorf("max = %d, nf_conntrack_max = %d", max, refMax)
	}
}

func TestOpenBadNamespace(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/nonexistent/ctdtest-netns", "no such file"},
		{"/etc/hostname", "not a namespace file"},
	} {
		c, err := Open(tc.path)
		if err == nil {
			c.Close()
			t.Errorf("Open(%q) succeeded", tc.path)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("Open(%q) = %v, want an error naming the path and saying %q", tc.path, err, tc.want)
		}
	}
	if os.Geteuid() == 0 {
		// A namespace file of another type: setns refuses it.
		c, err := Open("/proc/self/ns/uts")
		if err == nil {
			c.Close()
			t.Fatal("Open(/proc/self/ns/uts) succeeded")
		}
		if !strings.Contains(err.Error(), "not a network namespace") {
			t.Errorf("Open(/proc/self/ns/uts) = %v, want 'not a network namespace'", err)
		}
	}
}

// threadNetns returns the network namespace of every thread of the process.
func threadNetns(t *testing.T) map[string]int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, task := range tasks {
		l, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err == nil {
			m[l]++
		}
	}
	return m
}

func TestOpenLeavesCallerNamespace(t *testing.T) {
	ns := newNS(t)
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var conns []*Conn
	for range 8 {
		c, err := Open(ns.Path())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	// The thread that joined the namespace exits; give it a moment.
	deadline := time.Now().Add(3 * time.Second)
	for {
		m := threadNetns(t)
		if len(m) == 1 && m[self] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads left in other namespaces: %v (caller's is %s)", m, self)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The Conn really talks to the test namespace, whose table is empty.
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns.Run("conntrack", "-I", "-p", "udp", "-s", "10.9.9.9", "-d", "10.9.9.8", "--sport", "1", "--dport", "2", "-t", "50")
	if n, _, err := c.Count(); err != nil || n != 1 {
		t.Fatalf("Count in the test namespace = %d, %v; want 1", n, err)
	}
}

func TestDumpCallbackErrorKeepsConnUsable(t *testing.T) {
	ns := newNS(t)
	loadGenflows(t, ns.Name, 3000, 3)
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := errors.New("stop")
	calls := 0
	err = c.Dump(func(*conntrack.Flow) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("Dump = %v after %d calls, want the callback's error after 1", err, calls)
	}
	n := 0
	if err := c.Dump(func(*conntrack.Flow) error { n++; return nil }); err != nil || n != 3000 {
		t.Fatalf("second Dump: %d flows, %v", n, err)
	}
	if _, err := c.Stats(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetTimeout(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c.Close() != nil || c.Close() != ErrClosed || c.Dump(nil) != ErrClosed {
		t.Fatal("Close twice / Dump after Close should give ErrClosed")
	}
}

// TestPermissionDenied runs TestPermissionHelper as nobody (no
// capabilities), inside a test namespace, to see EPERM mapped to ErrPermission.
func TestPermissionDenied(t *testing.T) {
	runHelperAsNobody(t, "TestPermissionHelper")
}

// runHelperAsNobody runs the test named helper of this test binary as
// nobody (no capabilities, setpriv) inside a fresh test namespace, with
// CTDTEST_PERMISSION_HELPER=1, and fails unless it passes.
func runHelperAsNobody(t *testing.T, helper string) {
	t.Helper()
	ns := newNS(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("skipped: setpriv (util-linux) is not installed, cannot drop privileges")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("skipped: cannot find the test binary: %v", err)
	}
	// The go test build directory is private to root: copy the binary to
	// a directory nobody can read.
	dir, err := os.MkdirTemp("", "ctdtest-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ctnetlink.test")
	if err := copyFile(exe, bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run=^"+helper+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "CTDTEST_PERMISSION_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+helper) {
		t.Fatalf("helper as nobody: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func TestPermissionHelper(t *testing.T) {
	if os.Getenv("CTDTEST_PERMISSION_HELPER") != "1" {
		t.Skip("skipped: helper process of TestPermissionDenied")
	}
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	c, err := Open("")
	if err != nil {
		t.Fatalf("Open as nobody: %v", err)
	}
	defer c.Close()
	check := func(op string, err error) {
		if !errors.Is(err, ErrPermission) || !strings.Contains(fmt.Sprint(err), "CAP_NET_ADMIN") || !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s as nobody = %v, want ErrPermission", op, err)
		} else {
			t.Logf("%s: %v", op, err)
		}
	}
	check("Dump", c.Dump(func(*conntrack.Flow) error { return nil }))
	_, err = c.Stats()
	check("Stats", err)
	_, _, err = c.Count()
	check("Count", err)
}

func TestReceiveTimeout(t *testing.T) {
	// Opening the socket needs no privilege (only the requests do), so
	// an error here is a failure, not a reason to skip.
	c, err := Open("")
	if err != nil {
		t.Fatalf("cannot open a NETLINK_NETFILTER socket: %v", err)
	}
	defer c.Close()
	if err := c.SetTimeout(-time.Second); err == nil {
		t.Error("negative timeout accepted")
	}
	if err := c.SetTimeout(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Nothing was asked, so nothing comes: the receive must time out.
	r := receiver{fd: c.fd}
	start := time.Now()
	_, err = r.recv(make([]byte, 4096), "idle receive")
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("idle receive = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

func TestIgnoresUserSpaceSenders(t *testing.T) {
	ns := newNS(t)
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A second socket in the namespace forges an EPERM answer for the
	// next request; only the kernel's answer (sender port 0) may count.
	var fd int
	if err := ns.Do(func() (err error) { fd, err = newSocket(); return err }); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	forged := ctrlmsg(unix.NLMSG_ERROR, c.seq+1, c.portID, -int32(unix.EPERM))
	// Root (which newNS requires) may send to another socket's port.
	if err := unix.Sendto(fd, forged, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: c.portID}); err != nil {
		t.Fatalf("cannot send to another netlink socket as root: %v", err)
	}
	if _, _, err := c.Count(); err != nil {
		t.Fatalf("Count after a forged answer: %v", err)
	}
}
