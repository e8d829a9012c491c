package apply

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/ctdoctor/ctdoctor/tune"
)

// ErrDrift is wrapped by the error for a value that changed since the
// apply wrote it: rollback restores it only with Force.
var ErrDrift = errors.New("changed since the apply")

// undoCtx is where an undo runs and what it may skip.
type undoCtx struct {
	t     *target
	force bool
	// skipRuntime: the host rebooted since the apply, so sysctls, module
	// parameters and rules are back to what the boot set; skipNS: the
	// namespace is gone (or is another one now).
	skipRuntime, skipNS string
}

// undo restores, in reverse order, every action of j that ran or may have
// run, verifying each. A value changed since the apply is left alone and
// reported (restored anyway with force); any other failure stops the undo
// there — later steps are undone only after the ones after them, so that
// an UNTRACKED accept rule never goes before the NOTRACK rules it covers.
func undo(t *target, j *Journal, stateDir string, force bool, hook func(HookPoint) error, out io.Writer) (n int, notes []string, err error) {
	u := &undoCtx{t: t, force: force}
	u.skipRuntime, u.skipNS = runtimeGone(t, j)
	var drift []string
	for k, i := range undoable(j) {
		r := &j.Actions[i]
		a := j.Plan.Steps[r.Step].Actions[r.Action]
		step := j.Plan.Steps[r.Step]
		if hook != nil {
			if err := hook(HookPoint{Phase: "undo", Index: k, Step: r.Step, Action: r.Action}); err != nil {
				return n, notes, err
			}
		}
		line := startProgressLine(out, fmt.Sprintf("undo step %d/%d", r.Step+1, len(j.Plan.Steps)), step.Title, undoLabel(a))
		note, err := u.action(j, r, a)
		if err != nil {
			if errors.Is(err, ErrDrift) {
				line.finish("left as is (changed since)")
				drift = append(drift, fmt.Sprintf("step %d: %v", r.Step+1, err))
				r.Error = err.Error()
				_ = writeJournal(stateDir, j)
				continue
			}
			line.finish("FAILED")
			r.Error = err.Error()
			_ = writeJournal(stateDir, j)
			return n, notes, fmt.Errorf("step %d (%s): %w", r.Step+1, step.Title, err)
		}
		if note != "" {
			notes = append(notes, fmt.Sprintf("step %d: %s", r.Step+1, note))
			line.finish(note)
		} else {
			line.finish("restored, verified")
			n++ // only what was actually restored counts
		}
		r.Status = ActUndone
		r.Error = ""
		if err := writeJournal(stateDir, j); err != nil {
			return n, notes, err
		}
	}
	if len(drift) > 0 {
		return n, notes, fmt.Errorf("%w, so left as is (restore with ctdoctor rollback --force %s):\n  %s", ErrDrift, j.ID, strings.Join(drift, "\n  "))
	}
	return n, notes, nil
}

// runtimeGone says why runtime actions (or the namespace's) cannot be
// undone: the host rebooted, or the namespace was deleted.
func runtimeGone(t *target, j *Journal) (runtime, ns string) {
	if j.BootID != "" {
		if now := t.bootID(); now != "" && now != j.BootID {
			runtime = "the host rebooted since the apply: runtime values are what the boot set"
		}
	}
	if t.ns.Path != "" {
		ino, err := statIno(t.ns.Path)
		switch {
		case err != nil:
			ns = fmt.Sprintf("network namespace %s is gone (%v)", t.ns.Spec, err)
		case ino != t.ns.Inode:
			ns = fmt.Sprintf("network namespace %s is another one now (inode %d, the apply's was %d)", t.ns.Spec, ino, t.ns.Inode)
		}
	}
	return runtime, ns
}

// action undoes one action; note says what was skipped and why.
func (u *undoCtx) action(j *Journal, r *ActionRecord, a tune.Action) (note string, err error) {
	file, nsPath := u.t.locate(r.Scope, a)
	runtime := a.Kind != tune.KindFile
	if runtime && u.skipRuntime != "" {
		return "not restored: " + u.skipRuntime, nil
	}
	if runtime && nsPath == u.t.ns.Path && nsPath != "" && u.skipNS != "" {
		return "nothing to restore: " + u.skipNS, nil
	}
	switch a.Kind {
	case tune.KindSysctl, tune.KindModuleParam:
		return u.value(r, a, file, nsPath)
	case tune.KindFile:
		return u.file(r, a, file)
	case tune.KindNft:
		return u.nft(r, nsPath)
	case tune.KindIptables:
		return u.iptables(r, a, nsPath)
	}
	return "", fmt.Errorf("unknown kind %q", a.Kind)
}

func (u *undoCtx) value(r *ActionRecord, a tune.Action, file, nsPath string) (string, error) {
	cur, err := readValue(file, nsPath)
	if err != nil {
		return "", err
	}
	prev := r.Prev.Value
	switch {
	case norm(cur) == norm(prev):
		if r.Status != ActDone {
			return "unchanged (it had not run)", nil
		}
		return "already " + norm(prev), nil
	case norm(cur) == norm(a.Value) || (r.Wrote != "" && norm(cur) == norm(r.Wrote)):
	case u.force:
	default:
		return "", fmt.Errorf("%w: %s is %s now; the apply set %s and it was %s before", ErrDrift, a.Path, norm(cur), norm(a.Value), norm(prev))
	}
	// Write the recorded bytes as they were (under a fake root the file is
	// then byte for byte what it was).
	err = inNS(nsPath, func() error {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		_, werr := f.Write([]byte(prev))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		return werr
	})
	if err != nil {
		return "", fmt.Errorf("restore %s to %s: %w", a.Path, norm(prev), err)
	}
	back, err := readValue(file, nsPath)
	if err != nil {
		return "", err
	}
	if norm(back) != norm(prev) {
		return "", fmt.Errorf("restored %s to %s but it reads back %s", a.Path, norm(prev), norm(back))
	}
	return "", nil
}

