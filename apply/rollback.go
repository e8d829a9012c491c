package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/tune"
)

// Rollback undoes apply id (the newest apply when id is empty) exactly
// from its journal, in reverse, verifying each action. It is idempotent:
// an apply already undone is "nothing to do". A value changed since the
// apply wrote it is refused before anything changes (ErrDrift) unless
// opt.Force. After a reboot only files are restored; in a namespace that
// is gone there is nothing to restore.
func Rollback(ctx context.Context, id string, opt Options) (*Result, error) {
	stateDir := opt.stateDir()
	if _, err := os.Stat(stateDir); err != nil {
		return nil, fmt.Errorf("nothing to roll back: no state directory %s (%w)", stateDir, err)
	}
	lk, err := lockState(stateDir, true, opt.LockWait, "rollback "+id)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	if id == "" {
		ids, err := listJournals(stateDir)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("nothing to roll back: no applies recorded in %s", stateDir)
		}
		id = ids[len(ids)-1]
	}
	j, err := readJournal(stateDir, id)
	if err != nil {
		return nil, err
	}
	return undoLocked(ctx, j, opt, stateDir, false)
}

// revert undoes an apply that was not confirmed in time, or was
// interrupted; it restores even values changed since (Force).
func revert(ctx context.Context, stateDir, id, why string, opt Options) (*Result, error) {
	lk, err := lockState(stateDir, true, max(opt.LockWait, 2*time.Minute), "revert of "+id)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	j, err := readJournal(stateDir, id)
	if err != nil {
		return nil, err
	}
	if j.State == StateConfirmed || j.ConfirmBy == nil {
		return &Result{ID: id, State: j.State, NothingToDo: true}, nil
	}
	opt.Force = true
	j.event("reverting: %s", why)
	return undoLocked(ctx, j, opt, stateDir, true)
}

// undoLocked undoes j; the caller holds the lock.
func undoLocked(_ context.Context, j *Journal, opt Options, stateDir string, isRevert bool) (*Result, error) {
	out := opt.out()
	res := &Result{ID: j.ID, State: j.State}
	pending := undoable(j)
	if j.State == StateRolledBack || j.State == StateReverted || len(pending) == 0 {
		res.NothingToDo = true
		switch j.State {
		case StateRolledBack, StateReverted:
			fmt.Fprintf(out, "Nothing to do: apply %s is already %s.\n", j.ID, displayState(j.State, false))
		case StateFailed:
			fmt.Fprintf(out, "Nothing to do: apply %s failed and was undone (%s).\n", j.ID, j.Error)
			hintOlder(out, stateDir, j.ID)
		default:
			fmt.Fprintf(out, "Nothing to do: apply %s changed nothing.\n", j.ID)
		}
		return res, nil
	}
	t, err := journalTarget(j)
	if err != nil {
		return nil, err
	}
	verb := "rollback"
	if isRevert {
		verb = "revert"
	}
	if err := t.checkPrivileges(j.Plan, verb); err != nil {
		return nil, err
	}
	if err := laterConflicts(stateDir, j); err != nil {
		return nil, err
	}
	if !opt.Force {
		if err := driftCheck(t, j); err != nil {
			return nil, err
		}
	}
	from, to := StateRollingBack, StateRolledBack
	if isRevert {
		from, to = StateReverting, StateReverted
	}
	was := j.State
	j.State = from
	if isRevert {
		j.event("%s by pid %d (was %s; the window ends %s)", verb, os.Getpid(), was, confirmByString(j))
	} else {
		j.event("%s by pid %d (was %s)", verb, os.Getpid(), was)
	}
	if err := writeJournal(stateDir, j); err != nil {
		return nil, err
	}
	head := fmt.Sprintf("%s apply %s (%s) on %s:", strings.ToUpper(verb[:1])+verb[1:], j.ID, j.Summary, t.where())
	fmt.Fprintln(out, strings.Join(render.Wrap(head, render.Width(out), "", "  "), "\n"))
	n, notes, err := undo(t, j, stateDir, opt.Force, opt.Hook, out)
	for _, s := range notes {
		j.event("%s", s)
	}
	res.Changed, res.Notes = n, notes
	if err != nil {
		j.State = StateRollbackFailed
		j.UndoError = err.Error()
		j.event("%s incomplete after %d actions: %v", verb, n, err)
		_ = writeJournal(stateDir, j)
		res.State = j.State
		return res, fmt.Errorf("%s of apply %s did not finish: %w; run `ctdoctor rollback %s` again once that is fixed", verb, j.ID, err, j.ID)
	}
	j.State = to
	j.UndoError = ""
	j.event("%s: %d actions restored and verified", displayState(to, false), n)
	if err := writeJournal(stateDir, j); err != nil {
		return nil, err
	}
	res.State = to
	fmt.Fprintf(out, "Apply %s is %s: %d actions restored and verified.\n", j.ID, displayState(to, false), n)
	return res, nil
}

