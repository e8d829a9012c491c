// Package watch keeps a live picture of one or more conntrack tables for
// `ctdoctor top`: counts by state, protocol, source, destination and
// service, kept current between full listings by ctnetlink events (new,
// update, destroy), with a fallback to polling full listings when the
// kernel reports lost events (ENOBUFS); the per-CPU counters turned into
// rates; the kernel log's table-full events as they arrive; and the last
// full diagnosis (verdict, findings, fixes).
//
// A [Frame] is what a view draws: a consistent copy, safe to keep.
//
// # How the counts are kept
//
// [Open] watches each namespace on goroutines of its own. It subscribes
// to the kernel's conntrack events first, then lists the whole table
// over netlink into a table of every entry by its conntrack ID (CTA_ID);
// events keep being applied while the listing runs, and win over it, so
// nothing falls between the two. From then on each event (new, update,
// destroy) changes one entry and its counts. A full listing every
// Options.ListEvery (30 s) brings the table up to date in place — what it
// does not list, and no event changed meanwhile, ended without an event
// and goes — and feeds a diagnosis (doctor.Run, with the planner's fixes)
// from the same pass; so does one made early when the event-kept total
// strays from nf_conntrack_count for a few refreshes. Every Options.Interval (1 s) a
// refresh reads nf_conntrack_count, _max, _buckets and the per-CPU
// counters (procfs, or netlink where the kernel has no
// /proc/net/stat/nf_conntrack) and makes a new frame.
//
// When the kernel drops events because the socket's receive buffer is
// full (ENOBUFS), the counts can no longer be trusted: the namespace goes
// to polling mode, listing the whole table at every refresh, for
// Options.PollFor (60 s), then back to events with a listing. The frame
// says which mode it is in and why (Frame.Mode, Frame.ModeReason).
// Options.Polling always polls; so does a namespace where events are
// unavailable or net.netfilter.nf_conntrack_events is 0.
//
// New entries per second come from the new events (in polling mode
// without events: the entries a listing found that the one before did
// not have, fewer than were made). The per-CPU insert counter is no such
// measure: current kernels count only entries made over netlink in it.
//
// # Cost
//
// A table entry costs 16 bytes in a map keyed by its 4-byte ID (about 45
// bytes with the map's own), and each distinct source, destination and
// service is stored once, with its count, whatever the number of entries
// that share it (about 30 bytes more for each): 18 MiB for 250,000
// entries with a distinct source each, 11 MiB when they share a few.
// Between listings the CPU goes to the events, a few microseconds each,
// read in batches; a listing of 250,000 entries, with its diagnosis,
// takes under a second of one core — about 3 % of a core at the default
// ListEvery (docs/benchmarks.md has the measured figures).
//
// # Errors and privileges
//
// Listing the table and following its events need CAP_NET_ADMIN in the
// namespace, entering another namespace CAP_SYS_ADMIN, and following the
// kernel log CAP_SYSLOG when kernel.dmesg_restrict=1. What fails shows in
// the frames, never as a panic: Frame.Err (the counters or the listing),
// Frame.ModeReason (no events: polling), Frame.ReportError,
// Frame.KernelLogError. A namespace deleted while watched keeps its last
// frame with Frame.Gone set; its sockets and goroutines are released at
// once, so the kernel can free it.
package watch

import (
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// Mode is how the counts between full listings are kept.
type Mode string

const (
	// ModeEvents: ctnetlink events keep the counts between periodic full
	// listings.
	ModeEvents Mode = "events"
	// ModePolling: every refresh lists the whole table (events are not
	// available, were refused, or were lost).
	ModePolling Mode = "polling"
)

// Row is one line of a breakdown table.
type Row struct {
	Key     string `json:"key"`     // "ESTABLISHED", "tcp", "10.0.0.1", "10.0.0.2:80/tcp"
	Entries int64  `json:"entries"` // entries now
	Delta   int64  `json:"delta"`   // change since the previous frame
}

// LogEvent is one kernel-log "table full, dropping packet" line (or a run
// of them the kernel rate-limited into one record).
type LogEvent struct {
	Time    time.Time `json:"time"`
	Count   int       `json:"count"` // lines in this record (1, or the "callbacks suppressed" total)
	Message string    `json:"message"`
}

// Frame is one refresh of one namespace.
type Frame struct {
	Time  time.Time `json:"time"`
	NetNS string    `json:"netns"` // the label shown ("host", a name, "pid:123")
	// Gone is set when the namespace was deleted while watched; the other
	// fields keep their last values.
	Gone bool `json:"gone,omitempty"`
	// Err is why the frame could not be read (e.g. a missing privilege),
	// shown instead of the tables; "" when all is well.
	Err string `json:"error,omitempty"`

	Count   int64   `json:"count"`   // nf_conntrack_count
	Max     int64   `json:"max"`     // nf_conntrack_max
	Buckets int64   `json:"buckets"` // nf_conntrack_buckets
	Usage   float64 `json:"usage"`   // Count / Max (0 when Max is unknown)

	Mode       Mode   `json:"mode"`
	ModeReason string `json:"mode_reason,omitempty"` // e.g. "events lost (ENOBUFS) at 06:30:01, polling until 06:31:01"
	// ListedAt is when the breakdown was last rebuilt from a full listing.
	ListedAt time.Time `json:"listed_at"`

	// Rates per second over the last refresh, from the per-CPU counters
	// (insert is "new entries"); negative when not known yet.
	NewPerSec          float64 `json:"new_per_sec"`
	DropPerSec         float64 `json:"drop_per_sec"`
	EarlyDropPerSec    float64 `json:"early_drop_per_sec"`
	InsertFailedPerSec float64 `json:"insert_failed_per_sec"`
	// TimeToFull is the estimated time until Count reaches Max at the
	// recent growth rate: 0 when full now, negative when not growing or
	// not known.
	TimeToFull time.Duration `json:"time_to_full"`

	// Breakdowns, largest first; TopSources, TopDests and TopServices are
	// bounded (the rest summed in a row with Key "other").
	ByState     []Row `json:"by_state"` // TCP states
	ByProto     []Row `json:"by_proto"`
	TopSources  []Row `json:"top_sources"`
	TopDests    []Row `json:"top_dests"`
	TopServices []Row `json:"top_services"`

	// Report is the last full diagnosis (verdict, findings and their
	// fixes); nil until the first one finishes.
	Report *analyze.Report `json:"-"`
	// ReportError is why the last diagnosis failed ("" when it did not);
	// Report keeps the one before.
	ReportError string `json:"report_error,omitempty"`
	// KernelLog holds the most recent table-full events for this
	// namespace, oldest first, since the watch started.
	KernelLog []LogEvent `json:"kernel_log,omitempty"`
	// KernelLogError is why the kernel log is not followed (reading it
	// needs CAP_SYSLOG when kernel.dmesg_restrict=1); "" when it is.
	KernelLogError string `json:"kernel_log_error,omitempty"`
}

// Source is what a view reads: the watched namespaces and their latest
// frames. Implementations are safe for concurrent use.
type Source interface {
	// Namespaces lists the labels of the namespaces watched now, in a
	// stable order (namespaces come and go under --all-netns).
	Namespaces() []string
	// Frame returns the latest frame of a namespace; ok is false for a
	// label that is not watched.
	Frame(label string) (f Frame, ok bool)
	// Close stops the watch and frees its sockets.
	Close() error
}
