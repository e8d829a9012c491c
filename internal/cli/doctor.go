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
	"github.com/ctdoctor/ctdoctor/doctor"
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
	noPlan   bool // --no-plan: the exporter's background run, which shows no fixes

	intervalSet bool // --interval was given
}

func (d *doctorOptions) bind(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&d.netns, "netns", "", "network namespace to diagnose: a `NAME` from /run/netns, a path, or a PID (default: the caller's)")
	f.BoolVar(&d.allNetNS, "all-netns", false, "also list every named and process network namespace with its count against the global max")
	f.StringVar(&d.from, "from", "", "read entries from `FILE` (- for stdin) instead of the host, in 'conntrack -L', 'conntrack -L -o extended', /proc/net/nf_conntrack or 'conntrack -L -o save' format")
	f.StringVar(&d.snapshot, "snapshot", "", "diagnose a snapshot taken with 'ctdoctor snapshot' (`FILE`.tar.gz or an extracted directory)")
	f.StringVar(&d.root, "root", "", "read the host through this root `DIR` (a mounted image or a fake root) instead of /")
	f.StringVarP(&d.output, "output", "o", "text", "output format: text, json or html (one self-contained page to share: no script, nothing fetched)")
	f.DurationVar(&d.interval, "interval", time.Second, "time between the two counter samples used for rates (0 = one sample, no rates)")
	f.BoolVar(&d.noLog, "no-log", false, "do not read the kernel log")
	f.BoolVar(&d.noList, "no-entries", false, "skip listing the entries (sizing, counters and log only; fast on huge tables)")
	f.IntVar(&d.top, "top", 10, "rows in the top sources/destinations/services tables")
	f.StringVar(&d.color, "color", "auto", "colour: auto (on a terminal, unless NO_COLOR is set), always or never")
	f.BoolVarP(&d.verbose, "verbose", "v", false, "explain every finding, including informational ones")
	f.BoolVar(&d.noPlan, "no-plan", false, "diagnosis only: the fixes keep their advice and changes but no planned command (the exporter's background run)")
	_ = f.MarkHidden("no-plan")
}

// validate checks the flags together; every error it returns is a usage
// error (exit status 2).
func (d *doctorOptions) validate() error {
	var given []string
	for _, x := range []struct{ flag, v string }{{"--from", d.from}, {"--snapshot", d.snapshot}, {"--root", d.root}} {
		if x.v != "" {
			given = append(given, x.flag)
		}
	}
	if len(given) > 1 {
		return errors.New("--from, --snapshot and --root are alternatives: give one")
	}
	if len(given) == 1 {
		switch {
		case d.netns != "" && d.allNetNS:
			return fmt.Errorf("--netns and --all-netns apply to the live host only, not to %s", given[0])
		case d.netns != "":
			return fmt.Errorf("--netns applies to the live host only, not to %s", given[0])
		case d.allNetNS:
			return fmt.Errorf("--all-netns applies to the live host only, not to %s", given[0])
		case d.intervalSet && d.interval > 0:
			return fmt.Errorf("--interval applies to the live host only: %s has one counter sample, so no rates", given[0])
		}
	}
	if d.from != "" && d.noList {
		return errors.New("--no-entries with --from leaves nothing to analyse: a listing holds only entries")
	}
	if d.output != "text" && d.output != "json" && d.output != "html" {
		return fmt.Errorf("-o must be text, json or html, not %q", d.output)
	}
	if d.interval < 0 {
		return fmt.Errorf("--interval must not be negative, not %s", d.interval)
	}
	if d.top < 1 {
		return fmt.Errorf("--top must be at least 1, not %d", d.top)
	}
	return nil
}

func runDoctor(ctx context.Context, d *doctorOptions, stdout, stderr io.Writer) error {
	if err := d.validate(); err != nil {
		return &exitError{code: 2, err: err, help: "ctdoctor"}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	color, err := useColor(d.color, stdout)
	if err != nil {
		return &exitError{code: 2, err: err, help: "ctdoctor"}
	}
	rep, err := diagnose(ctx, d, stderr)
	if errors.Is(err, doctor.ErrInput) {
		return &exitError{code: 2, err: err, help: "ctdoctor"}
	}
	if err != nil && d.root != "" && (errors.Is(err, host.ErrNotHostRoot) || isFile(d.root)) {
		return fmt.Errorf("%w\n--root wants a directory holding a copy of a host's /proc and /sys (a mounted disk image, "+
			"a test fixture, an extracted snapshot): read a snapshot archive with --snapshot FILE, and a saved "+
			"'conntrack -L' listing with --from FILE", err)
	}
	if err != nil {
		return err
	}
	switch d.output {
	case "json":
		return render.JSON(stdout, rep)
	case "html":
		return render.HTML(stdout, rep, render.HTMLOptions{})
	}
	return render.Text(stdout, rep, render.TextOptions{Color: color, Width: terminalWidth(stdout), Verbose: d.verbose})
}

// diagnose builds the doctor input from the flags and runs the diagnosis,
// with a progress line on a terminal's stderr.
func diagnose(ctx context.Context, d *doctorOptions, stderr io.Writer) (*analyze.Report, error) {
	in := doctor.Input{NetNS: d.netns, AllNetNS: d.allNetNS, Root: d.root, Snapshot: d.snapshot}
	switch d.from {
	case "":
	case "-":
		in.Listing, in.ListingName = os.Stdin, "stdin"
	default:
		in.ListingFile = d.from
	}
	prog := newProgress(stderr, "")
	defer prog.done()
	return doctor.Diagnose(ctx, in, doctor.Options{Interval: d.interval, NoLog: d.noLog, NoEntries: d.noList,
		Top: d.top, Progress: prog.update, NoPlan: d.noPlan})
}

// isFile reports whether path is a regular file.
func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
