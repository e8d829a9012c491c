package host

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

func fixture(name string) string { return filepath.Join("testdata", "hosts", name) }

func readFixture(t *testing.T, name string, opt Options) (*Snapshot, conntrack.Source, error) {
	t.Helper()
	opt.Root = fixture(name)
	s, err := Read(context.Background(), opt)
	if err != nil {
		t.Fatalf("Read %s: %v", name, err)
	}
	src, err := Entries(opt, s)
	return s, src, err
}

func countFlows(t *testing.T, src conntrack.Source) (n int, byState map[string]int, nat int) {
	t.Helper()
	byState = map[string]int{}
	err := src(func(f *conntrack.Flow) error {
		n++
		byState[f.Proto.String()+" "+f.StateName()]++
		if f.NAT() {
			nat++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("entries: %v", err)
	}
	return n, byState, nat
}

func statTotal(t *testing.T, s *Snapshot, f conntrack.StatField) uint64 {
	t.Helper()
	if s.Stats == nil {
		t.Fatalf("no stats; warnings %q", s.Warnings)
	}
	v, ok := s.Stats.Total.Get(f)
	if !ok {
		t.Fatalf("stat %s not read", f)
	}
	return v
}

func TestFixtureCentOS5(t *testing.T) {
	s, src, err := readFixture(t, "centos5", Options{Log: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 0 {
		t.Errorf("warnings: %q", s.Warnings)
	}
	if s.Kernel != "2.6.18-164.el5" || s.Hostname != "server" || s.CPUs != 2 || s.MemBytes != 515400*1024 {
		t.Errorf("system: %q %q %d CPUs %d bytes", s.Kernel, s.Hostname, s.CPUs, s.MemBytes)
	}
	set := s.Settings
	if !set.Legacy || set.Count != 36271 || set.Max != 16640 || set.Buckets != 2080 || set.HashSize != 2080 {
		t.Errorf("settings: %+v", set)
	}
	if set.ObjectSize != 384 || set.SlabSize != 384 || !set.ProcEntries || !set.ProcStats {
		t.Errorf("slab %d/%d proc entries %v stats %v", set.ObjectSize, set.SlabSize, set.ProcEntries, set.ProcStats)
	}
	if set.Timeouts["tcp_timeout_established"] != 432000 || set.Timeouts["udp_timeout_stream"] != 180 || len(set.Timeouts) != 13 {
		t.Errorf("timeouts: %v", set.Timeouts)
	}
	if want := map[string]int64{"checksum": 1, "log_invalid": 0, "tcp_be_liberal": 0, "tcp_loose": 3, "tcp_max_retrans": 3}; !maps.Equal(set.Switches, want) {
		t.Errorf("switches %v, want %v", set.Switches, want)
	}
	if s.TCP != (TCPSysctls{7200, 75, 9, 60, 0, 15, 32768, 61000}) {
		t.Errorf("tcp: %+v", s.TCP)
	}
	if s.Stats.Source != "proc" || len(s.Stats.PerCPU) != 2 {
		t.Errorf("stats source %s, %d CPUs", s.Stats.Source, len(s.Stats.PerCPU))
	}
	if d := statTotal(t, s, conntrack.StatDrop); d != 6174+5933 {
		t.Errorf("drop = %d", d)
	}
	if e := statTotal(t, s, conntrack.StatEntries); e != 36271 {
		t.Errorf("entries = %d (taken once, not summed)", e)
	}
	if s.Stats.Total.Has(conntrack.StatSearchRestart) || !s.Stats.Total.Has(conntrack.StatSearched) {
		t.Errorf("2.6.18 columns: search_restart present or searched missing")
	}
	l := s.Log
	if l.Source != "var/log/messages" || l.TableFullEvents != 3 || l.Suppressed != 98 || len(l.Lines) != 3 {
		t.Errorf("log: %+v", l)
	}
	if l.Lines[0].Module != "ip_conntrack" || l.Lines[0].Text != "ip_conntrack: table full, dropping packet." {
		t.Errorf("log line %+v", l.Lines[0])
	}
	if l.First.Format("Jan _2 15:04:05") != "Nov  8 08:54:58" || l.Last.Format("Jan _2 15:04:05") != "Nov  8 08:55:08" {
		t.Errorf("log first %v last %v", l.First, l.Last)
	}
	if s.Kube.Present {
		t.Errorf("kube-proxy on CentOS 5: %v", s.Kube.Evidence)
	}
	if err != nil {
		t.Fatal(err)
	}
	n, by, _ := countFlows(t, src)
	if n != 36271 || s.Source != "proc" {
		t.Errorf("%d entries from %s, want 36271 from proc", n, s.Source)
	}
	if by["tcp ESTABLISHED"] < n/2 || by["udp "] == 0 || by["icmp "] == 0 {
		t.Errorf("breakdown %v", by)
	}
}

func TestFixturePre515(t *testing.T) {
	s, _, err := readFixture(t, "pre515", Options{Log: true})
	if err == nil || !strings.Contains(err.Error(), "no entry listing") {
		t.Errorf("entries: err %v, want no entry listing", err)
	}
	if len(s.Warnings) != 0 {
		t.Errorf("warnings: %q", s.Warnings)
	}
	set := s.Settings
	if s.Kernel != "5.4.247-162.350.amzn2.x86_64" || s.CPUs != 2 || s.MemBytes != 7910444*1024 {
		t.Errorf("system: %q %d %d", s.Kernel, s.CPUs, s.MemBytes)
	}
	if set.Legacy || set.Max != 262144 || set.Buckets != 65536 || set.HashSize != 65536 || set.Count != 261837 || set.Max != 4*set.Buckets {
		t.Errorf("settings %+v", set)
	}
	if set.ProcEntries || !set.ProcStats || set.ObjectSize != 320 {
		t.Errorf("proc entries %v stats %v object %d", set.ProcEntries, set.ProcStats, set.ObjectSize)
	}
	if _, ok := set.Switches["tcp_ignore_invalid_rst"]; ok || set.Switches["helper"] != 0 || set.Switches["events"] != 1 {
		t.Errorf("switches %v", set.Switches)
	}
	if _, ok := set.Timeouts["frag6_timeout"]; ok {
		t.Error("frag6_timeout is not an entry timeout")
	}
	if set.Timeouts["dccp_timeout_open"] != 43200 || set.Timeouts["sctp_timeout_established"] != 432000 {
		t.Errorf("timeouts %v", set.Timeouts)
	}
	if d, ed := statTotal(t, s, conntrack.StatDrop), statTotal(t, s, conntrack.StatEarlyDrop); d != 0xbc53+0xb914 || ed != 0x1229c8+0x11f679 {
		t.Errorf("drop %d early_drop %d", d, ed)
	}
	if s.Stats.Total.Has(conntrack.StatClashResolve) || s.Stats.Total.Has(conntrack.StatChainTooLong) {
		t.Error("5.4 has no clashres/chainlength: searched/delete_list must not be read as them")
	}
	if l := s.Log; l.TableFullEvents != 5 || l.Suppressed != 1184+1301 || l.Lines[0].Text != "nf_conntrack: nf_conntrack: table full, dropping packet" {
		t.Errorf("log %+v", l)
	}
}

func TestFixtureUbuntuNoProc(t *testing.T) {
	s, _, err := readFixture(t, "ubuntu-noproc", Options{Log: true})
	if err == nil {
		t.Error("entries: no listing, want an error")
	}
	if len(s.Warnings) != 0 {
		t.Errorf("warnings: %q", s.Warnings)
	}
	set := s.Settings
	if set.ProcEntries || set.ProcStats || set.Max != 262144 || set.Buckets != 262144 || set.Count != 187406 {
		t.Errorf("settings %+v", set)
	}
	if set.Switches["events"] != 2 || set.Switches["tcp_ignore_invalid_rst"] != 0 || len(set.Switches) != 10 {
		t.Errorf("switches %v", set.Switches)
	}
	if s.Stats == nil || s.Stats.Source != "netlink" || len(s.Stats.PerCPU) != 4 {
		t.Fatalf("stats %+v", s.Stats)
	}
	if inv := statTotal(t, s, conntrack.StatInvalid); inv != 310441+298772+305120+301987 {
		t.Errorf("invalid %d", inv)
	}
	if s.Stats.Total.Has(conntrack.StatEntries) {
		t.Error("conntrack -S has no entries column")
	}
	if s.Log.Source != "var/log/kern.log" || s.Log.TableFullEvents != 0 {
		t.Errorf("log %+v", s.Log)
	}
	if s.CPUs != 4 || s.Kube.Present {
		t.Errorf("cpus %d kube %v", s.CPUs, s.Kube)
	}
}

func TestFixtureK8sNode(t *testing.T) {
	s, src, err := readFixture(t, "k8s-node", Options{Log: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 0 {
		t.Errorf("warnings: %q", s.Warnings)
	}
	set := s.Settings
	if set.Max != 131072 || set.HashSize != 32768 || set.Buckets != 32768 || s.CPUs != 4 {
		t.Errorf("settings %+v cpus %d", set, s.CPUs)
	}
	if set.Max != KubeProxyMax(s.CPUs) || set.Timeouts["tcp_timeout_established"] != 86400 || set.Timeouts["tcp_timeout_close_wait"] != 3600 {
		t.Errorf("kube-proxy values: %+v", set)
	}
	if !s.Kube.Present || len(s.Kube.Evidence) != 4 || !strings.Contains(s.Kube.Evidence[0], "pid 1234") ||
		!strings.Contains(s.Kube.Evidence[0], "--config=/var/lib/kube-proxy/config.conf") {
		t.Errorf("kube %+v", s.Kube)
	}
	if f := statTotal(t, s, conntrack.StatInsertFailed); f != 387+402+371+395 {
		t.Errorf("insert_failed %d", f)
	}
	if c := statTotal(t, s, conntrack.StatClashResolve); c != 1421+1388+1502+1459 {
		t.Errorf("clashres %d", c)
	}
	if !s.Stats.Total.Has(conntrack.StatDeleteList) || s.Stats.Total.Has(conntrack.StatChainTooLong) {
		t.Error("5.10 header: delete_list, not chainlength")
	}
	if s.Log.Source != "ctdoctor/kmsg.txt" || s.Log.TableFullEvents != 0 || s.Log.Suppressed != 0 {
		t.Errorf("log %+v", s.Log)
	}
	n, by, nat := countFlows(t, src)
	if int64(n) != set.Count || nat < n/2 {
		t.Errorf("%d entries (%d NATed), count %d", n, nat, set.Count)
	}
	if by["udp "] == 0 || by["tcp TIME_WAIT"] == 0 {
		t.Errorf("breakdown %v", by)
	}
}

// TestFixtureNoConntrack: a root without any conntrack sysctl is ErrNoConntrack.
func TestFixtureNoConntrack(t *testing.T) {
	root := t.TempDir()
	for rel, data := range map[string]string{
		"proc/sys/kernel/osrelease":               "6.1.0\n",
		"proc/sys/net/netfilter/nf_log_all_netns": "0\n",
	} {
		writeFile(t, root, rel, data)
	}
	s, err := Read(context.Background(), Options{Root: root})
	if !errors.Is(err, ErrNoConntrack) || s == nil || s.Kernel != "6.1.0" {
		t.Fatalf("err %v snap %v", err, s)
	}
}

// TestFixtureMissingPieces: missing sysctls become warnings and -1.
func TestFixtureMissingPieces(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "proc/sys/kernel/osrelease", "6.1.0\n") // without it, no host root (TestReadRefusesNotHostRoot)
	writeFile(t, root, "proc/sys/net/netfilter/nf_conntrack_max", "65536\n")
	writeFile(t, root, "proc/slabinfo", "slabinfo - version: 2.1\nnf_conntrack_ffff88007b2c0000   1200   1224    312   13    1 : tunables    0    0    0 : slabdata     94     94      0\n")
	writeFile(t, root, "ctdoctor/conntrack-S.txt", "garbage\n")
	s, err := Read(context.Background(), Options{Root: root, Log: true, AllNetNS: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Settings.Max != 65536 || s.Settings.Count != -1 || s.Settings.Buckets != -1 || s.Settings.ObjectSize != 312 {
		t.Errorf("settings %+v", s.Settings)
	}
	if s.Stats != nil || s.TCP.KeepaliveTime != -1 {
		t.Errorf("stats %v tcp %+v", s.Stats, s.TCP)
	}
	all := strings.Join(s.Warnings, "\n")
	for _, w := range []string{"nf_conntrack_count", "hash table size unknown", "statistics: not available", "conntrack-S.txt: line 1",
		"kernel log", "--all-netns", "CPUs", "memory"} {
		if !strings.Contains(all, w) {
			t.Errorf("no warning about %q in:\n%s", w, all)
		}
	}
}

func writeFile(t *testing.T, root, rel, data string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotRoundTrip: what snapshotFiles writes, Read reads back.
func TestSnapshotRoundTrip(t *testing.T) {
	for _, name := range []string{"centos5", "pre515", "ubuntu-noproc", "k8s-node"} {
		t.Run(name, func(t *testing.T) {
			s, err := Read(context.Background(), Options{Root: fixture(name)})
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			for rel, data := range snapshotFiles(s, nil) {
				writeFile(t, root, rel, string(data))
			}
			s2, err := Read(context.Background(), Options{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Settings.Timeouts, s2.Settings.Timeouts) || !maps.Equal(s.Settings.Switches, s2.Settings.Switches) {
				t.Errorf("timeouts/switches differ:\n%v\n%v", s.Settings, s2.Settings)
			}
			a, b := s.Settings, s2.Settings
			a.Timeouts, b.Timeouts, a.Switches, b.Switches = nil, nil, nil, nil
			// No entries are written here, so only the listing's presence differs.
			a.ProcEntries, b.ProcEntries = false, false
			if !reflect.DeepEqual(a, b) || s.TCP != s2.TCP || s.CPUs != s2.CPUs || s.MemBytes != s2.MemBytes || s.Kernel != s2.Kernel {
				t.Errorf("settings differ:\n%+v\n%+v", a, b)
			}
			// Every counter survives, under the column names the kernel used
			// (an old kernel's searched and delete_list included).
			if s.Stats.Total != s2.Stats.Total || s.Stats.Source != s2.Stats.Source {
				t.Errorf("stats differ:\n%+v\n%+v", s.Stats.Total, s2.Stats.Total)
			}
		})
	}
}
