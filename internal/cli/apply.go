package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/apply"
	"github.com/ctdoctor/ctdoctor/tune"
)

type applyOptions struct {
	root          string
	stateDir      string
	global        bool
	dryRun        bool
	yes           bool
	confirmWithin time.Duration
	confirm       string
	lockWait      time.Duration
	watchdogMode  string
	netns         string
}

func (o *applyOptions) bindState(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.stateDir, "state-dir", apply.DefaultStateDir, "`DIR` holding the journals and the lock")
	f.DurationVar(&o.lockWait, "lock-wait", 10*time.Second, "how long to wait for another apply or rollback to finish")
}

func newApplyCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &applyOptions{}
	c := &cobra.Command{
		Use:   "apply [PLAN.json]",
		Short: "Apply a plan (ctdoctor plan -o json) safely: diff, journal, verify, undo on failure",
		Long: `apply carries out a plan made by 'ctdoctor plan -o json' on this host;
with --netns and no plan file it plans afresh for that namespace, exactly
as 'ctdoctor plan --netns' would, and applies that.

It first checks everything and changes nothing if a check fails: the plan
must be for this host (hostname, boot, network namespace), every value must
still be what the plan saw (else the plan is stale: make a new one), nft
must accept the rules, and global steps (the whole host's table size, hash
size, files under /etc) need --global. It then shows the diff and asks.

Before each change it records the previous value in a journal under
--state-dir (fsynced), then changes, reads back and verifies. If anything
fails, what was done is undone in reverse and verified. Files are replaced
atomically, keeping their mode and owner; nft rules go in one batch and
undo deletes exactly those rules by handle.

--confirm-within 2m reverts by itself unless you confirm within the window:
answer on the terminal, or run 'ctdoctor apply --confirm ID' from another
shell. A detached watchdog does the revert, also if this process or your
SSH session dies. Use it whenever a change could cut you off.`,
		Example: `  ctdoctor plan --netns web1 -o json > plan.json
  ctdoctor apply plan.json --dry-run             # the diff and exactly what would run
  ctdoctor apply plan.json --confirm-within 2m   # revert unless confirmed in 2 minutes
  ctdoctor apply --confirm 20260310-140203-3fa2  # keep it (from another shell)
  ctdoctor apply plan.json --yes --global        # scripts: no question; include global steps
  ctdoctor apply --netns web1 --dry-run          # plan afresh and show what would run`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runApply(cmd.Context(), o, args, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVar(&o.root, "root", "/", "apply the global steps under this root `DIR` instead of / (a fake root for tests)")
	f.BoolVar(&o.global, "global", false, "also apply the plan's global steps (settings of the whole host)")
	f.StringVar(&o.netns, "netns", "", "with no plan file: plan afresh for this network namespace (a `NAME`, path or PID) and apply that")
	f.BoolVar(&o.dryRun, "dry-run", false, "check and print the diff and exactly what would run; change nothing")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask (for scripts)")
	f.DurationVar(&o.confirmWithin, "confirm-within", 0, "revert by itself after this `DURATION` unless confirmed (e.g. 2m)")
	f.StringVar(&o.confirm, "confirm", "", "confirm apply `ID` (made with --confirm-within): keep its changes")
	f.StringVar(&o.watchdogMode, "watchdog", "auto", "how the confirm-or-revert watchdog runs: auto, process or systemd")
	_ = f.MarkHidden("watchdog")
	o.bindState(c)
	return c
}

func runApply(ctx context.Context, o *applyOptions, args []string, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	opt := apply.Options{
		Root: o.root, StateDir: o.stateDir, Global: o.global, DryRun: o.dryRun, Yes: o.yes,
		ConfirmWithin: o.confirmWithin, Out: stdout, LockWait: o.lockWait,
		Watchdog: apply.WatchdogOptions{Mode: o.watchdogMode},
	}
	if o.confirm != "" {
		if len(args) > 0 {
			return &exitError{code: 2, err: errors.New("--confirm ID takes no plan file")}
		}
		res, err := apply.Confirm(o.confirm, opt)
		if err != nil {
			return err
		}
		for _, n := range res.Notes {
			fmt.Fprintln(stdout, n)
		}
		if res.State == apply.StateConfirmed {
			fmt.Fprintf(stdout, "Apply %s is confirmed: its changes stay.\n", res.ID)
		}
		return nil
	}
	if o.confirmWithin < 0 || (o.confirmWithin > 0 && o.confirmWithin < time.Second) {
		return &exitError{code: 2, err: fmt.Errorf("--confirm-within %v: give at least 1s", o.confirmWithin)}
	}
	var p *tune.Plan
	var err error
	if len(args) == 1 {
		if o.netns != "" {
			return &exitError{code: 2, err: errors.New("--netns plans afresh: give it or a plan file, not both (the plan file names its namespace)")}
		}
		p, err = apply.ReadPlanFile(args[0])
	} else {
		// No plan file: plan afresh for the namespace, exactly as ctdoctor
		// plan would, and apply that (the diff is shown first all the same).
		if o.netns == "" {
			return &exitError{code: 2, err: errors.New("give the plan file (ctdoctor plan -o json > plan.json; - for standard input), or --netns NAME to plan afresh for a namespace")}
		}
		if o.root != "/" && o.root != "" {
			return &exitError{code: 2, err: errors.New("--root needs a plan file (ctdoctor plan --root DIR -o json)")}
		}
		p, err = makePlan(ctx, &planOptions{netns: o.netns, global: o.global, noPredict: true, interval: time.Second}, stderr)
		if err == nil && p.Empty() {
			fmt.Fprintln(stdout, "Nothing to do: the findings propose no change that is not already in place.")
			return nil
		}
	}
	if err != nil {
		return err
	}
	args = append(args, "")
	// A signal (Ctrl-C, the SSH session closing) stops the apply between
	// two actions and undoes what was done, instead of killing it halfway.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	interactive := args[0] != "-" && isTerminal(os.Stdin) && isTerminal(stdout)
	if len(args) > 1 { // planned afresh
		interactive = isTerminal(os.Stdin) && isTerminal(stdout)
	}
	lines := make(chan string)
	if interactive {
		go func() {
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		opt.Ask = func(q string) (bool, error) {
			fmt.Fprintf(stdout, "\n%s [y/N] ", q)
			select {
			case l, ok := <-lines:
				return ok && yes(l), nil
			case <-ctx.Done():
				fmt.Fprintln(stdout)
				return false, nil
			}
		}
	}
	res, err := apply.Apply(ctx, p, opt)
	if err != nil {
		return err
	}
	if res.DryRun || res.NothingToDo {
		return nil
	}
	fmt.Fprintf(stdout, "Applied and verified: %d changes (apply %s).\n", res.Changed, res.ID)
	if res.ConfirmBy == nil {
		fmt.Fprintf(stdout, "Undo with: ctdoctor rollback %s\n", res.ID)
		return nil
	}
	by := res.ConfirmBy.Local().Format(time.TimeOnly)
	fmt.Fprintf(stdout, "Unless confirmed by %s (in %s) it is reverted by the watchdog (%s).\nConfirm from another shell with: ctdoctor apply --confirm %s\n",
		by, time.Until(*res.ConfirmBy).Round(time.Second), watchdogText(res.Watchdog), res.ID)
	if !interactive {
		return nil
	}
	answers := make(chan bool, 1)
	go func() {
		fmt.Fprintf(stdout, "Keep these changes? [y/N] ")
		l, ok := <-lines
		answers <- ok && yes(l)
	}()
	res, err = apply.WaitConfirm(ctx, res.ID, answers, opt)
	if err != nil {
		return err
	}
	switch res.State {
	case apply.StateConfirmed:
		fmt.Fprintf(stdout, "Confirmed: apply %s stays.\n", res.ID)
		return nil
	case apply.StateReverted:
		return fmt.Errorf("apply %s was reverted (not confirmed); the host is as before", res.ID)
	}
	fmt.Fprintf(stdout, "Apply %s is now %s.\n", res.ID, res.State)
	return nil
}

func watchdogText(w *apply.WatchdogInfo) string {
	if w == nil {
		return "none"
	}
	if w.Kind == "systemd" {
		return "systemd unit " + w.Unit
	}
	return fmt.Sprintf("pid %d, log %s", w.PID, w.Log)
}

func yes(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	return s == "y" || s == "yes"
}
