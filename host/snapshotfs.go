package host

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// SnapshotFormat identifies the snapshot layout in ctdoctor/meta.json.
const SnapshotFormat = "ctdoctor.snapshot/v1"

// SnapshotMeta is ctdoctor/meta.json: what a snapshot knows beyond the
// files of its fake root.
type SnapshotMeta struct {
	Format     string       `json:"format"`
	Version    string       `json:"ctdoctor_version"`
	TakenAt    time.Time    `json:"taken_at"`
	Source     string       `json:"source"` // where the live entries came from
	NetNS      NetNS        `json:"netns"`
	Anonymized bool         `json:"anonymized"`
	Entries    int64        `json:"entries"`
	Log        LogSummary   `json:"log"`
	Kube       KubeProxy    `json:"kube_proxy"`
	AllNetNS   []NetNSUsage `json:"all_netns,omitempty"`
	StatsAt    time.Time    `json:"stats_at,omitzero"`
	Warnings   []string     `json:"warnings,omitempty"`
}

// SaveOptions control SaveSnapshot.
type SaveOptions struct {
	Version string
	// Anon, when set, rewrites addresses (entries, log lines, extra files),
	// the hostname, and namespace names and paths (meta.json, warnings).
	Anon *Anonymizer
	// Extra files to store as they are (e.g. "ctdoctor/ruleset.nft").
	Extra map[string][]byte
	// Progress, when set, is called with the number of entries written so far.
	Progress func(n int64)
}

// procStatColumns are the /proc/net/stat/nf_conntrack column names of
// current and older kernels, in the kernel's order.
var procStatColumns = []string{"entries", "searched", "clashres", "found", "new", "invalid", "ignore", "delete",
	"delete_list", "chainlength", "insert", "insert_failed", "drop", "early_drop", "icmp_error", "expect_new",
	"expect_create", "expect_delete", "search_restart"}

