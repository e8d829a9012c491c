package apply

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/tune"
)

// ErrStale is wrapped by the error for a plan whose expected values no
// longer hold: something changed the host since the plan was made. The
// message names every step that changed.
var ErrStale = errors.New("plan is stale")

// ErrScope is wrapped by the error for a plan with global steps applied
// without Options.Global (--global).
var ErrScope = errors.New("plan changes global settings")

// ErrPending is wrapped by the error when an earlier apply must be dealt
// with first: interrupted (kill -9, a crash), failed with its undo
// incomplete, or awaiting confirmation.
var ErrPending = errors.New("an earlier apply is not finished")

// Checked is a plan checked against the host: every action's current
// value, and whether it is still to do or already at its target.
type Checked struct {
	Plan *tune.Plan
	// AlreadyApplied is the id of an apply of this same plan that is still
	// in effect: applying it again changes nothing.
	AlreadyApplied string

	t       *target
	hash    string
	actions []*checked
}

// checked is one action with what the host holds now.
type checked struct {
	step, action int
	scope        string
	a            tune.Action
	file, nsPath string
	todo         bool   // false: already at the proposed value
	cur          string // sysctl, module parameter: as read
	curFile      *Prev  // file
}

// Todo reports how many actions would change something, and how many
// are already at their proposed value.
func (c *Checked) Todo() (todo, already int) {
	for _, x := range c.actions {
		if x.todo {
			todo++
		} else {
			already++
		}
	}
	return
}

// Check checks a plan against the host without changing anything: the
// plan's shape, the privileges a live host needs, the host identity,
// the scope, and every action's current value against what the plan
// expected (ErrStale naming each step that changed). nft scripts are
// validated with nft --check. It does not look at the journals.
func Check(p *tune.Plan, opt Options) (*Checked, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	t, err := resolveTarget(p.Host.NetNS, opt.Root)
	if err != nil {
		return nil, err
	}
	return check(p, t, opt, "")
}

// check checks p against t; inEffect is the id of an apply of the same
// plan still in effect: its nft and iptables actions count as done.
func check(p *tune.Plan, t *target, opt Options, inEffect string) (*Checked, error) {
	if err := t.checkPrivileges(p, "apply"); err != nil {
		return nil, err
	}
	if err := t.checkHost(p.Host); err != nil {
		return nil, err
	}
	var global []string
	for i, s := range p.Steps {
		if s.Scope == tune.ScopeGlobal {
			global = append(global, fmt.Sprintf("%d (%s)", i+1, s.Title))
		}
	}
	if len(global) > 0 && !opt.Global {
		return nil, fmt.Errorf("%w for the whole host, not only %s — step %s; pass --global to apply them; nothing was changed",
			ErrScope, t.name, strings.Join(global, ", step "))
	}
	c := &Checked{Plan: p, t: t, hash: planHash(p), AlreadyApplied: inEffect}
	var stale []string
	for i, s := range p.Steps {
		for k, a := range s.Actions {
			x := &checked{step: i, action: k, scope: s.Scope, a: a}
			x.file, x.nsPath = t.locate(s.Scope, a)
			where := fmt.Sprintf("step %d (%s)", i+1, s.Title)
			if len(s.Actions) > 1 {
				where += fmt.Sprintf(" action %d", k+1)
			}
			msg, err := x.classify(t, inEffect != "")
			if err != nil {
				return nil, fmt.Errorf("%s: %w; nothing was changed", where, err)
			}
			if msg != "" {
				stale = append(stale, where+": "+msg)
			}
			c.actions = append(c.actions, x)
		}
	}
	if len(stale) > 0 {
		return nil, fmt.Errorf("%w: the host changed since the plan was made (%s):\n  %s\nnothing was changed; make a new plan (ctdoctor plan)",
			ErrStale, p.CreatedAt.Format(time.RFC3339), strings.Join(stale, "\n  "))
	}
	return c, nil
}

