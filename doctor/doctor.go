package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

// ErrInput is wrapped by the error Diagnose returns for an inconsistent Input.
var ErrInput = errors.New("invalid input")

// Input chooses what to diagnose. The zero Input is the live host, in the
// caller's own network namespace. At most one of Root, Snapshot,
// ListingFile, Listing and Host may be set.
type Input struct {
	// NetNS is the live host's network namespace to diagnose: a name from
	// /run/netns, a path, or a PID; "" is the caller's own. Live host only.
	NetNS string
	// AllNetNS also measures every namespace's count against the global
	// max (live host only).
	AllNetNS bool

	// Root reads the host through this directory (a fixture, a mounted
	// image, an extracted snapshot without its metadata) instead of /.
	Root string
	// Snapshot is an archive written by `ctdoctor snapshot` (.tar.gz) or
	// its extracted directory.
	Snapshot string

	// ListingFile is a file of entries in any format conntrack.Reader
	// knows; nothing else about the host is known then.
	ListingFile string
	// Listing is the same read from a stream (stdin), named ListingName
	// ("stdin" if empty) in the report and in errors.
	Listing     io.Reader
	ListingName string

	// Host is a host the caller has read already (a simulated table, a
	// pcap replay), with Entries its table's entries (nil: none listed).
	// It is diagnosed as is: no second counter sample is taken.
	Host    *host.Snapshot
	Entries conntrack.Source

	// LiveEntries, for the live host, are the table's entries listed by
	// the caller, read instead of a listing of the diagnosis's own: a
	// watcher that lists the namespace over netlink for itself feeds the
	// diagnosis from the same pass. The report says they came from
	// netlink.
	LiveEntries conntrack.Source
}

// kind names the source the Input selects.
func (in Input) kind() (string, error) {
	var set []string
	if in.Root != "" {
		set = append(set, "Root")
	}
	if in.Snapshot != "" {
		set = append(set, "Snapshot")
	}
	if in.ListingFile != "" {
		set = append(set, "ListingFile")
	}
	if in.Listing != nil {
		set = append(set, "Listing")
	}
	if in.Host != nil {
		set = append(set, "Host")
	}
	switch {
	case len(set) > 1:
		return "", fmt.Errorf("%w: %v are alternatives: give one", ErrInput, set)
	case in.Entries != nil && in.Host == nil:
		return "", fmt.Errorf("%w: Entries needs Host", ErrInput)
	case in.LiveEntries != nil && len(set) > 0:
		return "", fmt.Errorf("%w: LiveEntries apply to the live host only, not to %s", ErrInput, set[0])
	case len(set) == 1 && (in.NetNS != "" || in.AllNetNS):
		return "", fmt.Errorf("%w: NetNS and AllNetNS apply to the live host only, not to %s", ErrInput, set[0])
	case len(set) == 0:
		return "live", nil
	}
	return set[0], nil
}

// Options tune the diagnosis. The zero Options read everything, with no
// second counter sample.
type Options struct {
	// Interval is the time between the two counter samples used for rates
	// on the live host; the wait overlaps the listing. 0: one sample, no rates.
	Interval time.Duration
	// NoLog skips the kernel log.
	NoLog bool
	// NoEntries skips listing the entries: sizing, counters and log only.
	NoEntries bool
	// Top is the number of rows in the report's top tables (0: analyze's default).
	Top int
	// Progress, when set, is called as the diagnosis advances (see [Progress]).
	Progress func(Progress)
	// NoPlan skips planning: no ruleset is read, no temporary directory is
	// made, and the findings keep analyze's fixes — prose only, without a
	// command — with their Changes as data. For callers that do not show
	// the fixes (the exporter), or not yet (a live view): [PlanFixes] adds
	// the commands to such a Result later, and [Plan] plans from it.
	NoPlan bool
}

// Stages reported to Options.Progress.
const (
	StageEntries      = "reading entries"
	StageSecondSample = "second counter sample"
)

// Progress is one report of the diagnosis's advance: a stage starting
// (Entries 0), every [ProgressEvery] entries while listing, and the
// stage's end (Done).
type Progress struct {
	Stage   string
	Entries int64
	Done    bool
}

