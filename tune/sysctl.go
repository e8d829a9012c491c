package tune

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Setting is one sysctl (or the hash size) to change, as the diagnosis
// proposes it: a conntrack setting by Name, with numbers, or any other
// sysctl by Key, with its values as text.
type Setting struct {
	// Name is the conntrack setting without prefix: "max", "hashsize",
	// "tcp_timeout_time_wait" (its key is Target.SysctlName's).
	Name     string
	Current  int64
	Proposed int64
	// Key is the full name of a sysctl outside conntrack's own
	// ("net.ipv4.ip_local_port_range"), set instead of Name; Value and
	// CurrentValue are then its values as the kernel prints them
	// (CurrentValue "" when unknown), and Global says it is one value for
	// the whole host rather than each network namespace's own.
	Key          string
	Value        string
	CurrentValue string
	Global       bool
	Finding      string
	Evidence     map[string]any
	Reason       string
	// CostBytes is the memory the new value may cost (sizing only).
	CostBytes int64
}

// key is the setting's sysctl name on the target.
func (s Setting) key(t Target) string {
	if s.Key != "" {
		return s.Key
	}
	return t.SysctlName(s.Name)
}

// values are the setting's current and proposed values as the kernel
// prints them ("-1" for a current value that was not read).
func (s Setting) values() (cur, val string) {
	if s.Key != "" {
		cur = s.CurrentValue
		if cur == "" {
			cur = "-1"
		}
		return cur, s.Value
	}
	return strconv.FormatInt(s.Current, 10), strconv.FormatInt(s.Proposed, 10)
}

// global reports whether the setting is one value for the whole host.
func (s Setting) global() bool {
	if s.Key != "" {
		return s.Global
	}
	return IsGlobal(s.Name)
}

// NetNSNotPersisted is the Persist of a step that sets a network
// namespace's own sysctl: the host's sysctl.d never reaches a namespace.
const NetNSNotPersisted = "not persisted: a namespace's own sysctls are set by whatever creates it (docker run --sysctl, a pod's securityContext.sysctls, the script that runs ip netns add)"

// Persistence file names. 90- sorts after distribution defaults (10-…,
// 50-…) and before the operator's usual 99- files; when one of those sets
// the same key, the plan's file is named to sort after it.
const (
	sysctlDFile      = "/etc/sysctl.d/90-ctdoctor-conntrack.conf"
	sysctlDLateFile  = "/etc/sysctl.d/99-zz-ctdoctor-conntrack.conf"
	modulesLoadFile  = "/etc/modules-load.d/ctdoctor-conntrack.conf"
	modprobeFile     = "/etc/modprobe.d/ctdoctor-conntrack.conf"
	fileHeader       = "# Written by ctdoctor apply: conntrack settings (ctdoctor rollback removes it).\n"
	hashsizeSettings = "hashsize"
)

// settingSteps turns sysctl and hash-size settings into steps: the live
// changes first, then how they persist (sysctl.d or sysctl.conf, the module
// loaded before systemd-sysctl runs, modprobe.d or the kernel command line
// for the hash size).
func settingSteps(t Target, settings []Setting) ([]Step, []Skipped, error) {
	var steps []Step
	var skipped []Skipped
	var persist []Setting // sysctls to persist in sysctl.d / sysctl.conf
	for _, s := range settings {
		cur, val := s.values()
		if norm(cur) == norm(val) {
			continue
		}
		if s.Name == hashsizeSettings && s.Key == "" {
			st, sk, err := hashsizeSteps(t, s)
			if err != nil {
				return nil, nil, err
			}
			steps = append(steps, st...)
			skipped = append(skipped, sk...)
			continue
		}
		name := s.key(t)
		scope, prefix := ScopeNetNS, t.Prefix()
		if s.global() {
			scope, prefix = ScopeGlobal, "" // written from the initial namespace
		}
		st := Step{Finding: s.Finding, Evidence: s.Evidence, Scope: scope, Key: name, Current: norm(cur), Proposed: norm(val),
			Title: fmt.Sprintf("set %s to %s (now %s)", name, norm(val), nowText(norm(cur))), Reason: s.Reason, CostBytes: s.CostBytes,
			Commands: []string{prefix + "sysctl -w " + sysctlArg(name, val)},
			Actions:  []Action{{Kind: KindSysctl, Path: SysctlPath(name), Expect: cur, Value: val}}}
		if scope == ScopeGlobal || t.Init {
			persist = append(persist, s)
		} else {
			st.Persist = NetNSNotPersisted
		}
		steps = append(steps, st)
	}
	if len(persist) > 0 {
		st, file, err := persistSysctls(t, persist)
		if err != nil {
			return nil, nil, err
		}
		for i := range st {
			st[i].Finding = persist[0].Finding
		}
		for i := range steps {
			if steps[i].Persist == "" && steps[i].Actions[0].Kind == KindSysctl {
				steps[i].Persist = file
			}
		}
		steps = append(steps, st...)
	}
	return steps, skipped, nil
}

