package analyze

import (
	"os"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
)

// Schema is the JSON report's version string.
const Schema = "ctdoctor.report/v1"

// Severity levels of findings, and of the report's verdict.
const (
	Info     = "info"
	Warning  = "warning"
	Critical = "critical"
	Healthy  = "healthy"
)

// Report is the diagnosis of one host (ctdoctor -o json).
type Report struct {
	Schema      string            `json:"schema"`
	GeneratedAt time.Time         `json:"generated_at"`
	Verdict     Verdict           `json:"verdict"`
	Host        HostInfo          `json:"host"`
	Table       TableInfo         `json:"table"`
	Timeouts    map[string]int64  `json:"timeouts"`
	Stats       StatsInfo         `json:"stats"`
	Breakdown   Breakdown         `json:"breakdown"`
	Log         LogInfo           `json:"log"`
	Namespaces  []host.NetNSUsage `json:"namespaces,omitempty"`
	Findings    []Finding         `json:"findings"`
	Warnings    []string          `json:"warnings,omitempty"`
	// Listing says whether the entries were read and why not (set by the
	// doctor package; nil when the report does not say).
	Listing *Listing `json:"listing,omitempty"`
}

// Verdict is the one-line answer: healthy, warning or critical, and why.
type Verdict struct {
	Level  string `json:"level"`
	Reason string `json:"reason"`
}

// HostInfo describes the host the report is about.
type HostInfo struct {
	Hostname   string `json:"hostname"`
	Kernel     string `json:"kernel"`
	NetNS      string `json:"netns"`
	NetNSInode uint64 `json:"netns_inode,omitempty"`
	CPUs       int    `json:"cpus"`
	MemBytes   uint64 `json:"mem_bytes"`
	Source     string `json:"source"`
	KubeProxy  bool   `json:"kube_proxy"`
}

// TableInfo is the table's size, use and memory.
type TableInfo struct {
	Count            int64   `json:"count"`
	Listed           int64   `json:"listed"` // entries actually read
	Max              int64   `json:"max"`
	Buckets          int64   `json:"buckets"`
	HashSize         int64   `json:"hashsize"`
	Usage            float64 `json:"usage"`
	EntriesPerBucket float64 `json:"entries_per_bucket"`
	ObjectSize       int64   `json:"object_size"`
	SlabSize         int64   `json:"slab_size"`
	MemoryBytes      int64   `json:"memory_bytes"`
	MemoryAtMaxBytes int64   `json:"memory_at_max_bytes"`
	DefaultBuckets   int64   `json:"default_buckets"`
	DefaultMax       int64   `json:"default_max"`
	Legacy           bool    `json:"legacy"`
}

// StatsInfo are the summed per-CPU counters, with rates when two samples were taken.
type StatsInfo struct {
	Available     bool               `json:"available"`
	Source        string             `json:"source,omitempty"`
	Drop          uint64             `json:"drop"`
	EarlyDrop     uint64             `json:"early_drop"`
	InsertFailed  uint64             `json:"insert_failed"`
	ClashResolve  uint64             `json:"clash_resolve"`
	ChainTooLong  uint64             `json:"chaintoolong"`
	Invalid       uint64             `json:"invalid"`
	SearchRestart uint64             `json:"search_restart"`
	Found         uint64             `json:"found"`
	Insert        uint64             `json:"insert"`
	Error         uint64             `json:"error"`
	Interval      float64            `json:"interval_seconds,omitempty"`
	PerSecond     map[string]float64 `json:"per_second,omitempty"`
}

// LogInfo sums up the kernel log's table-full events.
type LogInfo struct {
	Source          string            `json:"source,omitempty"`
	TableFullEvents int               `json:"table_full_events"`
	Suppressed      int               `json:"suppressed"`
	First           string            `json:"first,omitempty"`
	Last            string            `json:"last,omitempty"`
	NetNS           []host.NetNSCount `json:"netns"`
	Lines           []string          `json:"lines,omitempty"`
	// OtherNetNSEvents are the table-full events that name a network
	// namespace other than the one diagnosed (or an earlier namespace
	// that had its number); all events naming one when the diagnosed
	// namespace's number is unknown.
	OtherNetNSEvents int `json:"other_netns_events"`
}