// ProgressEvery is how many entries pass between two Progress calls while
// the table is listed.
const ProgressEvery = 1024

// Result is a diagnosis with what it was made from.
type Result struct {
	// Report is the diagnosis.
	Report *analyze.Report
	// Snapshot is the host as read (nil for a host without connection
	// tracking).
	Snapshot *host.Snapshot
	// Breakdown is the one-pass count of the entries (nil when none were
	// listed).
	Breakdown *analyze.Breakdown

	fixesPlanned bool // PlanFixes has put the plan's lines into the fixes
}

// Diagnose reads the Input and returns its report. See the package
// documentation for which failures are errors and which become warnings.
func Diagnose(ctx context.Context, in Input, opt Options) (*analyze.Report, error) {
	res, err := Run(ctx, in, opt)
	if err != nil {
		return nil, err
	}
	return res.Report, nil
}

// Run is Diagnose that also returns the host snapshot and breakdown the
// report was built from.
func Run(ctx context.Context, in Input, opt Options) (*Result, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	kind, err := in.kind()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("diagnose: %w", err)
	}
	var (
		snap    *host.Snapshot
		src     conntrack.Source
		listing string // the name of a bare listing, "" otherwise
		listErr error  // why the entries cannot be listed
		text    *conntrack.ReadStats
	)
	hopt := host.Options{Root: "/", NetNS: in.NetNS, Log: !opt.NoLog, AllNetNS: in.AllNetNS}
	switch kind {
	case "ListingFile", "Listing":
		r := in.Listing
		listing = in.ListingName
		if listing == "" {
			listing = "stdin"
		}
		if kind == "ListingFile" {
			fh, err := os.Open(in.ListingFile)
			if err != nil {
				return nil, err
			}
			defer fh.Close()
			r, listing = fh, in.ListingFile
		}
		snap = ListingSnapshot(listing)
		// The reader skips lines that are no entry and goes on; say so.
		st := &conntrack.ReadStats{}
		text = st
		read := conntrack.ReadAllStats(r, st)
		src = func(fn func(*conntrack.Flow) error) error {
			err := read(fn)
			if err == nil && st.Skipped > 0 {
				snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %d of %d lines skipped, not conntrack entries; first %v",
					st.Skipped, st.Lines, st.First))
			}
			return err
		}
	case "Snapshot":
		root, done, err := host.OpenSnapshot(in.Snapshot)
		if err != nil {
			return nil, err
		}
		defer done()
		snap, src, listErr, err = loadSnapshot(ctx, root, !opt.NoLog)
		if err != nil {
			return nil, err
		}
	case "Host":
		snap, src = in.Host, in.Entries
	default: // live or Root
		if in.Root != "" {
			hopt.Root = in.Root
		}
		snap, err = host.Read(ctx, hopt)
		if errors.Is(err, host.ErrNoConntrack) {
			return &Result{Report: analyze.NoConntrack(hopt.Root, in.NetNS, time.Now())}, nil
		}
		if err != nil {
			return nil, err
		}
		if !opt.NoEntries && in.LiveEntries != nil && kind == "live" {
			src, snap.Source = in.LiveEntries, "netlink"
		} else if !opt.NoEntries {
			src, listErr = host.Entries(hopt, snap)
			if listErr != nil {
				snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %v", listErr))
				src = nil
			}
		}
	}
	if src == nil && listing == "" {
		snap.Source = "none" // no entries were listed
	}
	first := time.Now()
	var bd *analyze.Breakdown
	var readErr error
	if src != nil && !opt.NoEntries {
		b, err := accumulate(snap, src, opt)
		bd = &b
		if err != nil {
			if b.Total == 0 && listing != "" {
				return nil, fmt.Errorf("%s: %w", listing, err)
			}
			readErr = err
			snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %v — the breakdown covers the %d entries read before it", err, b.Total))
		}
	}
	// The second counter sample: at least Interval after the first, overlapping the listing.
	if kind == "live" && snap.Stats != nil && opt.Interval > 0 {
		report(opt, Progress{Stage: StageSecondSample})
		if wait := opt.Interval - time.Since(first); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("diagnose: second counter sample: %w", ctx.Err())
			}
		}
		if s2, err := host.ReadStats(hopt); err == nil {
			snap.Stats2 = s2
		} else {
			snap.Warnings = append(snap.Warnings, fmt.Sprintf("second counter sample: %v", err))
		}
		report(opt, Progress{Stage: StageSecondSample, Done: true})
	}
	rep := analyze.Analyze(snap, bd, reportTime(snap, kind))
	rep.Listing = listingOf(kind, opt, bd, listErr, readErr, text)
	if listing != "" {
		listingVerdict(rep, listing)
	}
	res := &Result{Report: rep, Snapshot: snap, Breakdown: bd}
	if !opt.NoPlan {
		if err := PlanFixes(ctx, in, res); err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("fixes: %v", err))
		}
	}
	return res, nil
}

