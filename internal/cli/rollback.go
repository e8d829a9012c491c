package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/apply"
)

type rollbackOptions struct {
	applyOptions
	force    bool
	watchdog bool
}

func newRollbackCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &rollbackOptions{}
	c := &cobra.Command{
		Use:   "rollback [ID]",
		Short: "Undo an apply exactly, from its journal",
		Long: `rollback undoes an apply (the newest one unless ID is given; see ctdoctor
history) exactly from its journal: in reverse order it puts back every sysctl
and module parameter, every file (content, mode and owner, or its absence),
and deletes exactly the nft rules and tables the apply added, by handle —
nothing the operator added since — then reads everything back to verify.

It also finishes an apply that was interrupted (killed, a crash) or whose
undo did not finish. Running it again is harmless: an apply already undone
is "nothing to do". A value changed by someone since the apply is not
overwritten unless --force.`,
		Example: `  ctdoctor rollback                        # the newest apply
  ctdoctor rollback 20260310-140203-3fa2
  ctdoctor history                         # what was applied, and its state`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRollback(cmd.Context(), o, args, stdout, stderr)
		},
	}
	f := c.Flags()
	f.BoolVar(&o.force, "force", false, "restore the values from before the apply even where they changed since")
	f.BoolVar(&o.watchdog, "watchdog", false, "run as the confirm-or-revert watchdog of apply ID (started by apply --confirm-within)")
	_ = f.MarkHidden("watchdog")
	o.bindState(c)
	return c
}

func runRollback(ctx context.Context, o *rollbackOptions, args []string, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	id := ""
	if len(args) == 1 {
		id = args[0]
	}
	if o.watchdog {
		if id == "" {
			return &exitError{code: 2, err: errors.New("--watchdog needs the apply ID")}
		}
		// The watchdog outlives the session that started it: a hangup or
		// an interrupt meant for that session must not stop it.
		signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
		return apply.Watchdog(ctx, o.stateDir, id, stdout)
	}
	opt := apply.Options{StateDir: o.stateDir, Out: stdout, LockWait: o.lockWait, Force: o.force}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := apply.Rollback(ctx, id, opt)
	if err != nil {
		return err
	}
	for _, n := range res.Notes {
		fmt.Fprintln(stderr, "note:", n)
	}
	return nil
}
