package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ctdoctor/ctdoctor/tune"
)

// Options control Apply, Rollback, Confirm and the watchdog.
type Options struct {
	// Root is the root directory global actions (module parameters,
	// files, global sysctls) go through: "/" or "" for the live host, or
	// a fake root whose /proc/sys, /sys/module and /etc are plain files.
	// Per-namespace actions go to the plan's network namespace; under a
	// fake root a plan for "init" has its per-namespace sysctls in the
	// root too, and cannot hold nft or iptables actions.
	Root string
	// StateDir holds the journals and the lock (DefaultStateDir when empty).
	StateDir string
	// Global allows the plan's global steps (--global): without it a plan
	// with global steps is refused (ErrScope).
	Global bool
	// DryRun checks everything and prints the diff and the exact
	// operations, and changes nothing (no journal either).
	DryRun bool
	// Yes applies without asking.
	Yes bool
	// Ask asks the operator a yes/no question (on a terminal). Without
	// Yes, a nil Ask refuses to change anything.
	Ask func(question string) (bool, error)
	// ConfirmWithin, when positive, makes the apply revert by itself at
	// the end of the window unless confirmed (Confirm, WaitConfirm); a
	// detached watchdog does it even if this process dies. The window
	// starts when the journal is created, before the first change.
	ConfirmWithin time.Duration
	// Out receives the diff, the progress and the outcome (nil: discarded).
	Out io.Writer
	// LockWait is how long to wait for another apply or rollback to
	// finish before giving up with ErrLocked.
	LockWait time.Duration
	// Force makes Rollback restore values that changed since the apply
	// (by default it refuses, naming them).
	Force bool
	// Watchdog says how to start the watchdog.
	Watchdog WatchdogOptions
	// Hook, when set, is called at each point of an apply or rollback
	// where a test injects a failure (by returning an error) or kills the
	// process.
	Hook func(HookPoint) error
}

// HookPoint is a point in an apply (see Options.Hook).
type HookPoint struct {
	// Phase is "before" (the action is journaled as started, nothing is
	// changed yet), "after" (the action ran; it is not yet verified nor
	// journaled as done) or "end" (every action done, the journal not yet
	// marked applied); for a rollback, "undo" (before undoing an action).
	Phase string
	// Index counts the actions that change something (or, for "undo",
	// the actions undone so far), from 0; Step and Action locate it in
	// the plan.
	Index, Step, Action int
}

func (o *Options) stateDir() string {
	if o.StateDir == "" {
		return DefaultStateDir
	}
	return o.StateDir
}

func (o *Options) out() io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

// Result is what an Apply, Rollback or revert did.
type Result struct {
	ID    string `json:"id,omitempty"`
	State State  `json:"state,omitempty"`
	// NothingToDo: every action was already at its proposed value, or the
	// same plan is applied and in effect (AlreadyApplied), or (rollback)
	// the apply was already undone.
	NothingToDo    bool   `json:"nothing_to_do,omitempty"`
	AlreadyApplied string `json:"already_applied,omitempty"`
	DryRun         bool   `json:"dry_run,omitempty"`
	// Changed and Skipped count actions changed (or undone) and actions
	// already at their value.
	Changed   int           `json:"changed"`
	Skipped   int           `json:"skipped"`
	ConfirmBy *time.Time    `json:"confirm_by,omitempty"`
	Watchdog  *WatchdogInfo `json:"watchdog,omitempty"`
	// Notes are things the operator should know (values left alone, …).
	Notes []string `json:"notes,omitempty"`
}

// ErrAborted is returned when the operator answers no.
var ErrAborted = errors.New("not applied: the operator said no")

// ErrFailed is wrapped by the error for an apply that failed part way;
// the message says whether its completed actions were undone.
var ErrFailed = errors.New("apply failed")