// PlanFixes plans a diagnosis made with Options.NoPlan (in is the Input it
// was made from) and puts the plan's step titles and commands into its
// findings' fixes, as Run does without NoPlan: the printed commands are
// the planner's, for this kernel, these files, this firewall and this
// namespace. It does so once per Result (later calls change nothing) and
// returns the planner's error, if any, with the fixes left as they were.
func PlanFixes(ctx context.Context, in Input, res *Result) error {
	if res == nil || res.Report == nil {
		return fmt.Errorf("%w: no diagnosis to plan fixes for", ErrInput)
	}
	if res.fixesPlanned || res.Snapshot == nil {
		return nil // done, or no table (no conntrack): nothing to plan
	}
	p, err := Plan(ctx, in, res, PlanOptions{})
	if err != nil {
		return err
	}
	applyPlanFixes(res.Report, p)
	res.fixesPlanned = true
	return nil
}

// listingOf says whether the entries were read and, if not, why.
func listingOf(kind string, opt Options, bd *analyze.Breakdown, listErr, readErr error, text *conntrack.ReadStats) *analyze.Listing {
	l := &analyze.Listing{Read: bd != nil, Text: text}
	switch {
	case readErr != nil:
		l.Reason = analyze.ListingFailed
		l.Detail = fmt.Sprintf("the listing broke off after %d entries: %v", bd.Total, readErr)
	case text != nil && text.Entries == 0 && !(text.Summaries > 0 && text.Shown == 0):
		l.Reason = analyze.ListingEmpty
		l.Detail = fmt.Sprintf("the listing holds no entries (%d %s): an empty table lists none, and neither does a capture that failed",
			text.Lines, plural(text.Lines, "line", "lines"))
	case bd != nil:
	case opt.NoEntries:
		l.Reason, l.Detail = analyze.ListingSkipped, "the entries were not listed (skipped on request: sizing, counters and kernel log only)"
	case errors.Is(listErr, fs.ErrPermission) || errors.Is(listErr, ctnetlink.ErrPermission):
		l.Reason = analyze.ListingPermission
		l.Detail = "the entries were not listed: that needs root (CAP_NET_ADMIN for the netlink dump, root for /proc/net/nf_conntrack)"
	case kind == "Snapshot":
		l.Reason, l.Detail = analyze.ListingUnavailable, "the entries were not listed: the snapshot holds none (it was taken without them)"
	case kind == "Root":
		l.Reason = analyze.ListingUnavailable
		l.Detail = "the entries were not listed: this root holds no entry listing (no proc/net/nf_conntrack or proc/net/ip_conntrack), and only the live host can be listed over netlink"
	case listErr != nil:
		l.Reason = analyze.ListingUnavailable
		l.Detail = fmt.Sprintf("the entries could not be listed: %v", listErr)
	default: // a host handed over without entries
		l.Reason, l.Detail = analyze.ListingUnavailable, "the entries were not listed: none were given"
	}
	return l
}