func (u *undoCtx) file(r *ActionRecord, a tune.Action, file string) (string, error) {
	cur, err := readFileState(file)
	if err != nil {
		return "", err
	}
	prev := r.Prev
	if sameFile(cur, prev) {
		removeCreatedDirs(prev.CreatedDirs)
		if r.Status != ActDone {
			return "unchanged (it had not run)", nil
		}
		return "already as it was", nil
	}
	ours := (a.Remove && cur.Absent) || (!a.Remove && !cur.Absent && string(cur.Content) == a.Value)
	if !ours && !u.force {
		return "", fmt.Errorf("%w: %s is now %s, not what the apply wrote", ErrDrift, a.Path, describeFile(cur))
	}
	if prev.Absent {
		err = removeFile(file)
	} else {
		err = writeFileAtomic(file, prev.Content, osMode(prev.Mode), prev.UID, prev.GID)
	}
	if err != nil {
		return "", fmt.Errorf("restore %s: %w", a.Path, err)
	}
	removeCreatedDirs(prev.CreatedDirs)
	back, err := readFileState(file)
	if err != nil {
		return "", err
	}
	if !sameFile(back, prev) {
		return "", fmt.Errorf("restored %s but it reads back %s, want %s", a.Path, describeFile(back), describeFile(prev))
	}
	return "", nil
}

// removeCreatedDirs removes the directories an action created, innermost
// first, while they are empty.
func removeCreatedDirs(dirs []string) {
	for _, d := range slices.Backward(dirs) {
		if os.Remove(d) == nil {
			_ = syncDir(parentDir(d))
		}
	}
}

func parentDir(d string) string {
	i := strings.LastIndexByte(strings.TrimRight(d, "/"), '/')
	if i <= 0 {
		return "/"
	}
	return d[:i]
}

// nft deletes exactly what the batch added: the objects of its echo
// output (by handle, in the same table) that still exist, in reverse, in
// one batch; then checks that none is left.
func (u *undoCtx) nft(r *ActionRecord, nsPath string) (string, error) {
	objs := r.Nft.Objects
	if !r.Nft.Echoed {
		// interrupted before the echo was read: nft wrote it to the file
		b, err := os.ReadFile(r.Nft.EchoFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parsed, complete, perr := parseEcho(b)
		before, berr := os.ReadFile(r.Nft.Before)
		if berr != nil {
			return "", fmt.Errorf("the ruleset recorded before the batch: %w", berr)
		}
		if perr != nil || !complete {
			// nft's own output is missing: did the batch commit?
			now, _, err := listRuleset(nsPath)
			if err != nil {
				return "", err
			}
			added, err := newSince(before, now)
			if err != nil {
				return "", err
			}
			if len(added) == 0 {
				return "unchanged (the nft batch had not committed)", nil
			}
			return "", fmt.Errorf("the nft batch may have committed but its output (%s) is incomplete, so what it added is not known exactly; these appeared since it started: %s — delete those that are ctdoctor's by hand, then run rollback again",
				r.Nft.EchoFile, strings.Join(added, "; "))
		}
		brs, err := parseRuleset(before)
		if err != nil {
			return "", err
		}
		setTableHandles(parsed, brs)
		objs = parsed
		r.Nft.Objects, r.Nft.Echoed = parsed, true
	}
	if len(objs) == 0 {
		return "nothing to delete: the batch added nothing", nil
	}
	_, now, err := listRuleset(nsPath)
	if err != nil {
		return "", err
	}
	if f := foreign(objs, now); len(f) > 0 {
		return "", fmt.Errorf("someone added to what the apply created since: %s; deleting the apply's tables and chains would delete those too — remove them by hand (or move them), then roll back again",
			strings.Join(f, "; "))
	}
	script, gone := undoScript(objs, now)
	if script != "" {
		if err := runCmd(nsPath, []string{"nft", "-f", "-"}, script, nil); err != nil {
			return "", fmt.Errorf("delete what the batch added: %w", err)
		}
	}
	_, after, err := listRuleset(nsPath)
	if err != nil {
		return "", err
	}
	for _, o := range objs {
		if after.has(o) {
			return "", fmt.Errorf("%s is still in the ruleset after deleting it", o)
		}
	}
	if len(gone) > 0 && script == "" {
		return "nothing to delete: what the batch added is already gone", nil
	}
	return "", nil
}

func (u *undoCtx) iptables(r *ActionRecord, a tune.Action, nsPath string) (string, error) {
	present, known := iptPresent(nsPath, a.Argv)
	if r.Status != ActDone {
		// interrupted or failed: did the command run?
		switch {
		case !known || r.Iptables == nil || r.Iptables.PresentBefore:
			return "", fmt.Errorf("cannot tell whether %q ran (an identical rule existed before, or the command is not -A/-I): check by hand and run %q if it did",
				strings.Join(a.Argv, " "), strings.Join(a.UndoArgv, " "))
		case !present:
			return "unchanged (the command had not run)", nil
		}
	} else if known && !present {
		return "", fmt.Errorf("%w: the rule %q is no longer there", ErrDrift, strings.Join(a.Argv, " "))
	}
	if err := runCmd(nsPath, a.UndoArgv, "", nil); err != nil {
		return "", err
	}
	if known && r.Iptables != nil && !r.Iptables.PresentBefore {
		if p, _ := iptPresent(nsPath, a.Argv); p {
			return "", fmt.Errorf("%s ran but the rule is still there", strings.Join(a.UndoArgv, " "))
		}
	}
	return "", nil
}