// sysctlArg is name=value as a sysctl -w argument for a shell: bare when
// it needs no quoting, the value in double quotes when it is numbers and
// blanks (net.ipv4.ip_local_port_range="10000 65535", as the kernel
// documentation writes it), else single-quoted whole.
func sysctlArg(name, val string) string {
	a := name + "=" + val
	if shellQuote(a) == a {
		return a
	}
	if shellQuote(name) == name && strings.Trim(val, "0123456789 \t") == "" {
		return name + `="` + val + `"`
	}
	return shellQuote(a)
}

// norm compares sysctl values as the kernel prints them: fields separated
// by any whitespace ("32768\t60999" equals "32768 60999").
func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

// nowText is a current value for a title: "unknown" when it was not read
// (a bare listing holds no settings).
func nowText(cur string) string {
	if strings.HasPrefix(cur, "-") {
		return "unknown"
	}
	return cur
}

// persistSysctls writes the settings into the file that wins at boot, and
// returns the steps (none when the files already say so) and that file.
func persistSysctls(t Target, settings []Setting) ([]Step, string, error) {
	keys := make([]string, len(settings))
	values := map[string]string{}
	conntrackKeys := false // keys that exist only once the module is loaded
	for i, s := range settings {
		keys[i] = s.key(t)
		_, values[keys[i]] = s.values()
		conntrackKeys = conntrackKeys || s.Key == ""
	}
	lines, err := SysctlAssignments(t.Root, keys...)
	if err != nil {
		return nil, "", err
	}
	var steps []Step
	if t.Legacy {
		// Old systems read /etc/sysctl.conf only: edit it in place.
		st, err := editConf(t.Root, SysctlConf, keys, values)
		if err != nil {
			return nil, "", err
		}
		st.Reason = "this kernel's distribution reads sysctls from " + SysctlConf + " at boot"
		return appendStep(nil, st), SysctlConf, nil
	}
	file := sysctlDFile
	for _, l := range lines {
		if path.Base(l.File) >= path.Base(file) && l.File != file && l.File != sysctlDLateFile {
			file = sysctlDLateFile // a later file sets the key: sort after it
		}
	}
	var b strings.Builder
	b.WriteString(fileHeader)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, values[k])
	}
	st, err := fileStep(t.Root, file, b.String())
	if err != nil {
		return nil, "", err
	}
	st.Title = "persist " + strings.Join(keys, ", ") + " in " + file
	st.Reason = "sysctl.d files apply at boot in name order, the last to set a key wins"
	var notes []string
	for _, l := range lines {
		if l.File != file {
			notes = append(notes, fmt.Sprintf("%s:%d sets %s = %s", l.File, l.Line, l.Key, l.Value))
		}
	}
	if len(notes) > 0 {
		st.Reason += "; already set elsewhere (" + strings.Join(notes, "; ") + "), which " + path.Base(file) + " overrides"
	}
	steps = appendStep(steps, st)
	// A file that still applies after ours (sysctl.conf read last) is edited.
	files, err := SysctlFiles(t.Root)
	if err != nil {
		return nil, "", err
	}
	ours := slices.Index(files, file)
	for _, l := range lines {
		if i := slices.Index(files, l.File); ours >= 0 && i > ours || ours < 0 && l.File == SysctlConf {
			st, err := editConf(t.Root, l.File, keys, values)
			if err != nil {
				return nil, "", err
			}
			st.Reason = l.File + " is applied after " + file + " and would override it at boot"
			steps = appendStep(steps, st)
			break
		}
	}
	if m := t.Module; m.Loaded && !m.BuiltIn && !t.Legacy && conntrackKeys {
		if st, ok, err := modulesLoadStep(t); err != nil {
			return nil, "", err
		} else if ok {
			steps = appendStep(steps, st)
		}
	}
	return steps, file, nil
}

