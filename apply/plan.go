package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ctdoctor/ctdoctor/tune"
)

// ErrBadPlan is wrapped by every error about a plan that cannot be
// applied as written: not JSON, truncated, another schema, or an action
// that is incomplete or unsafe.
var ErrBadPlan = errors.New("invalid plan")

// maxPlanSize bounds a plan file.
const maxPlanSize = 16 << 20

// ReadPlan decodes a plan (`ctdoctor plan -o json`) and validates it.
func ReadPlan(r io.Reader) (*tune.Plan, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPlanSize+1))
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	if len(b) > maxPlanSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadPlan, maxPlanSize)
	}
	var p tune.Plan
	if err := strictUnmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPlan, err)
	}
	if err := Validate(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ReadPlanFile reads a plan from a file ("-" is standard input).
func ReadPlanFile(path string) (*tune.Plan, error) {
	if path == "-" {
		p, err := ReadPlan(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("plan from standard input: %w", err)
		}
		return p, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	defer f.Close()
	p, err := ReadPlan(f)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// planHash identifies a plan's content: the SHA-256 of its JSON.
func planHash(p *tune.Plan) string {
	b, _ := json.Marshal(p)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// iptablesCommands are the programs an iptables action may run.
var iptablesCommands = map[string]bool{
	"iptables": true, "ip6tables": true,
	"iptables-legacy": true, "ip6tables-legacy": true,
	"iptables-nft": true, "ip6tables-nft": true,
}

var moduleParamPath = regexp.MustCompile(`^/sys/module/[A-Za-z0-9_]+/parameters/[A-Za-z0-9_]+$`)

// Validate checks a plan's shape: the schema, the host it names, and
// that every action is complete, in its scope and undoable. It reads
// nothing from the host.
func Validate(p *tune.Plan) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadPlan, fmt.Sprintf(format, args...))
	}
	if p.Schema != tune.PlanSchema {
		if p.Schema == "" {
			return bad("no schema field (want %q): is this the output of ctdoctor plan -o json?", tune.PlanSchema)
		}
		return bad("schema %q, this ctdoctor applies %q", p.Schema, tune.PlanSchema)
	}
	if p.ID == "" {
		return bad("no id")
	}
	if p.Host.Hostname == "" {
		return bad("host.hostname is empty: a plan must name the host it was made for")
	}
	seen := map[string]string{}
	for i, s := range p.Steps {
		where := fmt.Sprintf("step %d (%s)", i+1, s.Title)
		if s.Title == "" {
			return bad("step %d has no title", i+1)
		}
		switch s.Scope {
		case tune.ScopeGlobal:
			if !p.Global {
				return bad("%s has scope global, but the plan was made without global steps (global is false)", where)
			}
		case tune.ScopeNetNS:
		default:
			return bad("%s: scope %q, want %q or %q", where, s.Scope, tune.ScopeNetNS, tune.ScopeGlobal)
		}
		if len(s.Actions) == 0 {
			return bad("%s has no actions", where)
		}
		for k, a := range s.Actions {
			at := fmt.Sprintf("%s action %d (%s)", where, k+1, a.Kind)
			if err := validateAction(s.Scope, a); err != nil {
				return bad("%s: %v", at, err)
			}
			if a.Path != "" {
				if prev, dup := seen[a.Path]; dup {
					return bad("%s writes %s, which %s writes too: one action per path", at, a.Path, prev)
				}
				seen[a.Path] = at
			}
		}
	}
	return nil
}

func cleanAbs(p string) error {
	if p == "" {
		return errors.New("no path")
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsAny(p, "\x00\n") {
		return fmt.Errorf("path %q is not a clean absolute path", p)
	}
	return nil
}

func validateAction(scope string, a tune.Action) error {
	oneLine := func(what, v string) error {
		if strings.ContainsAny(v, "\n\x00") {
			return fmt.Errorf("%s %q spans lines", what, v)
		}
		return nil
	}
	switch a.Kind {
	case tune.KindSysctl, tune.KindModuleParam:
		if err := cleanAbs(a.Path); err != nil {
			return err
		}
		if a.Kind == tune.KindSysctl {
			if !strings.HasPrefix(a.Path, "/proc/sys/") {
				return fmt.Errorf("sysctl path %s is not under /proc/sys", a.Path)
			}
			if scope == tune.ScopeNetNS && !strings.HasPrefix(a.Path, "/proc/sys/net/") {
				return fmt.Errorf("%s is not a per-namespace setting (only /proc/sys/net is): its step must have scope global", a.Path)
			}
		} else {
			if !moduleParamPath.MatchString(a.Path) {
				return fmt.Errorf("module parameter path %s is not /sys/module/MODULE/parameters/NAME", a.Path)
			}
			if scope != tune.ScopeGlobal {
				return errors.New("a module parameter is global: its step must have scope global")
			}
		}
		if strings.TrimSpace(a.Value) == "" {
			return errors.New("no value to write")
		}
		if strings.TrimSpace(a.Expect) == "" {
			return errors.New("no expect (the value the plan saw): apply could not tell a stale plan")
		}
		if err := oneLine("value", a.Value); err != nil {
			return err
		}
		if a.ExpectAbsent || a.Remove || a.Script != "" || len(a.Argv) > 0 {
			return errors.New("only path, expect and value apply to this kind")
		}
	case tune.KindFile:
		if err := cleanAbs(a.Path); err != nil {
			return err
		}
		for _, pre := range []string{"/proc/", "/sys/", "/dev/", "/run/netns/"} {
			if strings.HasPrefix(a.Path+"/", pre) {
				return fmt.Errorf("%s is not a file apply writes (under %s)", a.Path, pre)
			}
		}
		if scope != tune.ScopeGlobal {
			return errors.New("a file is global: its step must have scope global")
		}
		if a.Remove && a.Value != "" {
			return errors.New("remove and value together")
		}
		if a.Remove && a.ExpectAbsent {
			return errors.New("removes a file it expects to be absent")
		}
		if a.ExpectAbsent && a.Expect != "" {
			return errors.New("expect_absent and expect together")
		}
		if a.Mode > 0o7777 {
			return fmt.Errorf("mode %o is not a permission mode", a.Mode)
		}
		if len(a.Value) > maxFileSize {
			return fmt.Errorf("content larger than %d bytes", maxFileSize)
		}
		if a.Script != "" || len(a.Argv) > 0 {
			return errors.New("script and argv do not apply to a file")
		}
	case tune.KindNft:
		if scope != tune.ScopeNetNS {
			return errors.New("an nft action changes a namespace's ruleset: its step must have scope netns")
		}
		if strings.TrimSpace(a.Script) == "" {
			return errors.New("no script")
		}
		if err := checkNftScript(a.Script); err != nil {
			return err
		}
		if a.Path != "" || a.Value != "" || len(a.Argv) > 0 {
			return errors.New("only script applies to an nft action")
		}
	case tune.KindIptables:
		if scope != tune.ScopeNetNS {
			return errors.New("an iptables action changes a namespace's ruleset: its step must have scope netns")
		}
		if len(a.Argv) < 2 || len(a.UndoArgv) < 2 {
			return errors.New("argv and undo_argv are both required")
		}
		for _, argv := range [][]string{a.Argv, a.UndoArgv} {
			if !iptablesCommands[argv[0]] {
				return fmt.Errorf("%q is not an iptables command (iptables, ip6tables, their -legacy and -nft forms)", argv[0])
			}
			for _, s := range argv {
				if strings.ContainsAny(s, "\n\x00") {
					return fmt.Errorf("argument %q spans lines", s)
				}
			}
		}
		if a.Path != "" || a.Value != "" || a.Script != "" {
			return errors.New("only argv and undo_argv apply to an iptables action")
		}
	case "":
		return errors.New("no kind")
	default:
		return fmt.Errorf("unknown kind %q (want sysctl, module-param, file, nft or iptables)", a.Kind)
	}
	return nil
}

// nftForbidden are nft commands whose effect the handles of what was
// added cannot undo: a plan may only add.
var nftForbidden = map[string]bool{
	"flush": true, "delete": true, "destroy": true, "replace": true, "reset": true,
	"rename": true, "include": true, "import": true, "export": true, "monitor": true, "list": true,
}

// checkNftScript refuses scripts that remove or replace anything.
func checkNftScript(script string) error {
	for n, line := range strings.Split(script, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 && !strings.Contains(line[:i], `"`) {
			line = line[:i]
		}
		for _, cmd := range strings.Split(line, ";") {
			f := strings.Fields(strings.Trim(strings.TrimSpace(cmd), "{}"))
			if len(f) > 0 && nftForbidden[f[0]] {
				return fmt.Errorf("script line %d: %q removes or replaces rules; a plan may only add (undo deletes exactly what it added)", n+1, strings.TrimSpace(cmd))
			}
		}
	}
	return nil
}

// summary is one line describing a plan.
func summary(p *tune.Plan) string {
	var titles []string
	for _, s := range p.Steps {
		titles = append(titles, s.Title)
	}
	n := len(p.Steps)
	word := "steps"
	if n == 1 {
		word = "step"
	}
	return fmt.Sprintf("%d %s: %s", n, word, strings.Join(titles, "; "))
}
