package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/tune"
)

type planOptions struct {
	netns     string
	root      string
	snapshot  string
	output    string
	global    bool
	force     bool
	noPredict bool
	interval  time.Duration
	color     string
}

func newPlanCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &planOptions{}
	c := &cobra.Command{
		Use:   "plan",
		Short: "Turn the diagnosis into an ordered plan of changes (reviewable; nothing is changed)",
		Long: `plan diagnoses the host (or a namespace, a root directory, a snapshot) and
turns the findings into an ordered plan. Each step shows the finding that
motivates it with its evidence, current → proposed value, scope (this
namespace or the whole host), how it persists across reboots, its memory
cost, and the exact commands for the kernel and the firewall present.

- NOTRACK steps are placed in the namespace's own firewall ruleset, read
  live: the accept rule for untracked packets goes before the first rule
  that looks at conntrack in every chain the traffic reaches, in the
  operator's own tables; the NOTRACK rules go in a table of ctdoctor's own
  at raw priority (-300). Traffic that is NATed or uses a conntrack helper
  is refused, with the reason. Offline (--root, --snapshot) no ruleset is
  known and NOTRACK is left out.
- Table and hash size go together (one bucket per entry), refused with the
  figure when a full table would take more than 10% of RAM (--force).
  nf_conntrack_max and the hash size are global: read-only inside a
  namespace, so a namespace's plan lists them apart, and apply makes them
  only with --global.
- Settings kube-proxy rewrites at every start are not planned: the plan
  says which KubeProxyConfiguration field to change instead. Likewise what
  the active tuned profile writes each time it is applied (its hash size;
  a sysctl when tuned does not write sysctl.d back afterwards): the plan
  names the profile file to change.
- Persistence: one sysctl.d file named to win at boot over any other that
  sets the same keys, the module loaded early (modules-load.d) so its keys
  exist when systemd-sysctl runs, the hash size in modprobe.d (or on the
  kernel command line when conntrack is built in); /etc/sysctl.conf and
  ip_conntrack names on legacy kernels.

The plan is also run on the simulator: a workload derived from the table
(Little's law over the state counts and timeouts) with the current and the
planned settings, peak use and drops before → after.

-o json is the versioned plan (schema ctdoctor.plan/v1) that 'ctdoctor
apply' takes; -o sh a shell script to review; -o html one self-contained
page to share. A plan made right after an apply says there is nothing to do.`,
		Example: `  ctdoctor plan --netns web1                    # what would change, and why
  ctdoctor plan --netns web1 -o json > plan.json
  ctdoctor apply plan.json --confirm-within 2m   # apply it, revert unless confirmed
  ctdoctor plan --global                         # include the whole host's table size
  ctdoctor plan --netns web1 -o sh > fix.sh      # a script to review and run by hand
  ctdoctor plan --netns web1 -o html > plan.html # a page to attach to a change request
  ctdoctor plan --snapshot host.tar.gz           # offline (no NOTRACK: the ruleset is unknown)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPlan(cmd.Context(), o, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVar(&o.netns, "netns", "", "plan for this network namespace: a `NAME` from /run/netns, a path, or a PID (default: the caller's)")
	f.StringVar(&o.root, "root", "", "plan for the host under this root `DIR` (a mounted image or a fake root)")
	f.StringVar(&o.snapshot, "snapshot", "", "plan from a snapshot taken with 'ctdoctor snapshot' (`FILE`.tar.gz or a directory)")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text, json (for ctdoctor apply), sh (a script to review) or html (a self-contained page)")
	f.BoolVar(&o.global, "global", false, "include the whole host's settings (table and hash size, /etc files) in a namespace's plan")
	f.BoolVar(&o.force, "force", false, "plan a table size even when a full table would take more than 10% of RAM")
	f.BoolVar(&o.noPredict, "no-predict", false, "do not simulate the plan's effect")
	f.DurationVar(&o.interval, "interval", time.Second, "time between the two counter samples used for rates (0 = one sample)")
	f.StringVar(&o.color, "color", "auto", "colour: auto, always or never")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]cobra.Completion{"text", "json", "sh", "html"}, cobra.ShellCompDirectiveNoFileComp))
	_ = c.RegisterFlagCompletionFunc("netns", completeNetNS)
	return c
}

func (o *planOptions) validate() error {
	n := 0
	for _, s := range []string{o.root, o.snapshot} {
		if s != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return errors.New("--root and --snapshot are alternatives: give one")
	case n == 1 && o.netns != "":
		return errors.New("--netns applies to the live host only")
	case o.output != "text" && o.output != "json" && o.output != "sh" && o.output != "html":
		return fmt.Errorf("-o must be text, json, sh or html, not %q", o.output)
	case o.interval < 0:
		return fmt.Errorf("--interval must not be negative, not %s", o.interval)
	}
	return nil
}

func runPlan(ctx context.Context, o *planOptions, stdout, stderr io.Writer) error {
	if err := o.validate(); err != nil {
		return &exitError{code: 2, err: err, help: "ctdoctor plan"}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	color, err := useColor(o.color, stdout)
	if err != nil {
		return &exitError{code: 2, err: err, help: "ctdoctor plan"}
	}
	p, err := makePlan(ctx, o, stderr)
	if err != nil {
		return err
	}
	switch o.output {
	case "json":
		return render.PlanJSON(stdout, p)
	case "sh":
		return render.PlanScript(stdout, p)
	case "html":
		return render.PlanHTML(stdout, p, render.HTMLOptions{})
	}
	return render.PlanText(stdout, p, render.TextOptions{Color: color, Width: terminalWidth(stdout)})
}

// makePlan diagnoses what the flags name and plans from it.
func makePlan(ctx context.Context, o *planOptions, stderr io.Writer) (*tune.Plan, error) {
	in := doctor.Input{NetNS: o.netns, Root: o.root, Snapshot: o.snapshot}
	interval := o.interval
	if o.root != "" || o.snapshot != "" {
		interval = 0
	}
	prog := newProgress(stderr, "")
	// NoPlan: the plan is made once, below (the report's fixes are not shown).
	res, err := doctor.Run(ctx, in, doctor.Options{Interval: interval, Progress: prog.update, NoPlan: true})
	prog.done()
	if errors.Is(err, doctor.ErrInput) {
		return nil, &exitError{code: 2, err: err, help: "ctdoctor plan"}
	}
	if err != nil {
		return nil, err
	}
	if res.Snapshot == nil {
		return nil, errors.New("connection tracking is not active here: there is no table to plan for")
	}
	p, err := doctor.Plan(ctx, in, res, doctor.PlanOptions{Global: o.global, Force: o.force})
	if err != nil {
		return nil, err
	}
	for _, w := range res.Report.Warnings {
		fmt.Fprintf(stderr, "ctdoctor: warning: %s\n", w)
	}
	if !o.noPredict && !p.Empty() {
		if err := predict(ctx, res, p); err != nil {
			fmt.Fprintf(stderr, "ctdoctor: warning: prediction: %v\n", err)
		}
	}
	return p, nil
}
