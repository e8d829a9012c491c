package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/tune"
)

// run applies a checked plan: journal first, then each action with its
// previous value recorded and fsynced before it runs, verified after.
func run(ctx context.Context, c *Checked, opt Options, stateDir string) (*Result, error) {
	out := opt.out()
	now := time.Now()
	t := c.t
	j := &Journal{
		Schema:     JournalSchema,
		ID:         newID(now),
		State:      StateApplying,
		PlanID:     c.Plan.ID,
		PlanSHA256: c.hash,
		Summary:    summary(c.Plan),
		Root:       t.root,
		NetNS:      t.ns,
		BootID:     t.bootID(),
		PID:        os.Getpid(),
		CreatedAt:  now.UTC(),
		Plan:       c.Plan,
	}
	if opt.ConfirmWithin > 0 {
		by := now.Add(opt.ConfirmWithin).UTC()
		j.ConfirmBy = &by
	}
	todo, already := c.Todo()
	for _, x := range c.actions {
		r := ActionRecord{Step: x.step, Action: x.action, Kind: x.a.Kind, Scope: x.scope, Path: x.a.Path, Status: ActPending}
		if !x.todo {
			r.Status = ActSkipped
		}
		j.Actions = append(j.Actions, r)
	}
	dir := applyDir(stateDir, j.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal directory: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	j.event("apply started by pid %d: %d changes, %d already in place", os.Getpid(), todo, already)
	if err := writeJournal(stateDir, j); err != nil {
		return nil, err
	}
	res := &Result{ID: j.ID, Skipped: already, ConfirmBy: j.ConfirmBy}
	fmt.Fprintln(out)
	for _, l := range render.Wrap(fmt.Sprintf("Applying as %s (journal %s)", j.ID, journalPath(stateDir, j.ID)), render.Width(out), "", "  ") {
		fmt.Fprintln(out, l)
	}
	if j.ConfirmBy != nil {
		wd, err := startWatchdog(stateDir, j, opt.Watchdog)
		if err != nil {
			j.State = StateFailed
			j.Error = fmt.Sprintf("start the watchdog: %v", err)
			j.event("nothing changed: %s", j.Error)
			_ = writeJournal(stateDir, j)
			return nil, fmt.Errorf("%w: could not start the watchdog that reverts unless confirmed: %w; nothing was changed", ErrFailed, err)
		}
		j.Watchdog = wd
		j.event("watchdog started (%s): reverts at %s unless confirmed", wd.describe(), j.ConfirmBy.Format(time.RFC3339))
		if err := writeJournal(stateDir, j); err != nil {
			return nil, err
		}
		res.Watchdog = wd
	}
	hook := func(hp HookPoint) error {
		if opt.Hook == nil {
			return nil
		}
		return opt.Hook(hp)
	}
	k := 0
	for i, x := range c.actions {
		if !x.todo {
			continue
		}
		r := &j.Actions[i]
		step := c.Plan.Steps[x.step]
		line := startProgressLine(out, fmt.Sprintf("step %d/%d", x.step+1, len(c.Plan.Steps)), step.Title, label(x.a))
		hp := HookPoint{Phase: "before", Index: k, Step: x.step, Action: x.action}
		err := ctx.Err()
		if err == nil {
			err = prepare(t, x, r, j, stateDir)
		}
		if err == nil {
			r.Status = ActStarted
			err = writeJournal(stateDir, j)
		}
		phase := phasePrep
		if err == nil {
			phase = phaseBefore
			err = hook(hp)
		}
		if err == nil {
			phase = phaseDo
			err = do(x, r)
		}
		if err == nil {
			phase = phaseAfter
			hp.Phase = "after"
			err = hook(hp)
		}
		if err == nil {
			err = verify(x, r)
		}
		if err == nil {
			r.Status = ActDone
			err = writeJournal(stateDir, j)
		}
		if err != nil {
			line.finish("FAILED")
			return nil, fail(t, j, i, phase, err, stateDir, out)
		}
		line.finish("done, verified")
		res.Changed++
		k++
	}
	if err := hook(HookPoint{Phase: "end", Index: k}); err != nil {
		return nil, fail(t, j, -1, phaseAfter, err, stateDir, out)
	}
	j.State = StateApplied
	j.event("applied and verified: %d changes", res.Changed)
	if err := writeJournal(stateDir, j); err != nil {
		return nil, err
	}
	res.State = j.State
	return res, nil
}

// How far an action got when something failed.
const (
	phasePrep   = iota // before it was journaled as started: nothing ran
	phaseBefore        // journaled as started, not run
	phaseDo            // running it failed
	phaseAfter         // it ran; what failed came after
)

// fail records why action i failed, undoes every action that ran, in
// reverse, and returns the error saying what happened.
func fail(t *target, j *Journal, i, phase int, cause error, stateDir string, out io.Writer) error {
	where := "the final journal update"
	if i >= 0 {
		r := &j.Actions[i]
		r.Error = cause.Error()
		step := j.Plan.Steps[r.Step]
		where = fmt.Sprintf("step %d (%s)", r.Step+1, step.Title)
		switch {
		case phase == phasePrep || phase == phaseBefore:
			r.Status = ActPending // nothing ran
		case phase == phaseDo && r.Kind == tune.KindIptables:
			r.Status = ActPending // one command, and it failed
		case phase == phaseDo && r.Kind == tune.KindNft && !changedAnything(r):
			r.Status = ActPending // one batch: all or nothing
		default:
			r.Status = ActFailed // it may have happened: undo looks
		}
	}
	j.Error = fmt.Sprintf("%s failed: %v", where, cause)
	j.event("%s; undoing", j.Error)
	_ = writeJournal(stateDir, j)
	fmt.Fprintf(out, "%s\nUndoing what was done, in reverse…\n", j.Error)
	n, notes, err := undo(t, j, stateDir, false, nil, out)
	for _, s := range notes {
		j.event("%s", s)
	}
	j.State = StateFailed
	if err != nil {
		j.UndoError = err.Error()
		j.event("undo incomplete: %v", err)
		_ = writeJournal(stateDir, j)
		return fmt.Errorf("%w: %s; undoing it did not finish: %v; run `ctdoctor rollback %s` once that is fixed (journal %s)",
			ErrFailed, j.Error, err, j.ID, journalPath(stateDir, j.ID))
	}
	j.event("undid %d actions and verified: the host is as before", n)
	if werr := writeJournal(stateDir, j); werr != nil {
		return fmt.Errorf("%w: %s; undid %d actions, but the journal could not be updated: %v", ErrFailed, j.Error, n, werr)
	}
	return fmt.Errorf("%w: %s; undid the %d completed actions in reverse and verified: the host is as it was (apply %s)", ErrFailed, j.Error, n, j.ID)
}

// changedAnything reports whether a failed nft action left objects (its
// echo output lists some).
func changedAnything(r *ActionRecord) bool {
	if r.Nft == nil {
		return false
	}
	b, err := os.ReadFile(r.Nft.EchoFile)
	if err != nil {
		return false
	}
	objs, _, _ := parseEcho(b)
	return len(objs) > 0
}

// prepare re-reads the action's path right before it runs (it must still
// hold what Check saw) and records the previous state in r.
func prepare(t *target, x *checked, r *ActionRecord, j *Journal, stateDir string) error {
	a := x.a
	switch a.Kind {
	case tune.KindSysctl, tune.KindModuleParam:
		cur, err := readValue(x.file, x.nsPath)
		if err != nil {
			return err
		}
		if norm(cur) != norm(x.cur) {
			return fmt.Errorf("%s changed while applying (now %s, was %s)", a.Path, norm(cur), norm(x.cur))
		}
		r.Prev = &Prev{Value: cur}
	case tune.KindFile:
		cur, err := readFileState(x.file)
		if err != nil {
			return err
		}
		if !sameFile(cur, x.curFile) {
			return fmt.Errorf("%s changed while applying", a.Path)
		}
		if !a.Remove {
			var missing []string
			for d := filepath.Dir(x.file); !exists(d); d = filepath.Dir(d) {
				missing = append([]string{d}, missing...)
			}
			cur.CreatedDirs = missing
		}
		r.Prev = cur
	case tune.KindNft:
		before, _, err := listRuleset(x.nsPath)
		if err != nil {
			return err
		}
		bf := filepath.Join(applyDir(stateDir, j.ID), fmt.Sprintf("nft-%d-%d.before.json", r.Step+1, r.Action+1))
		if err := writeFileAtomic(bf, before, 0o600, -1, -1); err != nil {
			return fmt.Errorf("record the ruleset: %w", err)
		}
		r.Nft = &NftRecord{
			EchoFile: filepath.Join(applyDir(stateDir, j.ID), fmt.Sprintf("nft-%d-%d.echo", r.Step+1, r.Action+1)),
			Before:   bf,
		}
	case tune.KindIptables:
		present, _ := iptPresent(x.nsPath, a.Argv)
		r.Iptables = &IptablesRecord{PresentBefore: present}
	}
	return nil
}

// do carries out one action.
func do(x *checked, r *ActionRecord) error {
	a := x.a
	switch a.Kind {
	case tune.KindSysctl, tune.KindModuleParam:
		rb, err := writeValue(x.file, x.nsPath, a.Value)
		r.Wrote = rb
		return err
	case tune.KindFile:
		if a.Remove {
			return removeFile(x.file)
		}
		for _, d := range r.Prev.CreatedDirs {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			if err := syncDir(filepath.Dir(d)); err != nil {
				return err
			}
		}
		mode, uid, gid := osMode(fileMode(a)), -1, -1
		if !r.Prev.Absent {
			mode, uid, gid = osMode(r.Prev.Mode), r.Prev.UID, r.Prev.GID
		}
		return writeFileAtomic(x.file, []byte(a.Value), mode, uid, gid)
	case tune.KindNft:
		// nft writes its echo straight into the journal directory, so what
		// it added is on disk even if ctdoctor dies while it runs.
		f, err := os.OpenFile(r.Nft.EchoFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := runCmd(x.nsPath, []string{"nft", "--echo", "--handle", "-f", "-"}, a.Script, f); err != nil {
			return err
		}
		return f.Sync()
	case tune.KindIptables:
		return runCmd(x.nsPath, a.Argv, "", nil)
	}
	return fmt.Errorf("unknown kind %q", a.Kind)
}

// verify reads back what an action did.
func verify(x *checked, r *ActionRecord) error {
	a := x.a
	switch a.Kind {
	case tune.KindSysctl, tune.KindModuleParam:
		if norm(r.Wrote) != norm(a.Value) {
			return fmt.Errorf("wrote %s to %s but it reads back %s (the kernel adjusted or refused it)", a.Value, a.Path, norm(r.Wrote))
		}
	case tune.KindFile:
		cur, err := readFileState(x.file)
		if err != nil {
			return err
		}
		if a.Remove {
			if !cur.Absent {
				return fmt.Errorf("%s still exists after removing it", a.Path)
			}
			return nil
		}
		if cur.Absent || !bytes.Equal(cur.Content, []byte(a.Value)) {
			return fmt.Errorf("%s does not read back what was written", a.Path)
		}
		want := fileMode(a)
		if !r.Prev.Absent {
			want = r.Prev.Mode
		}
		if cur.Mode != want {
			return fmt.Errorf("%s has mode %04o after writing, want %04o", a.Path, cur.Mode, want)
		}
	case tune.KindNft:
		return verifyNft(x.nsPath, r)
	case tune.KindIptables:
		if present, known := iptPresent(x.nsPath, a.Argv); known && !present {
			return fmt.Errorf("%s succeeded but iptables -C does not find the rule", strings.Join(a.Argv, " "))
		}
	}
	return nil
}

// verifyNft reads what the batch added from nft's echo output and checks
// that each object is in the ruleset, recording their handles.
func verifyNft(nsPath string, r *ActionRecord) error {
	b, err := os.ReadFile(r.Nft.EchoFile)
	if err != nil {
		return err
	}
	objs, complete, err := parseEcho(b)
	if err != nil {
		return err
	}
	if len(objs) == 0 && len(bytes.TrimSpace(b)) == 0 {
		// nft succeeded and echoed nothing: everything it adds existed
		r.Nft.Echoed = true
		return nil
	}
	if !complete {
		return errors.New("nft --echo output is incomplete (no new-generation line)")
	}
	before, err := os.ReadFile(r.Nft.Before)
	if err != nil {
		return err
	}
	brs, err := parseRuleset(before)
	if err != nil {
		return err
	}
	setTableHandles(objs, brs)
	r.Nft.Objects, r.Nft.Echoed = objs, true
	_, now, err := listRuleset(nsPath)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.Kind != "element" && !now.has(o) {
			return fmt.Errorf("nft reported adding %s, but it is not in the ruleset", o)
		}
	}
	return nil
}

// setTableHandles fills each object's table handle: the batch's own for a
// table it created, else the one the table had before the batch.
func setTableHandles(objs []NftObject, before *ruleset) {
	created := map[string]uint64{}
	for _, o := range objs {
		if o.Kind == "table" {
			created[o.Family+" "+o.Table] = o.Handle
		}
	}
	for i := range objs {
		k := objs[i].Family + " " + objs[i].Table
		if h, ok := created[k]; ok {
			objs[i].TableHandle = h
		} else {
			objs[i].TableHandle = before.tables[k]
		}
	}
}
