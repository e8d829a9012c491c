package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/render"
)

type doctorOptions struct {
	netns    string
	allNetNS bool
	from     string
	snapshot string
	root     string
	output   string
	interval time.Duration
	noLog    bool
	noList   bool
	top      int
	color    string
	verbose  bool
}

func (d *doctorOptions) bind(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&d.netns, "netns", "", "network namespace to diagnose: a `NAME` from /run/netns, a path, or a PID (default: the caller's)")
	f.BoolVar(&d.allNetNS, "all-netns", false, "also list every named and process network namespace with its count against the global max")
	f.StringVar(&d.from, "from", "", "read entries from `FILE` (- for stdin) instead of the host, in 'conntrack -L', 'conntrack -L -o extended', /proc/net/nf_conntrack or 'conntrack -L -o save' format")
	f.StringVar(&d.snapshot, "snapshot", "", "diagnose a snapshot taken with 'ctdoctor snapshot' (`FILE`.tar.gz or an extracted directory)")
	f.StringVar(&d.root, "root", "", "read the host through this root `DIR` (a mounted image or a fake root) instead of /")
	f.StringVarP(&d.output, "output", "o", "text", "output format: text or json")
	f.DurationVar(&d.interval, "interval", time.Second, "time between the two counter samples used for rates (0 = one sample, no rates)")
	f.BoolVar(&d.noLog, "no-log", false, "do not read the kernel log")
	f.BoolVar(&d.noList, "no-entries", false, "skip listing the entries (sizing, counters and log only; fast on huge tables)")
	f.IntVar(&d.top, "top", 10, "rows in the top sources/destinations/services tables")
	f.StringVar(&d.color, "color", "auto", "colour: auto (on a terminal, unless NO_COLOR is set), always or never")
	f.BoolVarP(&d.verbose, "verbose", "v", false, "explain every finding, including informational ones")
}

func (d *doctorOptions) validate() error {
	n := 0
	for _, s := range []string{d.from, d.snapshot, d.root} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("--from, --snapshot and --root are alternatives: give one")
	}
	if d.netns != "" && (d.snapshot != "" || d.root != "" || d.from != "") {
		return errors.New("--netns applies to the live host only")
	}
	if d.output != "text" && d.output != "json" {
		return fmt.Errorf("-o must be text or json, not %q", d.output)
	}
	if d.interval < 0 {
		return errors.New("--interval must not be negative")
	}
	return nil
}

func runDoctor(ctx context.Context, d *doctorOptions, stdout, stderr io.Writer) error {
	if err := d.validate(); err != nil {
		return &exitError{code: 2, err: err}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	color, err := useColor(d.color, stdout)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	rep, err := diagnose(ctx, d, stderr)
	if err != nil {
		return err
	}
	if d.output == "json" {
		return render.JSON(stdout, rep)
	}
	return render.Text(stdout, rep, render.TextOptions{Color: color, Width: terminalWidth(stdout), Verbose: d.verbose})
}

// diagnose reads the chosen source and builds the report.
func diagnose(ctx context.Context, d *doctorOptions, stderr io.Writer) (*analyze.Report, error) {
	var (
		snap    *host.Snapshot
		src     conntrack.Source
		cleanup = func() {}
	)
	defer func() { cleanup() }()
	opt := host.Options{Root: "/", NetNS: d.netns, Log: !d.noLog, AllNetNS: d.allNetNS}
	switch {
	case d.from != "":
		var r io.Reader = os.Stdin
		name := "stdin"
		if d.from != "-" {
			fh, err := os.Open(d.from)
			if err != nil {
				return nil, err
			}
			cleanup = func() { fh.Close() }
			r, name = fh, d.from
		}
		snap = fileSnapshot(name)
		src = conntrack.ReadAll(r)
	case d.snapshot != "":
		root, done, err := host.OpenSnapshot(d.snapshot)
		if err != nil {
			return nil, err
		}
		cleanup = done
		snap, src, err = loadSnapshot(ctx, root, !d.noLog)
		if err != nil {
			return nil, err
		}
	default:
		if d.root != "" {
			opt.Root = d.root
		}
		var err error
		snap, err = host.Read(ctx, opt)
		if errors.Is(err, host.ErrNoConntrack) {
			return analyze.NoConntrack(opt.Root, d.netns, time.Now()), nil
		}
		if err != nil {
			return nil, err
		}
		if !d.noList {
			src, err = host.Entries(opt, snap)
			if err != nil {
				snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %v", err))
				src = nil
			}
		}
	}
	if src == nil && d.from == "" {
		snap.Source = "none" // no entries were listed
	}
	first := time.Now()
	var bd *analyze.Breakdown
	if src != nil && !d.noList {
		acc := analyze.NewAccumulator()
		acc.TopN = d.top
		acc.IdleAbove, acc.IdleAfter = analyze.IdleWindow(snap)
		prog := newProgress(stderr, "reading entries")
		err := src(func(f *conntrack.Flow) error {
			acc.Add(f)
			prog.tick()
			return nil
		})
		prog.done()
		b := acc.Breakdown()
		bd = &b
		if err != nil {
			if b.Total == 0 && d.from != "" {
				return nil, fmt.Errorf("%s: %w", d.from, err)
			}
			snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %v — the breakdown covers the %d entries read before it", err, b.Total))
		}
	}
	// The second counter sample: at least --interval after the first, overlapping the listing.
	if snap.Stats != nil && d.interval > 0 && d.from == "" && d.snapshot == "" && d.root == "" {
		if wait := d.interval - time.Since(first); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if s2, err := host.ReadStats(opt); err == nil {
			snap.Stats2 = s2
		} else {
			snap.Warnings = append(snap.Warnings, fmt.Sprintf("second counter sample: %v", err))
		}
	}
	return analyze.Analyze(snap, bd, reportTime(snap)), nil
}

func reportTime(s *host.Snapshot) time.Time {
	if s.Source == "snapshot" && !s.TakenAt.IsZero() {
		return s.TakenAt
	}
	return time.Now()
}

// fileSnapshot is the Snapshot of a bare listing: nothing but the entries is known.
func fileSnapshot(name string) *host.Snapshot {
	return &host.Snapshot{Source: "file", TakenAt: time.Now(), NetNS: host.NetNS{Name: name},
		Settings: host.Settings{Count: -1, Max: -1, Buckets: -1, HashSize: -1},
		TCP:      host.TCPSysctls{KeepaliveTime: -1, KeepaliveIntvl: -1, KeepaliveProbes: -1}}
}