// classify reads the action's current value: todo, already done, or
// stale (msg says how). err is for what cannot be checked at all.
func (x *checked) classify(t *target, inEffect bool) (msg string, err error) {
	a := x.a
	switch a.Kind {
	case tune.KindSysctl, tune.KindModuleParam:
		if err := checkNoSymlinks(t.root, a.Path); err != nil {
			return "", err
		}
		x.cur, err = readValue(x.file, x.nsPath)
		if err != nil {
			return "", err
		}
		switch norm(x.cur) {
		case norm(a.Value):
			return "", nil // already done
		case norm(a.Expect):
			x.todo = true
		default:
			return fmt.Sprintf("%s is %s, the plan expected %s (and would set %s)", a.Path, norm(x.cur), norm(a.Expect), norm(a.Value)), nil
		}
		if why := writableHere(x.file, x.nsPath); why != "" {
			return "", fmt.Errorf("%s cannot be written here: %s", a.Path, why)
		}
	case tune.KindFile:
		if err := checkNoSymlinks(t.root, a.Path); err != nil {
			return "", err
		}
		x.curFile, err = readFileState(x.file)
		if err != nil {
			return "", err
		}
		cur := x.curFile
		switch {
		case a.Remove && cur.Absent, !a.Remove && !cur.Absent && string(cur.Content) == a.Value:
			return "", nil // already done
		case a.ExpectAbsent && cur.Absent, !a.ExpectAbsent && !cur.Absent && string(cur.Content) == a.Expect:
			x.todo = true
		case a.ExpectAbsent:
			return fmt.Sprintf("%s exists now (%s), the plan expected no file", a.Path, describeFile(cur)), nil
		case cur.Absent:
			return fmt.Sprintf("%s no longer exists, the plan expected it with %d bytes", a.Path, len(a.Expect)), nil
		default:
			return fmt.Sprintf("%s changed (%s; the plan expected %d bytes)", a.Path, describeFile(cur), len(a.Expect)), nil
		}
	case tune.KindNft, tune.KindIptables:
		if x.nsPath == "" {
			return "", fmt.Errorf("%s changes need a live network namespace, and the plan's (%q) is read through the root %s", a.Kind, t.ns.Spec, t.root)
		}
		x.todo = !inEffect
		if inEffect {
			return "", nil // the same plan is applied: nothing to run, nothing to check
		}
		if a.Kind == tune.KindNft {
			if _, err := exec.LookPath("nft"); err != nil {
				return "", errors.New("nft is not installed (apt-get install nftables)")
			}
			if err := runCmd(x.nsPath, []string{"nft", "--check", "-f", "-"}, a.Script, nil); err != nil {
				return "", fmt.Errorf("nft rejects the script (nft --check): %w", err)
			}
			return "", nil
		}
		for _, argv := range [][]string{a.Argv, a.UndoArgv} {
			if _, err := exec.LookPath(argv[0]); err != nil {
				return "", fmt.Errorf("%s is not installed", argv[0])
			}
		}
	}
	return "", nil
}

// iptCheckArgv turns an iptables -A/-I command into its -C form (is the
// rule there?); nil when it is not a rule insertion.
func iptCheckArgv(argv []string) []string {
	out := []string{argv[0]}
	found := false
	for i := 1; i < len(argv); i++ {
		s := argv[i]
		switch {
		case !found && (s == "-A" || s == "--append"):
			out = append(out, "-C")
			found = true
		case !found && (s == "-I" || s == "--insert"):
			out = append(out, "-C")
			found = true
			if i+2 < len(argv) && isDigits(argv[i+2]) {
				out = append(out, argv[i+1])
				i += 2
				continue
			}
		default:
			out = append(out, s)
		}
	}
	if !found {
		return nil
	}
	return out
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// iptPresent runs the -C form of argv in nsPath: whether the rule exists.
func iptPresent(nsPath string, argv []string) (present, known bool) {
	c := iptCheckArgv(argv)
	if c == nil {
		return false, false
	}
	return runCmd(nsPath, c, "", nil) == nil, true
}

// fileMode is the mode a new file gets.
func fileMode(a tune.Action) uint32 {
	if a.Mode == 0 {
		return 0o644
	}
	return a.Mode
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