// modulesLoadStep makes the module load before systemd-sysctl runs, or the
// conntrack keys do not exist yet at boot and their values are lost.
func modulesLoadStep(t Target) (Step, bool, error) {
	for _, dir := range []string{"/etc/modules-load.d", "/run/modules-load.d", "/usr/lib/modules-load.d", "/lib/modules-load.d"} {
		ents, err := os.ReadDir(filepath.Join(t.Root, dir))
		if err != nil {
			continue
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(t.Root, dir, e.Name()))
			if err != nil {
				continue
			}
			for l := range strings.SplitSeq(string(b), "\n") {
				if strings.TrimSpace(l) == t.ModuleName() {
					return Step{}, false, nil
				}
			}
		}
	}
	st, err := fileStep(t.Root, modulesLoadFile, "# Written by ctdoctor apply: load conntrack before systemd-sysctl applies its settings.\n"+t.ModuleName()+"\n")
	if err != nil {
		return Step{}, false, err
	}
	st.Title = "load " + t.ModuleName() + " early at boot"
	st.Reason = "systemd-sysctl often runs before " + t.ModuleName() + " is loaded; its keys do not exist yet and the values in sysctl.d are lost"
	return st, true, nil
}

// hashsizeSteps resizes the hash table now and at boot.
func hashsizeSteps(t Target, s Setting) ([]Step, []Skipped, error) {
	mod := t.ModuleName()
	p := "/sys/module/" + mod + "/parameters/hashsize"
	cur := strconv.FormatInt(s.Current, 10)
	val := strconv.FormatInt(s.Proposed, 10)
	var steps []Step
	var skipped []Skipped
	liveAdded := false
	live := Step{Finding: s.Finding, Evidence: s.Evidence, Scope: ScopeGlobal, Key: p, Current: cur, Proposed: val,
		Title: fmt.Sprintf("resize the hash table to %s buckets (now %s)", val, cur), Reason: s.Reason, CostBytes: s.CostBytes,
		Commands: []string{"echo " + val + " > " + p},
		Actions:  []Action{{Kind: KindModuleParam, Path: p, Expect: cur, Value: val}}}
	switch {
	case !t.Module.Loaded:
		skipped = append(skipped, Skipped{Finding: s.Finding, What: "resize the hash table now", Reason: mod + " is not loaded: nothing to resize"})
	case t.Module.ParamsRO:
		skipped = append(skipped, Skipped{Finding: s.Finding, What: "resize the hash table now",
			Reason: p + " is read-only here (/sys mounted read-only, as in most containers): run the change on the host itself"})
	default:
		steps = append(steps, live)
		liveAdded = true
	}
	if t.Module.BuiltIn {
		skipped = append(skipped, Skipped{Finding: s.Finding, What: "persist the hash size",
			Reason: mod + " is built into this kernel: add " + mod + ".hashsize=" + val + " to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) — ctdoctor does not edit the boot loader"})
		if liveAdded {
			steps[0].Persist = "kernel command line " + mod + ".hashsize=" + val + " (by hand)"
		}
		return steps, skipped, nil
	}
	opts, err := ModuleOptions(t.Root, mod, "hashsize")
	if err != nil {
		return nil, nil, err
	}
	file := modprobeFile
	if t.Legacy {
		file = "/etc/modprobe.conf"
		if _, err := os.Stat(filepath.Join(t.Root, file)); errors.Is(err, fs.ErrNotExist) {
			file = "/etc/modprobe.d/ip_conntrack.conf"
		}
	}
	for _, o := range opts {
		if o.File != file && path.Base(o.File) > path.Base(file) {
			// modprobe takes the last option it reads: name ours after it.
			file = path.Join(path.Dir(file), "zz-"+path.Base(file))
		}
	}
	var content string
	if t.Legacy && file == "/etc/modprobe.conf" {
		st, err := editModprobe(t.Root, file, mod, val)
		if err != nil {
			return nil, nil, err
		}
		steps = appendStep(steps, st)
	} else {
		content = "# Written by ctdoctor apply: conntrack hash table size at module load.\noptions " + mod + " hashsize=" + val + "\n"
		st, err := fileStep(t.Root, file, content)
		if err != nil {
			return nil, nil, err
		}
		st.Title = "persist the hash size in " + file
		st.Reason = "a modprobe.d option only takes effect when the module is loaded, so the live value is written too"
		steps = appendStep(steps, st)
	}
	if liveAdded {
		steps[0].Persist = file
	}
	for i := range steps {
		steps[i].Finding, steps[i].Evidence = s.Finding, s.Evidence
	}
	return steps, skipped, nil
}

