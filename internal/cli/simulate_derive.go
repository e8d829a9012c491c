package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/sim"
)

// deriveOptions are simulate's flags that take the scenario from a host's
// table (sim.Derive) instead of a name or a file.
type deriveOptions struct {
	fromHost bool
	netns    string
	snapshot string
}

func (d *deriveOptions) bind(c *cobra.Command) {
	f := c.Flags()
	f.BoolVar(&d.fromHost, "from-host", false, "derive the scenario from this host's table, in the caller's network namespace (listing the entries needs root)")
	f.StringVar(&d.netns, "netns", "", "derive the scenario from the table of this network namespace: a `NAME` from /run/netns, a path, or a PID")
	f.StringVar(&d.snapshot, "snapshot", "", "derive the scenario from a snapshot taken with 'ctdoctor snapshot' (`FILE`.tar.gz or an extracted directory)")
	_ = c.RegisterFlagCompletionFunc("netns", completeNetNS)
}

// active reports whether the scenario is to be derived.
func (d *deriveOptions) active() bool { return d.fromHost || d.netns != "" || d.snapshot != "" }

// validate checks the derive flags with the rest; its errors are usage
// errors.
func (d *deriveOptions) validate(o *simulateOptions, args []string) error {
	switch {
	case !d.active():
		return nil
	case d.snapshot != "" && (d.fromHost || d.netns != ""):
		return errors.New("--snapshot reads a snapshot, --from-host and --netns the live host: give one")
	case len(args) > 0:
		return fmt.Errorf("--from-host, --netns and --snapshot derive the scenario from a table: do not name one (%q) as well", args[0])
	case o.pcap != "":
		return errors.New("--pcap replays a capture: --from-host, --netns and --snapshot derive a scenario instead")
	case o.list:
		return errors.New("--list takes no scenario")
	}
	return nil
}

// scenario reads the table (a second counter sample a second later, for
// the drop rates, on the live host) and derives the scenario from it.
func (d *deriveOptions) scenario(ctx context.Context) (*sim.Scenario, error) {
	in := doctor.Input{NetNS: d.netns}
	opt := doctor.Options{Interval: time.Second, NoLog: true, Top: 20, NoPlan: true} // the fixes are not shown
	if d.snapshot != "" {
		in, opt.Interval = doctor.Input{Snapshot: d.snapshot}, 0
	}
	res, err := doctor.Run(ctx, in, opt)
	if err != nil {
		return nil, fmt.Errorf("read the table: %w", err)
	}
	if res.Snapshot == nil {
		return nil, fmt.Errorf("derive a scenario: %s", res.Report.Verdict.Reason)
	}
	if res.Breakdown == nil && res.Report.Listing != nil && res.Report.Listing.Detail != "" {
		return nil, fmt.Errorf("derive a scenario: %s, so there is no traffic to derive one from", res.Report.Listing.Detail)
	}
	return sim.Derive(res.Snapshot, res.Report, res.Breakdown)
}
