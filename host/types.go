package host

import (
	"errors"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// ErrNoConntrack is returned when the host has no connection tracking at
// all (module not loaded, no sysctls).
var ErrNoConntrack = errors.New("connection tracking is not active on this host (no nf_conntrack sysctls; module not loaded or no rule uses it)")

// Snapshot is everything read from one host (and one network namespace).
// It is what analysis consumes, and what a snapshot archive stores.
type Snapshot struct {
	// Source is where the entries came from: "netlink", "proc", "file" or "snapshot".
	Source   string    `json:"source"`
	Hostname string    `json:"hostname"`
	Kernel   string    `json:"kernel"` // release, e.g. "6.18.44-fc-v669"
	TakenAt  time.Time `json:"taken_at"`
	NetNS    NetNS     `json:"netns"`
	CPUs     int       `json:"cpus"`
	MemBytes uint64    `json:"mem_bytes"` // MemTotal

	Settings Settings     `json:"settings"`
	TCP      TCPSysctls   `json:"tcp"`
	Stats    *StatsRead   `json:"stats,omitempty"`  // nil: no statistics available
	Stats2   *StatsRead   `json:"stats2,omitempty"` // a second sample, for rates
	Log      LogSummary   `json:"log"`
	Kube     KubeProxy    `json:"kube_proxy"`
	AllNetNS []NetNSUsage `json:"all_netns,omitempty"` // with --all-netns

	// Warnings are the parts that could not be read, each saying why and,
	// where it applies, what privilege would help.
	Warnings []string `json:"warnings,omitempty"`
}

// NetNS identifies a network namespace.
type NetNS struct {
	Name  string `json:"name"`            // "init", a name from /run/netns, or "pid:N"
	Path  string `json:"path,omitempty"`  // e.g. /run/netns/NAME or /proc/N/ns/net
	Inode uint64 `json:"inode,omitempty"` // as in `readlink /proc/PID/ns/net` and the kernel log
	Init  bool   `json:"init"`
	// Created is when the namespace was created, as well as the host can
	// tell (zero if unknown, and for the initial namespace): the earlier
	// of the time its nsfs inode was first handed out (for a namespace
	// made by `ip netns add`, whose /run/netns bind mount holds that inode
	// from the start, the creation time) and the start of the oldest
	// process in it. Namespace inode numbers are reused, so kernel log
	// events older than this belong to an earlier namespace with the same
	// number.
	Created time.Time `json:"created,omitzero"`
}

// Settings are the conntrack sysctls and sizing parameters. Unknown
// numbers are -1.
type Settings struct {
	Count   int64 `json:"count"`
	Max     int64 `json:"max"`
	Buckets int64 `json:"buckets"`
	// HashSize is /sys/module/nf_conntrack/parameters/hashsize.
	HashSize int64 `json:"hashsize"`
	// Timeouts are keyed by sysctl name without the "nf_conntrack_" prefix,
	// e.g. "tcp_timeout_established", "udp_timeout", "icmp_timeout".
	Timeouts map[string]int64 `json:"timeouts"`
	// Switches holds tcp_loose, tcp_be_liberal, acct, timestamp, checksum,
	// log_invalid, tcp_max_retrans, expect_max … keyed the same way.
	Switches map[string]int64 `json:"switches"`
	// Legacy is set on old kernels that expose the ip_conntrack paths
	// (/proc/sys/net/ipv4/ip_conntrack_max, /proc/net/ip_conntrack).
	Legacy bool `json:"legacy"`
	// ObjectSize is the nf_conntrack slab object size in bytes (0 unknown);
	// SlabSize the per-object footprint including padding.
	ObjectSize int64 `json:"object_size"`
	SlabSize   int64 `json:"slab_size"`
	// ProcEntries says whether /proc/net/nf_conntrack (or ip_conntrack) exists.
	ProcEntries bool `json:"proc_entries"`
	// ProcStats says whether /proc/net/stat/nf_conntrack exists.
	ProcStats bool `json:"proc_stats"`
}

// TCPSysctls are the net.ipv4 settings that interact with conntrack
// timeouts. Unknown numbers are -1.
type TCPSysctls struct {
	KeepaliveTime   int64 `json:"tcp_keepalive_time"`
	KeepaliveIntvl  int64 `json:"tcp_keepalive_intvl"`
	KeepaliveProbes int64 `json:"tcp_keepalive_probes"`
	FinTimeout      int64 `json:"tcp_fin_timeout"`
	TWReuse         int64 `json:"tcp_tw_reuse"`
	Retries2        int64 `json:"tcp_retries2"`
	PortRangeLow    int64 `json:"ip_local_port_range_low"`
	PortRangeHigh   int64 `json:"ip_local_port_range_high"`
}

// StatsRead is one sample of the per-CPU statistics.
type StatsRead struct {
	At     time.Time         `json:"at"`
	Source string            `json:"source"` // "proc" or "netlink"
	PerCPU []conntrack.Stats `json:"per_cpu"`
	Total  conntrack.Stats   `json:"total"`
}

// LogSummary sums up the kernel log's "table full, dropping packet" events.
type LogSummary struct {
	Source          string     `json:"source"` // "/dev/kmsg", "dmesg", a file, or "" if unread
	TableFullEvents int        `json:"table_full_events"`
	Suppressed      int        `json:"suppressed"` // "printk: N messages suppressed" / "callbacks suppressed"
	First           time.Time  `json:"first,omitzero"`
	Last            time.Time  `json:"last,omitzero"`
	Lines           []LogEvent `json:"lines,omitempty"` // the last few events
	// ByNetNS counts the events that name a namespace ("table full in
	// netns N"), one entry per namespace, and one more per inode number
	// for the events of an earlier namespace that had it (Gone).
	ByNetNS []NetNSCount `json:"netns,omitempty"`
	// NoNetNS counts the events that name no namespace, between
	// NoNetNSFirst and NoNetNSLast: on kernels that name the namespace in
	// the message, the initial namespace's; on older kernels, any
	// namespace's.
	NoNetNS      int       `json:"no_netns,omitempty"`
	NoNetNSFirst time.Time `json:"no_netns_first,omitzero"`
	NoNetNSLast  time.Time `json:"no_netns_last,omitzero"`
}

// LogEvent is one "table full" line.
type LogEvent struct {
	Time   time.Time `json:"time,omitzero"`
	Module string    `json:"module"`          // "nf_conntrack" or "ip_conntrack"
	NetNS  uint64    `json:"netns,omitempty"` // inode from "in netns N", 0 if the line has none
	Text   string    `json:"text"`
}

// NetNSCount counts log events of one namespace.
type NetNSCount struct {
	Inode uint64 `json:"inode"`
	// Name is the namespace's name ("demo", "pid:N (comm)"), empty when
	// unknown and for a gone namespace.
	Name  string    `json:"name,omitempty"`
	Count int       `json:"count"`
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
	// Gone is set for the events of a namespace that no longer exists:
	// they happened before the namespace that has the inode number now
	// (ReusedBy) was created.
	Gone     bool   `json:"gone,omitempty"`
	ReusedBy string `json:"reused_by,omitempty"`
}

// NetNSUsage is one namespace's table count against the global max.
type NetNSUsage struct {
	NetNS
	Count int64  `json:"count"`
	Max   int64  `json:"max"`
	Error string `json:"error,omitempty"`
}

// KubeProxy records signs that kube-proxy manages the conntrack sysctls.
type KubeProxy struct {
	Present  bool     `json:"present"`
	Evidence []string `json:"evidence,omitempty"`
}