// SaveSnapshot writes snap and the entries from src to w as a snapshot
// archive: a gzip'd tar of a fake root that Read and Entries read back
// into the same Snapshot. Entries are spooled to a temporary file so
// memory stays bounded however large the table is.
func SaveSnapshot(w io.Writer, snap *Snapshot, src conntrack.Source, opt SaveOptions) (int64, error) {
	aw := NewArchiveWriter(w)
	aw.ModTime = snap.TakenAt
	files := snapshotFiles(snap, opt.Anon)
	for _, k := range slices.Sorted(maps.Keys(opt.Extra)) {
		data := opt.Extra[k]
		if opt.Anon != nil {
			data = []byte(opt.Anon.Text(string(data)))
		}
		files[k] = data
	}
	var n int64
	if src != nil {
		tmp, err := os.CreateTemp("", "ctdoctor-entries-*")
		if err != nil {
			return 0, fmt.Errorf("spool entries: %w", err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		bw := bufio.NewWriterSize(tmp, 1<<20)
		buf := make([]byte, 0, 512)
		legacy := snap.Settings.Legacy
		err = src(func(f *conntrack.Flow) error {
			if opt.Anon != nil {
				opt.Anon.Flow(f)
			}
			if legacy {
				buf = f.AppendConntrack(buf[:0])
			} else {
				buf = f.AppendProc(buf[:0])
			}
			n++
			if opt.Progress != nil && n%4096 == 0 {
				opt.Progress(n)
			}
			_, err := bw.Write(buf)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("read entries: %w", err)
		}
		if err := bw.Flush(); err != nil {
			return n, fmt.Errorf("spool entries: %w", err)
		}
		size, err := tmp.Seek(0, io.SeekCurrent)
		if err != nil {
			return n, err
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return n, err
		}
		name := "proc/net/nf_conntrack"
		if legacy {
			name = "proc/net/ip_conntrack"
		}
		if err := aw.AddStream(name, size, tmp); err != nil {
			return n, err
		}
	}
	meta := SnapshotMeta{Format: SnapshotFormat, Version: opt.Version, TakenAt: snap.TakenAt, Source: snap.Source,
		NetNS: snap.NetNS, Anonymized: opt.Anon != nil, Entries: n, Log: snap.Log, Kube: snap.Kube,
		AllNetNS: snap.AllNetNS, Warnings: snap.Warnings}
	if st := latestStats(snap); st != nil {
		meta.StatsAt = st.At
	}
	if opt.Anon != nil {
		anonymizeMeta(&meta, opt.Anon) // namespace names and paths, log lines, warnings
	}
	mj, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return n, err
	}
	files["ctdoctor/meta.json"] = append(mj, '\n')
	for _, k := range slices.Sorted(maps.Keys(files)) {
		if err := aw.AddFile(k, files[k]); err != nil {
			return n, err
		}
	}
	return n, aw.Close()
}

func latestStats(s *Snapshot) *StatsRead {
	if s.Stats2 != nil {
		return s.Stats2
	}
	return s.Stats
}

// snapshotFiles renders what was read as the files of a fake root.
func snapshotFiles(s *Snapshot, anon *Anonymizer) map[string][]byte {
	files := map[string][]byte{}
	put := func(path string, v int64) {
		if v >= 0 {
			files[path] = []byte(strconv.FormatInt(v, 10) + "\n")
		}
	}
	putS := func(path, v string) {
		if v != "" {
			files[path] = []byte(v + "\n")
		}
	}
	hostname := s.Hostname
	if anon != nil && hostname != "" {
		hostname = anon.Hostname(hostname)
	}
	putS("proc/sys/kernel/hostname", hostname)
	putS("proc/sys/kernel/osrelease", s.Kernel)
	if s.MemBytes > 0 {
		files["proc/meminfo"] = fmt.Appendf(nil, "MemTotal:       %d kB\n", s.MemBytes/1024)
	}
	if s.CPUs > 0 {
		cpus := "0"
		if s.CPUs > 1 {
			cpus = fmt.Sprintf("0-%d", s.CPUs-1)
		}
		putS("sys/devices/system/cpu/online", cpus)
		putS("sys/devices/system/cpu/possible", cpus)
	}
	set := s.Settings
	// The same settings under the names of the kernel that was read.
	dir, prefix, module := "proc/sys/net/netfilter/", "nf_conntrack_", "nf_conntrack"
	if set.Legacy {
		dir, prefix, module = "proc/sys/net/ipv4/netfilter/", "ip_conntrack_", "ip_conntrack"
		put("proc/sys/net/ipv4/ip_conntrack_max", set.Max)
	}
	put(dir+prefix+"max", set.Max)
	put(dir+prefix+"count", set.Count)
	put(dir+prefix+"buckets", set.Buckets)
	for _, m := range []map[string]int64{set.Timeouts, set.Switches} {
		for k, v := range m {
			put(dir+prefix+k, v)
		}
	}
	put("sys/module/"+module+"/parameters/hashsize", set.HashSize)
	if set.ObjectSize > 0 {
		put("sys/kernel/slab/nf_conntrack/object_size", set.ObjectSize)
	}
	if set.SlabSize > 0 {
		put("sys/kernel/slab/nf_conntrack/slab_size", set.SlabSize)
	}
	t := s.TCP
	put("proc/sys/net/ipv4/tcp_keepalive_time", t.KeepaliveTime)
	put("proc/sys/net/ipv4/tcp_keepalive_intvl", t.KeepaliveIntvl)
	put("proc/sys/net/ipv4/tcp_keepalive_probes", t.KeepaliveProbes)
	put("proc/sys/net/ipv4/tcp_fin_timeout", t.FinTimeout)
	put("proc/sys/net/ipv4/tcp_tw_reuse", t.TWReuse)
	put("proc/sys/net/ipv4/tcp_retries2", t.Retries2)
	if t.PortRangeLow >= 0 && t.PortRangeHigh >= 0 {
		files["proc/sys/net/ipv4/ip_local_port_range"] = fmt.Appendf(nil, "%d\t%d\n", t.PortRangeLow, t.PortRangeHigh)
	}
	if st := latestStats(s); st != nil {
		if st.Source == "proc" {
			name := "proc/net/stat/nf_conntrack"
			if set.Legacy {
				name = "proc/net/stat/ip_conntrack"
			}
			files[name] = formatProcStats(st.PerCPU)
		} else {
			files["ctdoctor/conntrack-S.txt"] = formatConntrackS(st.PerCPU)
		}
	}
	if len(s.Log.Lines) > 0 {
		var b strings.Builder
		for _, l := range s.Log.Lines {
			text := l.Text
			if anon != nil {
				text = anon.Text(text)
			}
			b.WriteString(text + "\n")
		}
		files["ctdoctor/kmsg.txt"] = []byte(b.String())
	}
	return files
}

// formatProcStats writes the per-CPU counters as the stat file, with a
// column for every counter the source had, so an old kernel's columns
// (searched, delete_list) survive the round trip.
func formatProcStats(perCPU []conntrack.Stats) []byte {
	var present uint32
	for _, c := range perCPU {
		present |= c.Present
	}
	var cols []string
	for _, h := range procStatColumns {
		if f, ok := conntrack.StatFieldByHeader(h); ok && present&(1<<f) != 0 {
			cols = append(cols, h)
		}
	}
	var b strings.Builder
	b.WriteString(strings.Join(cols, " ") + "\n")
	for _, c := range perCPU {
		for i, h := range cols {
			f, _ := conntrack.StatFieldByHeader(h)
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%08x", uint32(c.Values[f]))
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

var conntrackSFields = []string{"found", "invalid", "insert", "insert_failed", "drop", "early_drop",
	"error", "search_restart", "clash_resolve", "chaintoolong"}

func formatConntrackS(perCPU []conntrack.Stats) []byte {
	var b strings.Builder
	for i, c := range perCPU {
		fmt.Fprintf(&b, "cpu=%-4d\t", i)
		for _, name := range conntrackSFields {
			f, _ := conntrack.StatFieldByHeader(name)
			fmt.Fprintf(&b, "%s=%d ", name, c.Values[f])
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// ReadSnapshotMeta reads ctdoctor/meta.json under an extracted snapshot.
func ReadSnapshotMeta(root string) (*SnapshotMeta, error) {
	data, err := os.ReadFile(filepath.Join(root, "ctdoctor", "meta.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("not a ctdoctor snapshot: no ctdoctor/meta.json")
		}
		return nil, err
	}
	var m SnapshotMeta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("ctdoctor/meta.json: %w", err)
	}
	if m.Format != SnapshotFormat {
		return nil, fmt.Errorf("ctdoctor/meta.json: unknown snapshot format %q (this ctdoctor reads %s)", m.Format, SnapshotFormat)
	}
	return &m, nil
}

// ApplySnapshotMeta completes a Snapshot read from an extracted snapshot's
// fake root with what only meta.json records.
func ApplySnapshotMeta(s *Snapshot, m *SnapshotMeta) {
	s.Source = "snapshot"
	s.TakenAt = m.TakenAt
	s.NetNS = m.NetNS
	s.Log = m.Log
	s.Kube = m.Kube
	s.AllNetNS = m.AllNetNS
	if s.Stats != nil && !m.StatsAt.IsZero() {
		s.Stats.At = m.StatsAt
	}
	s.Stats2 = nil
}