// Finding is one diagnosed problem or notable fact.
type Finding struct {
	ID          string         `json:"id"`
	Severity    string         `json:"severity"`
	Summary     string         `json:"summary"`
	Evidence    map[string]any `json:"evidence"`
	Explanation string         `json:"explanation"`
	// Fixes are the fix as printed. Analyze writes prose only (comment
	// lines, "# …"); every command comes from Changes, which the planner
	// renders for the host's kernel, firewall and namespace, and package
	// doctor puts its lines in at ChangesAt.
	Fixes []string `json:"fixes"`
	// Changes are the fixes as data (additive to v1): what the planner
	// turns into steps.
	Changes []Change `json:"changes,omitempty"`
	// ChangesAt is the index in Fixes where the planner's lines for
	// Changes belong (0: before the prose; len(Fixes): after it). It is
	// not in the JSON form: there, Fixes already hold those lines.
	ChangesAt int `json:"-"`
}

// reportedStats are the counters the report carries, in its field order.
var reportedStats = []conntrack.StatField{conntrack.StatDrop, conntrack.StatEarlyDrop,
	conntrack.StatInsertFailed, conntrack.StatClashResolve, conntrack.StatChainTooLong,
	conntrack.StatInvalid, conntrack.StatSearchRestart, conntrack.StatFound,
	conntrack.StatInsert, conntrack.StatError}

func statsInfo(s *host.Snapshot) StatsInfo {
	if s.Stats == nil {
		return StatsInfo{}
	}
	t := s.Stats.Total
	if s.Stats2 != nil {
		t = s.Stats2.Total
	}
	si := StatsInfo{Available: true, Source: s.Stats.Source,
		Drop: t.Values[conntrack.StatDrop], EarlyDrop: t.Values[conntrack.StatEarlyDrop],
		InsertFailed: t.Values[conntrack.StatInsertFailed], ClashResolve: t.Values[conntrack.StatClashResolve],
		ChainTooLong: t.Values[conntrack.StatChainTooLong], Invalid: t.Values[conntrack.StatInvalid],
		SearchRestart: t.Values[conntrack.StatSearchRestart], Found: t.Values[conntrack.StatFound],
		Insert: t.Values[conntrack.StatInsert], Error: t.Values[conntrack.StatError]}
	if s.Stats2 != nil {
		dt := s.Stats2.At.Sub(s.Stats.At).Seconds()
		if dt > 0 {
			si.Interval = dt
			si.PerSecond = map[string]float64{}
			for _, f := range reportedStats {
				a, b := s.Stats.Total.Values[f], s.Stats2.Total.Values[f]
				if b >= a {
					si.PerSecond[f.String()] = float64(b-a) / dt
				}
			}
		}
	}
	return si
}

// IdleWindow returns the remaining-timeout range (above, below) in which
// an ESTABLISHED entry has been idle for longer than TCP keepalive takes
// to give up on a peer: below is tcp_timeout_established − keepalive time −
// intvl × probes. Entries at or under above (the larger of
// tcp_timeout_unacknowledged and tcp_timeout_max_retrans, 300 s by
// default) are left out: with data in flight the kernel gives an
// ESTABLISHED entry that shorter timeout, so its remaining time says
// nothing about idleness. below is 0 when the settings are unknown or
// keepalive is not shorter.
func IdleWindow(s *host.Snapshot) (above, below uint32) {
	est, ok := s.Settings.Timeouts["tcp_timeout_established"]
	ka := keepaliveTotal(s.TCP)
	if !ok || est <= 0 || ka <= 0 || ka >= est {
		return 0, 0
	}
	short := int64(300)
	for _, name := range []string{"tcp_timeout_unacknowledged", "tcp_timeout_max_retrans"} {
		if v, ok := s.Settings.Timeouts[name]; ok && v >= 0 {
			short = max(short, v)
		}
	}
	return uint32(min(short, est)), uint32(est - ka)
}

func keepaliveTotal(t host.TCPSysctls) int64 {
	if t.KeepaliveTime < 0 || t.KeepaliveIntvl < 0 || t.KeepaliveProbes < 0 {
		return -1
	}
	return t.KeepaliveTime + t.KeepaliveIntvl*t.KeepaliveProbes
}

