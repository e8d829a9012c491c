package tune

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// sysctlDirs are the directories systemd-sysctl reads, highest priority
// first: a file name in an earlier directory masks the same name in a later
// one. Files are then applied in lexical order of their names, and the last
// assignment of a key wins.
var sysctlDirs = []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"}

// SysctlConf is the classic single file, applied after the directories by
// `sysctl --system` (and on Debian through the /etc/sysctl.d/99-sysctl.conf
// link); on old systems it is the only one.
const SysctlConf = "/etc/sysctl.conf"

// SysctlLine is one assignment of a key in a sysctl configuration file.
type SysctlLine struct {
	File  string `json:"file"` // absolute path on the host
	Line  int    `json:"line"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// SysctlFiles returns the sysctl configuration files of the host under root
// in the order they are applied at boot (the last one to set a key wins),
// as absolute paths on the host. A link to a file already in the list (such
// as Debian's 99-sysctl.conf → ../sysctl.conf) is listed once, at its later
// position.
func SysctlFiles(root string) ([]string, error) {
	chosen := map[string]string{} // base name → host path
	for _, dir := range sysctlDirs {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", dir, err)
		}
		for _, e := range ents {
			name := e.Name()
			if !strings.HasSuffix(name, ".conf") {
				continue
			}
			if _, masked := chosen[name]; !masked {
				chosen[name] = path.Join(dir, name)
			}
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	slices.Sort(names)
	var files []string
	seen := map[string]int{} // resolved path → index in files
	add := func(p string) {
		real := resolve(root, p)
		if i, ok := seen[real]; ok {
			files = slices.Delete(files, i, i+1)
			for k, j := range seen {
				if j > i {
					seen[k] = j - 1
				}
			}
		}
		seen[real] = len(files)
		files = append(files, p)
	}
	for _, n := range names {
		add(chosen[n])
	}
	if _, err := os.Stat(filepath.Join(root, SysctlConf)); err == nil {
		add(SysctlConf)
	}
	return files, nil
}

// resolve returns the host path p points to after following links inside
// root (or p itself when it cannot be resolved).
func resolve(root, p string) string {
	for range 8 {
		target, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return p
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = path.Clean(target)
	}
	return p
}

// SysctlAssignments returns every assignment of the given keys in the
// host's sysctl configuration, in boot order: for each key, the last one
// is the value the host gets at boot. Keys are matched in both spellings
// (net.netfilter.x and net/netfilter/x).
func SysctlAssignments(root string, keys ...string) ([]SysctlLine, error) {
	files, err := SysctlFiles(root)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, k := range keys {
		want[normKey(k)] = true
	}
	var out []SysctlLine
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		for _, l := range parseSysctlConf(b) {
			if want[l.Key] {
				l.File = f
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// parseSysctlConf reads the key = value lines of a sysctl.conf-format file;
// comments (# or ;) and blank lines are skipped, a leading '-' (ignore
// errors) is dropped, keys are normalized to dots.
func parseSysctlConf(b []byte) []SysctlLine {
	var out []SysctlLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "-")
		out = append(out, SysctlLine{Line: n, Key: normKey(k), Value: strings.TrimSpace(v)})
	}
	return out
}

// normKey writes a sysctl key with dots: "net/netfilter/nf_conntrack_max"
// and "net.netfilter.nf_conntrack_max" are the same key. (systemd-sysctl
// swaps the separators when the first one is a slash.)
func normKey(k string) string {
	k = strings.TrimSpace(k)
	if i := strings.IndexAny(k, "./"); i >= 0 && k[i] == '/' {
		k = strings.ReplaceAll(k, "/", ".")
	}
	return k
}

// Winner returns, for each key, the assignment that takes effect at boot
// (the last one) among lines.
func Winner(lines []SysctlLine) map[string]SysctlLine {
	w := map[string]SysctlLine{}
	for _, l := range lines {
		w[l.Key] = l
	}
	return w
}

// ModprobeOption is one "options MODULE ... hashsize=N" in modprobe.d.
type ModprobeOption struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Module string `json:"module"`
	Param  string `json:"param"`
	Value  string `json:"value"`
}

var modprobeDirs = []string{"/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d"}

// ModuleOptions returns every "options module param=value" for module in
// the host's modprobe configuration (and /etc/modprobe.conf on old systems),
// in the order modprobe reads them (the last one wins).
func ModuleOptions(root, module, param string) ([]ModprobeOption, error) {
	chosen := map[string]string{}
	for _, dir := range modprobeDirs {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", dir, err)
		}
		for _, e := range ents {
			if n := e.Name(); strings.HasSuffix(n, ".conf") {
				if _, ok := chosen[n]; !ok {
					chosen[n] = path.Join(dir, n)
				}
			}
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	slices.Sort(names)
	files := make([]string, 0, len(names)+1)
	for _, n := range names {
		files = append(files, chosen[n])
	}
	if _, err := os.Stat(filepath.Join(root, "/etc/modprobe.conf")); err == nil {
		files = append(files, "/etc/modprobe.conf")
	}
	var out []ModprobeOption
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		n := 0
		for l := range strings.SplitSeq(string(b), "\n") {
			n++
			fields := strings.Fields(l)
			if len(fields) < 3 || fields[0] != "options" || fields[1] != module {
				continue
			}
			for _, kv := range fields[2:] {
				if strings.HasPrefix(kv, "#") {
					break
				}
				if k, v, ok := strings.Cut(kv, "="); ok && k == param {
					out = append(out, ModprobeOption{File: f, Line: n, Module: module, Param: param, Value: v})
				}
			}
		}
	}
	return out, nil
}

// ModuleState says how the conntrack module is present on a host.
type ModuleState struct {
	Name     string `json:"name"`     // nf_conntrack, or ip_conntrack on legacy kernels
	Loaded   bool   `json:"loaded"`   // /sys/module/NAME exists
	BuiltIn  bool   `json:"built_in"` // loaded but not a module (no initstate): persist hashsize on the kernel command line
	ParamsRO bool   `json:"params_read_only"`
}

// ReadModuleState looks at /sys/module/NAME under root.
func ReadModuleState(root, name string) ModuleState {
	m := ModuleState{Name: name}
	dir := filepath.Join(root, "/sys/module", name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return m
	}
	m.Loaded = true
	if _, err := os.Stat(filepath.Join(dir, "initstate")); errors.Is(err, fs.ErrNotExist) {
		m.BuiltIn = true
	}
	p := filepath.Join(dir, "parameters", "hashsize")
	if f, err := os.OpenFile(p, os.O_WRONLY, 0); err != nil {
		m.ParamsRO = true
	} else {
		f.Close()
	}
	return m
}