func confirmByString(j *Journal) string {
	if j.ConfirmBy == nil {
		return "-"
	}
	return j.ConfirmBy.Format(time.RFC3339)
}

// hintOlder points to the newest older apply still in effect.
func hintOlder(out io.Writer, stateDir, id string) {
	ids, _ := listJournals(stateDir)
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] >= id {
			continue
		}
		j, err := readJournal(stateDir, ids[i])
		if err == nil && len(undoable(j)) > 0 && j.State != StateRolledBack && j.State != StateReverted {
			fmt.Fprintf(out, "The newest apply still in effect is %s (%s): ctdoctor rollback %s\n", j.ID, j.Summary, j.ID)
			return
		}
	}
}

// journalTarget is the root and namespace an apply ran in, as recorded
// (not re-resolved: a namespace name may point to another one now).
func journalTarget(j *Journal) (*target, error) {
	t := &target{root: j.Root, live: j.Root == "/", ns: j.NetNS}
	if !t.live {
		if st, err := os.Stat(t.root); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("the root directory of apply %s, %s, is gone", j.ID, t.root)
		}
	}
	switch {
	case t.ns.Path == "":
		t.name = "root " + t.root
	default:
		t.name = fmt.Sprintf("netns %s [%d]", t.ns.Spec, t.ns.Inode)
	}
	return t, nil
}

// laterConflicts refuses to undo j while a later apply still in effect
// changed one of the same paths: restoring j's previous value would undo
// part of it.
func laterConflicts(stateDir string, j *Journal) error {
	ids, err := listJournals(stateDir)
	if err != nil {
		return err
	}
	mine := map[string]bool{}
	for _, i := range undoable(j) {
		r := j.Actions[i]
		if r.Path != "" {
			mine[pathKey(j, r)] = true
		}
	}
	for _, id := range ids {
		if id <= j.ID {
			continue
		}
		l, err := readJournal(stateDir, id)
		if err != nil {
			return fmt.Errorf("a later apply: %w", err)
		}
		if l.State == StateRolledBack || l.State == StateReverted {
			continue
		}
		for _, i := range undoable(l) {
			r := l.Actions[i]
			if r.Path != "" && mine[pathKey(l, r)] {
				return fmt.Errorf("the later apply %s (%s) also changed %s: roll it back first (ctdoctor rollback %s)", l.ID, l.State, r.Path, l.ID)
			}
		}
	}
	return nil
}

// pathKey names a path in the place it was changed (per-namespace sysctls
// of two namespaces are different settings).
func pathKey(j *Journal, r ActionRecord) string {
	if r.Kind == tune.KindSysctl && r.Scope == tune.ScopeNetNS && j.NetNS.Path != "" {
		return fmt.Sprintf("netns %d %s", j.NetNS.Inode, r.Path)
	}
	return j.Root + " " + r.Path
}