// appendStep appends st unless it has nothing to do.
func appendStep(steps []Step, st Step) []Step {
	if len(st.Actions) == 0 {
		return steps
	}
	return append(steps, st)
}

// fileStep creates or replaces a file with content; the step has no
// actions when the file already holds exactly that.
func fileStep(root, p, content string) (Step, error) {
	a := Action{Kind: KindFile, Path: p, Value: content, Mode: 0o644}
	st := Step{Scope: ScopeGlobal, Key: p, Proposed: content, Persist: p}
	b, err := os.ReadFile(filepath.Join(root, p))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		a.ExpectAbsent = true
		st.Current = "(absent)"
	case err != nil:
		return Step{}, fmt.Errorf("read %s: %w", p, err)
	default:
		a.Expect = string(b)
		st.Current = string(b)
		if string(b) == content {
			return Step{}, nil
		}
	}
	st.Commands = []string{fileCommand(p, content)}
	if d := path.Dir(p); d != "/etc" {
		st.Commands = append([]string{"mkdir -p " + shellQuote(d)}, st.Commands...)
	}
	st.Actions = []Action{a}
	return st, nil
}

// editConf replaces the assignments of keys in a sysctl.conf-format file
// (keeping everything else, including comments) and appends the keys it
// does not set.
func editConf(root, p string, keys []string, values map[string]string) (Step, error) {
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Step{}, fmt.Errorf("read %s: %w", p, err)
	}
	done := map[string]bool{}
	var out []string
	text := strings.TrimSuffix(string(b), "\n")
	if text != "" {
		for l := range strings.SplitSeq(text, "\n") {
			if parsed := parseSysctlConf([]byte(l)); len(parsed) == 1 {
				if v, ok := values[parsed[0].Key]; ok {
					out = append(out, fmt.Sprintf("%s = %s", parsed[0].Key, v))
					done[parsed[0].Key] = true
					continue
				}
			}
			out = append(out, l)
		}
	}
	for _, k := range keys {
		if !done[k] {
			out = append(out, fmt.Sprintf("%s = %s", k, values[k]))
		}
	}
	st, err := fileStep(root, p, strings.Join(out, "\n")+"\n")
	if err != nil {
		return Step{}, err
	}
	if len(st.Actions) > 0 {
		st.Title = "persist " + strings.Join(keys, ", ") + " in " + p
	}
	return st, nil
}

// editModprobe sets "options MOD hashsize=N" in an old single modprobe.conf.
func editModprobe(root, p, mod, val string) (Step, error) {
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		return Step{}, fmt.Errorf("read %s: %w", p, err)
	}
	var out []string
	found := false
	for l := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "options" && f[1] == mod {
			for i, kv := range f[2:] {
				if strings.HasPrefix(kv, "hashsize=") {
					f[2+i] = "hashsize=" + val
					found = true
				}
			}
			l = strings.Join(f, " ")
		}
		out = append(out, l)
	}
	if !found {
		out = append(out, "options "+mod+" hashsize="+val)
	}
	st, err := fileStep(root, p, strings.Join(out, "\n")+"\n")
	if err != nil {
		return Step{}, err
	}
	if len(st.Actions) > 0 {
		st.Title = "persist the hash size in " + p
	}
	return st, nil
}
