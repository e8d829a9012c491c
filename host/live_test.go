package host

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// statSFields are the counters `conntrack -S` prints.
var statSFields = []conntrack.StatField{conntrack.StatFound, conntrack.StatInvalid, conntrack.StatInsert,
	conntrack.StatInsertFailed, conntrack.StatDrop, conntrack.StatEarlyDrop, conntrack.StatError,
	conntrack.StatSearchRestart, conntrack.StatClashResolve, conntrack.StatChainTooLong}

// TestLiveNetNS reads a namespace the test creates: its own timeouts, count,
// statistics and entries, while the caller's namespace stays as it was.
func TestLiveNetNS(t *testing.T) {
	ns := nstest.New(t, "conntrack", "sysctl")
	ctx := context.Background()
	const key = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"
	before, err := os.ReadFile(key)
	if err != nil {
		t.Skipf("skipped: no nf_conntrack on this host: %v", err)
	}
	callerUDP, _ := strconv.ParseInt(strings.TrimSpace(string(before)), 10, 64)
	if callerUDP == 17 {
		t.Skip("skipped: the host's own udp_timeout is already 17")
	}
	ns.Run("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=17")
	for i := range 3 {
		ns.Run("conntrack", "-I", "-p", "udp", "-s", "127.0.0.1", "-d", "127.0.0.2", "--sport", strconv.Itoa(1000+i),
			"--dport", "53", "-t", "50", "-u", "SEEN_REPLY")
	}

	snap, err := Read(ctx, Options{Root: "/", NetNS: ns.Name, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	if snap.NetNS.Name != ns.Name || snap.NetNS.Inode != ns.Inode() || snap.NetNS.Init || snap.NetNS.Path != ns.Path() {
		t.Errorf("netns %+v, want %s inode %d", snap.NetNS, ns.Name, ns.Inode())
	}
	if got := snap.Settings.Timeouts["udp_timeout"]; got != 17 {
		t.Errorf("udp_timeout in %s = %d, want 17", ns.Name, got)
	}
	if snap.Settings.Count != 3 {
		t.Errorf("count in %s = %d, want 3", ns.Name, snap.Settings.Count)
	}
	if snap.Settings.Max <= 0 || snap.Settings.Buckets <= 0 || snap.Kernel == "" || snap.CPUs <= 0 {
		t.Errorf("settings %+v", snap.Settings)
	}
	if snap.Log.Source != "/dev/kmsg" && snap.Log.Source != "dmesg" {
		t.Errorf("log source %q; warnings %q", snap.Log.Source, snap.Warnings)
	}

	// The caller's namespace is untouched and still reads its own value.
	mine, err := Read(ctx, Options{Root: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if got := mine.Settings.Timeouts["udp_timeout"]; got != callerUDP {
		t.Errorf("caller's udp_timeout = %d, want %d", got, callerUDP)
	}
	if after, _ := os.ReadFile(key); string(after) != string(before) {
		t.Errorf("caller's sysctl changed: %q → %q", before, after)
	}

	// Statistics from procfs equal `conntrack -S` inside the namespace.
	if snap.Stats == nil || snap.Stats.Source != "proc" {
		t.Fatalf("stats %+v; warnings %q", snap.Stats, snap.Warnings)
	}
	cs, err := ParseConntrackS(strings.NewReader(ns.Run("conntrack", "-S")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != len(snap.Stats.PerCPU) {
		t.Fatalf("conntrack -S: %d CPUs, procfs %d", len(cs), len(snap.Stats.PerCPU))
	}
	for cpu := range cs {
		for _, f := range statSFields {
			want, ok := cs[cpu].Get(f)
			got, _ := snap.Stats.PerCPU[cpu].Get(f)
			if ok && got != want {
				t.Errorf("cpu %d %s: procfs %d, conntrack -S %d", cpu, f, got, want)
			}
		}
	}
	if ins, _ := snap.Stats.Total.Get(conntrack.StatInsert); ins != 3 {
		t.Errorf("insert = %d, want the 3 ctnetlink inserts", ins)
	}
	nl, err := netlinkStats(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	for cpu := range nl {
		for _, f := range statSFields {
			if want, ok := nl[cpu].Get(f); ok && want != snap.Stats.PerCPU[cpu].Values[f] {
				t.Errorf("cpu %d %s: procfs %d, netlink %d", cpu, f, snap.Stats.PerCPU[cpu].Values[f], want)
			}
		}
	}

	// Entries: netlink first, and the procfs listing of the same namespace.
	opt := Options{Root: "/", NetNS: ns.Name}
	src, err := Entries(opt, snap)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Source != "netlink" {
		t.Errorf("source %q, want netlink", snap.Source)
	}
	for _, s := range []conntrack.Source{src, (&reader{root: "/", live: true, nsPath: ns.Path()}).procSource("proc/net/nf_conntrack")} {
		var ports []uint16
		err := s(func(f *conntrack.Flow) error {
			if f.Proto != conntrack.UDP || f.Orig.DstPort != 53 || f.Orig.Src.String() != "127.0.0.1" {
				t.Errorf("unexpected entry %v", f)
			}
			ports = append(ports, f.Orig.SrcPort)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ports)
		if !slices.Equal(ports, []uint16{1000, 1001, 1002}) {
			t.Errorf("entries' ports %v", ports)
		}
	}

	// Two samples with an interval.
	snap2, err := Read(ctx, Options{Root: "/", NetNS: ns.Path(), Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if snap2.Stats == nil || snap2.Stats2 == nil || !snap2.Stats2.At.After(snap2.Stats.At) || snap2.NetNS.Name != ns.Name {
		t.Errorf("two samples: %+v %+v netns %+v", snap2.Stats, snap2.Stats2, snap2.NetNS)
	}
	st, err := ReadStats(Options{Root: "/", NetNS: ns.Name})
	if err != nil || len(st.PerCPU) != len(cs) {
		t.Errorf("ReadStats: %v", err)
	}
}

func TestLiveResolveAndList(t *testing.T) {
	ns := nstest.New(t, "sleep")
	for _, spec := range []string{ns.Name, ns.Path()} {
		got, err := ResolveNetNS(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got.Inode != ns.Inode() || got.Name != ns.Name || got.Init {
			t.Errorf("ResolveNetNS(%q) = %+v", spec, got)
		}
	}
	// A process inside the namespace resolves to it, named after /run/netns.
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var got NetNS
	var err error
	for range 100 { // ip netns exec switches namespaces before exec'ing sleep
		got, err = ResolveNetNS(strconv.Itoa(cmd.Process.Pid))
		if err == nil && got.Inode == ns.Inode() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || got.Inode != ns.Inode() || got.Name != ns.Name {
		t.Errorf("ResolveNetNS(pid) = %+v, %v", got, err)
	}
	self, err := ResolveNetNS("")
	if err != nil || self.Inode == 0 {
		t.Fatalf("ResolveNetNS(\"\") = %+v, %v", self, err)
	}

	list, err := ListNetNS()
	if err != nil {
		t.Fatal(err)
	}
	found, inits := false, 0
	seen := map[uint64]bool{}
	for _, n := range list {
		if seen[n.Inode] {
			t.Errorf("inode %d listed twice", n.Inode)
		}
		seen[n.Inode] = true
		if n.Name == ns.Name && n.Inode == ns.Inode() {
			found = true
		}
		if n.Init {
			inits++
		}
	}
	if !found || inits != 1 {
		t.Errorf("ListNetNS: %s found %v, %d initial namespaces: %+v", ns.Name, found, inits, list)
	}

	snap, err := Read(context.Background(), Options{Root: "/", AllNetNS: true})
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	for _, u := range snap.AllNetNS {
		if u.Name == ns.Name {
			ok = u.Count == 0 && u.Max == snap.Settings.Max && u.Error == ""
		}
	}
	if !ok {
		t.Errorf("AllNetNS has no usable %s: %+v", ns.Name, snap.AllNetNS)
	}
}

func TestResolveNetNSErrors(t *testing.T) {
	_, err := ResolveNetNS("ctdoctor-no-such-namespace")
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "/run/netns") {
		t.Errorf("missing name: %v", err)
	}
	if _, err := ResolveNetNS("a/b"); err == nil {
		t.Error("relative path accepted")
	}
	if _, err := ResolveNetNS("999999999"); err == nil || !strings.Contains(err.Error(), "/proc/999999999/ns/net") {
		t.Errorf("missing pid: %v", err)
	}
	if _, err := ResolveNetNS("/etc/hostname"); err == nil || !strings.Contains(err.Error(), "not a namespace") {
		t.Errorf("plain file: %v", err)
	}
}

// TestLiveKernelLogDoesNotBlock: reading /dev/kmsg stops at the end of the ring.
func TestLiveKernelLogDoesNotBlock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: reading the kernel log may need CAP_SYSLOG (run as root)")
	}
	done := make(chan error, 1)
	go func() {
		s, err := readLiveLog(nil)
		if err == nil && s.Source == "" {
			t.Error("no source")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading the kernel log blocked")
	}
}
