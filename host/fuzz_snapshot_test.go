package host_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
)

// snapshotSysctlFiles are the fake root's sysctl files that
// FuzzSnapshotFiles fills, one line of its sysctls input each, in order.
var snapshotSysctlFiles = []string{
	"proc/sys/net/netfilter/nf_conntrack_max",
	"proc/sys/net/netfilter/nf_conntrack_count",
	"proc/sys/net/netfilter/nf_conntrack_buckets",
	"sys/module/nf_conntrack/parameters/hashsize",
	"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
	"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait",
	"proc/sys/net/netfilter/nf_conntrack_udp_timeout",
	"proc/sys/net/netfilter/nf_conntrack_tcp_max_retrans",
	"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_max_retrans",
	"proc/sys/net/ipv4/ip_local_port_range",
	"proc/sys/net/ipv4/tcp_keepalive_time",
	"proc/sys/net/ipv4/tcp_keepalive_intvl",
	"proc/sys/net/ipv4/tcp_keepalive_probes",
	"sys/kernel/slab/nf_conntrack/object_size",
	"proc/sys/kernel/osrelease",
}

const seedMeta = `{"format":"ctdoctor.snapshot/v1","ctdoctor_version":"dev","taken_at":"2026-11-21T05:30:00Z",
"source":"netlink","netns":{"name":"demo","path":"/run/netns/demo","inode":4026532315,"init":false,"created":"2026-11-21T05:20:00Z"},
"anonymized":false,"entries":28000,
"log":{"source":"/dev/kmsg","table_full_events":22,"suppressed":3,"first":"2026-11-21T05:09:23Z","last":"2026-11-21T05:24:59Z",
"lines":[{"time":"2026-11-21T05:24:59Z","module":"nf_conntrack","netns":4026532315,"text":"nf_conntrack: nf_conntrack: table full in netns 4026532315, dropping packet"}],
"netns":[{"inode":4026532315,"name":"demo","count":12,"first":"2026-11-21T05:09:23Z","last":"2026-11-21T05:24:59Z"}]},
"kube_proxy":{"present":false},
"all_netns":[{"name":"init","init":true,"count":10,"max":262144},{"name":"demo","inode":4026532315,"init":false,"count":250000,"max":262144}],
"stats_at":"2026-11-21T05:29:59Z"}`

// FuzzSnapshotFiles: a snapshot archive comes from another machine, and
// after extraction its files are read as a host's: sysctls, meminfo,
// slabinfo, the CPU list, ctdoctor/meta.json. Any content gives a
// snapshot or an error with a message, never a panic, and the snapshot
// analyses into a report that encodes as JSON (-o json).
func FuzzSnapshotFiles(f *testing.F) {
	k8s := "262144\n250000\n65536\n65536\n86400\n120\n30\n3\n300\n32768\t60999\n7200\n75\n9\n320\n5.15.0-91-generic\n"
	f.Add([]byte(k8s), []byte("MemTotal:       4025836 kB\nMemFree:        1341945 kB\n"), []byte(""), []byte("0-3\n"), []byte(seedMeta))
	f.Add([]byte("16640\n36271\n2080\n2080\n432000\n120\n30\n3\n300\n32768 61000\n7200\n75\n9\n\n2.6.18-164.el5\n"),
		[]byte("MemTotal:       515380 kB\n"),
		[]byte("slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize>\nnf_conntrack_ffff88007b2c0000  36271  36216    384   10    1 : tunables   54   27    8\n"),
		[]byte("0,2-3,7\n"), []byte(`{"format":"ctdoctor.snapshot/v1"}`))
	f.Add([]byte("-1\n\n0\nx\n99999999999999999999\n-5\n0\n255\n0\n61000 32768\n0\n0\n0\n0\n\n"), []byte("MemTotal: 18446744073709551615 kB\n"),
		[]byte("nf_conntrack 1 1 -8 1 1\n"), []byte("3-1\n"), []byte(`{"format":"ctdoctor.snapshot/v1","all_netns":[{"name":"x","count":5,"max":0}],"log":{"netns":[{"inode":0,"count":-3}]}}`))
	f.Add([]byte("1\n1\n1\n1\n"), []byte(""), []byte(""), []byte(""), []byte(`{"format":"ctdoctor.snapshot/v2"}`))
	f.Add([]byte(""), []byte(""), []byte(""), []byte(""), []byte("not json"))
	// One root for all inputs (a fresh directory per input is most of
	// the cost): every input rewrites every file, or removes it.
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, sysctls, meminfo, slabinfo, cpus, meta []byte) {
		put := func(rel string, b []byte) {
			p := filepath.Join(root, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		lines := bytes.SplitN(sysctls, []byte("\n"), len(snapshotSysctlFiles))
		for i, rel := range snapshotSysctlFiles {
			if i < len(lines) {
				put(rel, lines[i])
			} else if err := os.Remove(filepath.Join(root, rel)); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		put("proc/meminfo", meminfo)
		put("proc/slabinfo", slabinfo)
		put("sys/devices/system/cpu/online", cpus)
		put("ctdoctor/meta.json", meta)

		m, merr := host.ReadSnapshotMeta(root)
		if merr != nil && merr.Error() == "" {
			t.Fatal("ReadSnapshotMeta: empty error message")
		}
		snap, err := host.Read(context.Background(), host.Options{Root: root})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("Read: empty error message")
			}
			return // no conntrack, or not a host root: said, not guessed
		}
		if snap.CPUs < 0 {
			t.Fatalf("%d CPUs", snap.CPUs)
		}
		for _, w := range snap.Warnings {
			if strings.TrimSpace(w) == "" {
				t.Fatal("an empty warning")
			}
		}
		now := time.Date(2026, 11, 21, 6, 0, 0, 0, time.UTC)
		if merr == nil {
			host.ApplySnapshotMeta(snap, m)
			if !snap.TakenAt.IsZero() {
				now = snap.TakenAt
			}
		}
		r := analyze.Analyze(snap, nil, now)
		if r.Verdict.Level == "" || r.Verdict.Reason == "" {
			t.Fatalf("no verdict: %+v", r.Verdict)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("the report does not encode as JSON: %v", err)
		}
	})
}