// Analyze builds the report from a snapshot and the breakdown of its entries
// (b is nil when the entries could not be read).
func Analyze(s *host.Snapshot, b *Breakdown, now time.Time) *Report {
	r := &Report{Schema: Schema, GeneratedAt: now.UTC(), Timeouts: s.Settings.Timeouts,
		Warnings: s.Warnings, Namespaces: s.AllNetNS}
	if r.Timeouts == nil {
		r.Timeouts = map[string]int64{}
	}
	nsName := s.NetNS.Name
	if nsName == "" {
		nsName = "init"
	}
	r.Host = HostInfo{Hostname: s.Hostname, Kernel: s.Kernel, NetNS: nsName, NetNSInode: s.NetNS.Inode,
		CPUs: s.CPUs, MemBytes: s.MemBytes, Source: s.Source, KubeProxy: s.Kube.Present}
	if b != nil {
		r.Breakdown = *b
	} else {
		r.Breakdown = NewAccumulator().Breakdown()
	}
	set := s.Settings
	count := set.Count
	if count < 0 && b != nil {
		count = b.Total
	}
	kv := ParseKernelVersion(s.Kernel)
	per := slabOrDefault(set.SlabSize, set.ObjectSize)
	t := TableInfo{Count: count, Max: set.Max, Buckets: set.Buckets, HashSize: set.HashSize,
		ObjectSize: set.ObjectSize, SlabSize: set.SlabSize, Legacy: set.Legacy}
	if b != nil {
		t.Listed = b.Total
	}
	if set.Max > 0 && count >= 0 {
		t.Usage = float64(count) / float64(set.Max)
	}
	if set.Buckets > 0 && count >= 0 {
		t.EntriesPerBucket = float64(count) / float64(set.Buckets)
	}
	t.MemoryBytes = TableMemory(count, set.Buckets, per)
	t.MemoryAtMaxBytes = TableMemory(set.Max, set.Buckets, per)
	if s.MemBytes > 0 {
		t.DefaultBuckets, t.DefaultMax = DefaultSizing(kv, s.MemBytes, set.Legacy)
	}
	r.Table = t
	r.Stats = statsInfo(s)
	r.Log = LogInfo{Source: s.Log.Source, TableFullEvents: s.Log.TableFullEvents,
		Suppressed: s.Log.Suppressed, NetNS: s.Log.ByNetNS}
	if r.Log.NetNS == nil {
		r.Log.NetNS = []host.NetNSCount{}
	}
	if !s.Log.First.IsZero() {
		r.Log.First = s.Log.First.UTC().Format(time.RFC3339)
	}
	if !s.Log.Last.IsZero() {
		r.Log.Last = s.Log.Last.UTC().Format(time.RFC3339)
	}
	for _, l := range s.Log.Lines {
		r.Log.Lines = append(r.Log.Lines, l.Text)
	}
	ctx := &ruleContext{snap: s, r: r, kv: kv, perEntry: per, now: now}
	r.Log.OtherNetNSEvents = ctx.otherNetNSLogEvents()
	for _, rule := range rules {
		if f := rule(ctx); f != nil {
			if f.Evidence == nil {
				f.Evidence = map[string]any{}
			}
			if f.Fixes == nil {
				f.Fixes = []string{} // all of it is Changes: an empty array in the JSON, not null
			}
			f.ChangesAt = min(max(f.ChangesAt, 0), len(f.Fixes))
			r.Findings = append(r.Findings, *f)
		}
	}
	sortFindings(r.Findings)
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	r.Verdict = verdict(r)
	return r
}

// NoConntrack is the report for a host (or namespace) where connection
// tracking is not active at all: nothing can fill a table that does not exist.
func NoConntrack(root, netns string, now time.Time) *Report {
	if netns == "" {
		netns = "init"
	}
	hostname, _ := os.Hostname()
	if root != "/" && root != "" {
		hostname = root
	}
	return &Report{Schema: Schema, GeneratedAt: now.UTC(), Timeouts: map[string]int64{},
		Verdict:   Verdict{Level: Healthy, Reason: "connection tracking is not active here (no nf_conntrack sysctls): no table can fill up"},
		Host:      HostInfo{Hostname: hostname, NetNS: netns, Source: "none"},
		Table:     TableInfo{Count: -1, Max: -1, Buckets: -1, HashSize: -1},
		Breakdown: NewAccumulator().Breakdown(), Findings: []Finding{},
		Log:      LogInfo{NetNS: []host.NetNSCount{}},
		Warnings: []string{"nf_conntrack is not loaded or nothing uses it (no NAT, no stateful firewall rule, no Docker): there is nothing to diagnose"}}
}
