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
		Top: d.top, Progress: prog.update})
}