// listingVerdict makes the verdict of a bare listing say what was read: an
// empty listing has nothing to diagnose (an empty table and a failed
// capture look the same, unless conntrack's own summary said it showed 0
// entries), and skipped lines are named.
func listingVerdict(rep *analyze.Report, name string) {
	l := rep.Listing
	if l == nil || l.Text == nil {
		return
	}
	st := l.Text
	switch {
	case l.Reason == analyze.ListingEmpty:
		rep.Verdict = analyze.Verdict{Level: analyze.Unknown,
			Reason: fmt.Sprintf("nothing to diagnose: %s holds no conntrack entries (%d %s) — an empty table lists none, and neither does a capture that failed",
				name, st.Lines, plural(st.Lines, "line", "lines"))}
	case st.Entries == 0:
		rep.Verdict = analyze.Verdict{Level: analyze.Healthy,
			Reason: fmt.Sprintf("the listed table is empty (conntrack: %d flow entries have been shown)", st.Shown)}
	case st.Skipped > 0:
		rep.Verdict.Reason += fmt.Sprintf(" — %d of %d %s skipped, not conntrack entries (see the warnings)",
			st.Skipped, st.Lines, plural(st.Lines, "line was", "lines were"))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// accumulate streams the entries once through an Accumulator.
func accumulate(snap *host.Snapshot, src conntrack.Source, opt Options) (analyze.Breakdown, error) {
	acc := analyze.NewAccumulator()
	if opt.Top > 0 {
		acc.TopN = opt.Top
	}
	acc.IdleAbove, acc.IdleAfter = analyze.IdleWindow(snap)
	var n int64
	report(opt, Progress{Stage: StageEntries})
	err := src(func(f *conntrack.Flow) error {
		acc.Add(f)
		n++
		if opt.Progress != nil && n%ProgressEvery == 0 {
			opt.Progress(Progress{Stage: StageEntries, Entries: n})
		}
		return nil
	})
	report(opt, Progress{Stage: StageEntries, Entries: n, Done: true})
	return acc.Breakdown(), err
}

func report(opt Options, p Progress) {
	if opt.Progress != nil {
		opt.Progress(p)
	}
}

// reportTime is the time the report speaks of: when a snapshot or a
// caller-provided host was read, else now.
func reportTime(s *host.Snapshot, kind string) time.Time {
	if (s.Source == "snapshot" || kind == "Host") && !s.TakenAt.IsZero() {
		return s.TakenAt
	}
	return time.Now()
}

// ListingSnapshot is the Snapshot of a bare listing named name: nothing
// but the entries is known.
func ListingSnapshot(name string) *host.Snapshot {
	return &host.Snapshot{Source: "file", TakenAt: time.Now(), NetNS: host.NetNS{Name: name},
		Settings: host.Settings{Count: -1, Max: -1, Buckets: -1, HashSize: -1},
		TCP:      host.TCPSysctls{KeepaliveTime: -1, KeepaliveIntvl: -1, KeepaliveProbes: -1}}
}

// LoadSnapshot reads an extracted snapshot (see host.OpenSnapshot) like a
// host: its settings, counters and, with log, the kernel-log summary it
// recorded, and its entries as a Source (nil, with a warning, when it holds
// none).
func LoadSnapshot(ctx context.Context, root string, log bool) (*host.Snapshot, conntrack.Source, error) {
	snap, src, _, err := loadSnapshot(ctx, root, log)
	return snap, src, err
}

// loadSnapshot is LoadSnapshot that also returns why the entries cannot
// be listed.
func loadSnapshot(ctx context.Context, root string, log bool) (*host.Snapshot, conntrack.Source, error, error) {
	meta, err := host.ReadSnapshotMeta(root)
	if err != nil {
		return nil, nil, nil, err
	}
	opt := host.Options{Root: root}
	snap, err := host.Read(ctx, opt)
	if err != nil {
		return nil, nil, nil, err
	}
	host.ApplySnapshotMeta(snap, meta)
	if !log {
		snap.Log = host.LogSummary{}
	}
	src, listErr := host.Entries(opt, snap)
	if listErr != nil {
		snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %v", listErr))
		src = nil
	}
	snap.Source = "snapshot"
	return snap, src, listErr, nil
}