// driftCheck refuses, before anything changes, to undo values changed
// since the apply wrote them.
func driftCheck(t *target, j *Journal) error {
	runtimeGone, nsGone := runtimeGone(t, j)
	var drift []string
	for _, i := range undoable(j) {
		r := j.Actions[i]
		a := j.Plan.Steps[r.Step].Actions[r.Action]
		file, nsPath := t.locate(r.Scope, a)
		switch a.Kind {
		case tune.KindSysctl, tune.KindModuleParam:
			if runtimeGone != "" || (nsPath != "" && nsPath == t.ns.Path && nsGone != "") {
				continue
			}
			cur, err := readValue(file, nsPath)
			if err != nil {
				return err
			}
			c := norm(cur)
			if c != norm(r.Prev.Value) && c != norm(a.Value) && (r.Wrote == "" || c != norm(r.Wrote)) {
				drift = append(drift, fmt.Sprintf("%s is %s now; the apply set %s; it was %s before", a.Path, c, norm(a.Value), norm(r.Prev.Value)))
			}
		case tune.KindFile:
			cur, err := readFileState(file)
			if err != nil {
				return err
			}
			ours := (a.Remove && cur.Absent) || (!a.Remove && !cur.Absent && string(cur.Content) == a.Value)
			if !ours && !sameFile(cur, r.Prev) {
				drift = append(drift, fmt.Sprintf("%s changed since the apply wrote it (now %s)", a.Path, describeFile(cur)))
			}
		}
	}
	if len(drift) > 0 {
		return fmt.Errorf("%w: refusing to roll back apply %s, nothing was changed:\n  %s\nput them back by hand, or pass --force to restore the values from before the apply anyway",
			ErrDrift, j.ID, strings.Join(drift, "\n  "))
	}
	return nil
}

// ErrTooLate is wrapped by Confirm's error for an apply already reverted.
var ErrTooLate = errors.New("too late to confirm")

// Confirm keeps apply id: the watchdog will not revert it.
func Confirm(id string, opt Options) (*Result, error) {
	stateDir := opt.stateDir()
	lk, err := lockState(stateDir, true, max(opt.LockWait, 10*time.Second), "confirm "+id)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	j, err := readJournal(stateDir, id)
	if err != nil {
		return nil, err
	}
	res := &Result{ID: id, State: j.State, ConfirmBy: j.ConfirmBy}
	switch {
	case j.State == StateApplied && j.ConfirmBy != nil:
		j.State = StateConfirmed
		late := ""
		if time.Now().After(*j.ConfirmBy) {
			late = " (after the window ended: the watchdog had not reverted it yet)"
		}
		j.event("confirmed by pid %d%s", os.Getpid(), late)
		if err := writeJournal(stateDir, j); err != nil {
			return nil, err
		}
		res.State = j.State
		return res, nil
	case j.State == StateConfirmed:
		res.NothingToDo = true
		return res, nil
	case j.State == StateApplied:
		res.NothingToDo = true
		res.Notes = append(res.Notes, "apply "+id+" was made without --confirm-within: there is nothing to confirm")
		return res, nil
	case j.State == StateReverted || j.State == StateReverting:
		return nil, fmt.Errorf("%w: apply %s was not confirmed by %s and is %s", ErrTooLate, id, confirmByString(j), displayState(j.State, false))
	}
	return nil, fmt.Errorf("apply %s is %s, not waiting for confirmation", id, displayState(j.State, false))
}

// WaitConfirm waits, after an apply with a confirm window, for the
// operator's answer (true keeps the changes), a confirmation from another
// shell, or the end of the window. A "no", a closed channel, a cancelled
// ctx or the end of the window reverts now (the watchdog would too).
func WaitConfirm(ctx context.Context, id string, answers <-chan bool, opt Options) (*Result, error) {
	stateDir := opt.stateDir()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		j, err := readJournal(stateDir, id)
		if err != nil {
			return nil, err
		}
		if j.State != StateApplied || j.ConfirmBy == nil {
			return &Result{ID: id, State: j.State}, nil
		}
		if !time.Now().Before(*j.ConfirmBy) {
			fmt.Fprintf(opt.out(), "\nNot confirmed by %s: reverting.\n", j.ConfirmBy.Local().Format(time.TimeOnly))
			return revert(context.WithoutCancel(ctx), stateDir, id, "not confirmed by the end of the window", opt)
		}
		select {
		case ok := <-answers:
			if ok {
				return Confirm(id, opt)
			}
			fmt.Fprintln(opt.out(), "Reverting.")
			return revert(context.WithoutCancel(ctx), stateDir, id, "the operator did not answer yes", opt)
		case <-ctx.Done():
			fmt.Fprintln(opt.out(), "\nInterrupted before confirming: reverting.")
			return revert(context.WithoutCancel(ctx), stateDir, id, "interrupted (a signal, or the terminal closed) before it was confirmed", opt)
		case <-tick.C:
		}
	}
}