// Apply checks a plan against the host (Check), shows the diff, asks,
// and applies it under the state directory's lock with a write-ahead
// journal. On any failure it undoes what it did, in reverse, verifies,
// and returns an error wrapping ErrFailed.
func Apply(ctx context.Context, p *tune.Plan, opt Options) (*Result, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	t, err := resolveTarget(p.Host.NetNS, opt.Root)
	if err != nil {
		return nil, err
	}
	if err := t.checkPrivileges(p, "apply"); err != nil {
		return nil, err
	}
	stateDir := opt.stateDir()
	var lk *lock
	if opt.DryRun {
		if _, err := os.Stat(filepath.Join(stateDir, "lock")); err == nil {
			if lk, err = lockState(stateDir, false, opt.LockWait, ""); err != nil {
				return nil, err
			}
		}
	} else {
		if err := ensureStateDir(stateDir); err != nil {
			return nil, err
		}
		if lk, err = lockState(stateDir, true, opt.LockWait, "apply of plan "+p.ID); err != nil {
			return nil, err
		}
	}
	defer lk.release()
	hash := planHash(p)
	inEffect, err := pendingJournals(stateDir, hash)
	if err != nil {
		return nil, err
	}
	c, err := check(p, t, opt, inEffect)
	if err != nil {
		return nil, err
	}
	out := opt.out()
	todo, already := c.Todo()
	if todo == 0 {
		if inEffect != "" {
			fmt.Fprintf(out, "Nothing to do: plan %s is already applied (apply %s, see ctdoctor history).\n", p.ID, inEffect)
		} else {
			fmt.Fprintf(out, "Nothing to do: every change of plan %s is already in place.\n", p.ID)
		}
		return &Result{NothingToDo: true, AlreadyApplied: inEffect, Skipped: already, DryRun: opt.DryRun}, nil
	}
	c.WriteDiff(out)
	if opt.DryRun {
		fmt.Fprintln(out)
		c.WriteOperations(out)
		return &Result{DryRun: true, Changed: todo, Skipped: already}, nil
	}
	if !opt.Yes {
		if opt.Ask == nil {
			return nil, errors.New("refusing to change the host without confirmation: not on a terminal; review with --dry-run, then pass --yes")
		}
		ok, err := opt.Ask(fmt.Sprintf("Apply these %d changes to %s?", todo, t.where()))
		if err != nil {
			return nil, fmt.Errorf("ask: %w", err)
		}
		if !ok {
			return nil, ErrAborted
		}
	}
	return run(ctx, c, opt, stateDir)
}

// pendingJournals refuses to go on while an earlier apply is unfinished,
// and returns the id of the latest apply of the plan with hash that is
// in effect. The caller holds the lock, so an apply in progress is one
// whose process died.
func pendingJournals(stateDir, hash string) (inEffect string, err error) {
	ids, err := listJournals(stateDir)
	if err != nil {
		return "", err
	}
	for _, id := range ids {
		j, err := readJournal(stateDir, id)
		if err != nil {
			return "", fmt.Errorf("refusing to apply: %w", err)
		}
		switch {
		case j.State.inProgress():
			return "", fmt.Errorf("%w: apply %s was interrupted while %s (%s): its changes may be half made; run `ctdoctor rollback %s` first (ctdoctor history shows it)",
				ErrPending, id, j.State, progress(j), id)
		case j.State == StateRollbackFailed:
			return "", fmt.Errorf("%w: rolling back apply %s failed (%s); fix that, then run `ctdoctor rollback %s` again", ErrPending, id, j.UndoError, id)
		case j.State == StateFailed && len(undoable(j)) > 0:
			return "", fmt.Errorf("%w: apply %s failed and its undo did not finish (%s); run `ctdoctor rollback %s` first", ErrPending, id, j.UndoError, id)
		case j.State == StateApplied && j.ConfirmBy != nil:
			return "", fmt.Errorf("%w: apply %s awaits confirmation until %s: confirm it (ctdoctor apply --confirm %s) or roll it back (ctdoctor rollback %s) first",
				ErrPending, id, j.ConfirmBy.Local().Format(time.TimeOnly), id, id)
		case (j.State == StateApplied || j.State == StateConfirmed) && j.PlanSHA256 == hash:
			inEffect = id
		}
	}
	return inEffect, nil
}

// progress says how far an apply got: "step 2 of 4 started".
func progress(j *Journal) string {
	last := ""
	for _, r := range j.Actions {
		switch r.Status {
		case ActStarted, ActDone, ActFailed, ActUndone:
			last = fmt.Sprintf("step %d of %d %s", r.Step+1, len(j.Plan.Steps), r.Status)
		}
	}
	if last == "" {
		return "nothing changed yet"
	}
	return last
}

// undoable are the indexes of the actions an undo must look at, last first.
func undoable(j *Journal) []int {
	var out []int
	for i := len(j.Actions) - 1; i >= 0; i-- {
		switch j.Actions[i].Status {
		case ActStarted, ActDone, ActFailed:
			out = append(out, i)
		}
	}
	return out
}
