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
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// tuned (the tuning daemon of RHEL, Fedora and their derivatives) applies
// a profile at boot, when it restarts and on `tuned-adm profile`: its
// [sysctl] unit writes sysctls, its [net] unit's nf_conntrack_hashsize
// (and a [sysfs] line for the parameter file) writes the conntrack hash
// size. With reapply_sysctl (the default) it then writes the sysctls of
// /run/sysctl.d, /etc/sysctl.d and /etc/sysctl.conf again, so a value
// persisted there still wins; the hash size is written every time.

// Where tuned keeps its state and profiles, as host paths.
const (
	tunedActiveFile = "/etc/tuned/active_profile"
	tunedMainConf   = "/etc/tuned/tuned-main.conf"
	tunedConfName   = "tuned.conf"
)

// tunedProfileDirs are the directories a profile is looked up in, first
// match wins: the operator's own before the packaged ones. tuned 2.24 and
// later keep profiles under …/profiles/NAME, older ones under …/NAME.
var tunedProfileDirs = []string{"/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned"}

// tunedMaxProfiles bounds the profiles one active profile may pull in
// through include= (tuned itself stops at files already loaded).
const tunedMaxProfiles = 64

// TunedSetting is one value the active tuned profile applies.
type TunedSetting struct {
	Profile string `json:"profile"` // the profile whose tuned.conf sets it
	File    string `json:"file"`    // that tuned.conf, as a host path
	Unit    string `json:"unit"`    // the unit (section) that sets it: "sysctl", "net", "sysfs" or a unit of that type
	Key     string `json:"key"`     // sysctl name (with dots), nf_conntrack_hashsize, or a /sys path
	Value   string `json:"value"`   // as written (it may carry tuned's > or < modifier, or a ${variable})
}

// Tuned is what tuned applies on a host: the active profile (with what it
// includes), the conntrack-related values it sets, and whether it puts the
// system's sysctl files back afterwards.
type Tuned struct {
	// Active are the names in /etc/tuned/active_profile (several are merged,
	// the later winning).
	Active []string `json:"active"`
	// Files are the tuned.conf files read, in the order tuned reads them (a
	// profile before those it includes; its own values then override
	// theirs).
	Files []string `json:"files"`
	// Sysctl are the [sysctl] values by sysctl name (dots); Hashsize is the
	// hash size it writes ([net] nf_conntrack_hashsize, or [sysfs] on the
	// parameter file), nil when none.
	Sysctl   map[string]TunedSetting `json:"sysctl,omitempty"`
	Hashsize *TunedSetting           `json:"hashsize,omitempty"`
	// Reapply is reapply_sysctl of /etc/tuned/tuned-main.conf (on unless
	// set off): tuned writes the system's sysctl files again after its own
	// values, except the names matching ReapplyExclude.
	Reapply        bool     `json:"reapply_sysctl"`
	ReapplyExclude []string `json:"reapply_sysctl_exclude,omitempty"`
	// Unresolved are profiles named (active or included) that were not
	// found, or use a tuned function ctdoctor does not evaluate.
	Unresolved []string `json:"unresolved,omitempty"`
}

// ReadTuned reads the active tuned profile of the host under root. It
// returns nil (and no error) when no profile is active. A profile that
// cannot be found is listed in Unresolved; only a file that exists and
// cannot be read is an error.
func ReadTuned(root string) (*Tuned, error) {
	b, err := os.ReadFile(filepath.Join(root, tunedActiveFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", tunedActiveFile, err)
	}
	names := strings.Fields(string(b))
	if len(names) == 0 {
		return nil, nil // tuned-adm off
	}
	tu := &Tuned{Active: names, Sysctl: map[string]TunedSetting{}, Reapply: true}
	if err := tu.readMain(root); err != nil {
		return nil, err
	}
	units := map[string]*tunedUnit{}
	var order []string
	var load func(names []string) error
	load = func(names []string) error {
		for _, name := range names {
			optional := strings.HasPrefix(name, "-")
			name = strings.TrimPrefix(name, "-")
			if name == "" {
				continue
			}
			if strings.Contains(name, "${") || !tunedSafeName.MatchString(name) {
				tu.Unresolved = append(tu.Unresolved, name)
				continue
			}
			file := tu.locate(root, name)
			if file == "" {
				if !optional {
					tu.Unresolved = append(tu.Unresolved, name)
				}
				continue
			}
			if len(tu.Files) >= tunedMaxProfiles {
				return fmt.Errorf("tuned profile %s: more than %d profiles included", name, tunedMaxProfiles)
			}
			tu.Files = append(tu.Files, file)
			data, err := os.ReadFile(filepath.Join(root, file))
			if err != nil {
				return fmt.Errorf("read tuned profile %s: %w", file, err)
			}
			secs := ParseTunedConf(data)
			for _, s := range secs {
				if s.Name == "main" {
					if inc, ok := s.get("include"); ok {
						if err := load(tunedListSep.Split(strings.TrimSpace(inc), -1)); err != nil {
							return err
						}
					}
				}
			}
			for _, s := range secs {
				if s.Name == "main" || s.Name == "variables" {
					continue
				}
				u := units[s.Name]
				if u == nil || s.flag("replace") {
					if u == nil {
						order = append(order, s.Name)
					}
					u = &tunedUnit{typ: s.Name, enabled: true}
					units[s.Name] = u
				}
				u.merge(s, name, file)
			}
		}
		return nil
	}
	if err := load(names); err != nil {
		return nil, err
	}
	for _, n := range order {
		u := units[n]
		if !u.enabled {
			continue
		}
		for _, o := range u.opts {
			switch {
			case u.typ == "sysctl":
				tu.Sysctl[normKey(o.Key)] = o
			case u.typ == "net" && o.Key == "nf_conntrack_hashsize",
				u.typ == "sysfs" && path.Clean(o.Key) == "/sys/module/nf_conntrack/parameters/hashsize":
				h := o
				tu.Hashsize = &h
			}
		}
	}
	return tu, nil
}

var (
	tunedSafeName = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
	tunedListSep  = regexp.MustCompile(`\s*[,;]\s*`)
)

// locate finds a profile's tuned.conf as tuned does (a regular file, the
// first directory that has one), skipping files already loaded: a profile
// under /etc/tuned that includes the packaged profile of the same name gets
// the packaged one. "" when there is none.
func (tu *Tuned) locate(root, name string) string {
	for _, d := range tunedProfileDirs {
		f := path.Join(d, name, tunedConfName)
		if slices.Contains(tu.Files, f) {
			continue
		}
		if st, err := os.Stat(filepath.Join(root, f)); err == nil && st.Mode().IsRegular() {
			return f
		}
	}
	return ""
}

// readMain reads reapply_sysctl and reapply_sysctl_exclude from
// tuned-main.conf (absent: tuned's defaults).
func (tu *Tuned) readMain(root string) error {
	b, err := os.ReadFile(filepath.Join(root, tunedMainConf))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", tunedMainConf, err)
	}
	for _, s := range ParseTunedConf(b) {
		if s.Name != "" {
			continue // the file has no sections; tuned reads it as one
		}
		if v, ok := s.get("reapply_sysctl"); ok {
			// tuned's boolean: 1, y, yes, t, true (any case) are on.
			switch strings.ToUpper(strings.TrimSpace(v)) {
			case "1", "Y", "YES", "T", "TRUE":
				tu.Reapply = true
			default:
				tu.Reapply = false
			}
		}
		if v, ok := s.get("reapply_sysctl_exclude"); ok {
			tu.ReapplyExclude = nil
			for p := range strings.SplitSeq(strings.NewReplacer(";", ",").Replace(v), ",") {
				if p = strings.TrimSpace(p); p != "" {
					tu.ReapplyExclude = append(tu.ReapplyExclude, p)
				}
			}
		}
	}
	return nil
}

// TunedSection is one [section] of a tuned.conf (Name "" for the lines
// before the first header), its options in file order.
type TunedSection struct {
	Name    string
	Options []TunedOption
}

// TunedOption is one key=value line of a tuned.conf.
type TunedOption struct {
	Key, Value string
	Line       int
}

func (s TunedSection) get(key string) (string, bool) {
	v, ok := "", false
	for _, o := range s.Options {
		if o.Key == key {
			v, ok = o.Value, true
		}
	}
	return v, ok
}

// flag is a unit's boolean option as tuned reads it (True, true or 1).
func (s TunedSection) flag(key string) bool {
	v, _ := s.get(key)
	return v == "True" || v == "true" || v == "1"
}

// ParseTunedConf reads a tuned.conf (or tuned-main.conf) the way tuned's
// ConfigParser does: [section] headers, key=value options (only '=' splits,
// keys keep their case), '#' and ';' comment lines, a '#' after whitespace
// starts an inline comment, indented lines continue the previous value.
// Lines it cannot read are skipped. A section given twice is one section.
func ParseTunedConf(b []byte) []TunedSection {
	var secs []TunedSection
	idx := map[string]int{}
	cur := -1
	section := func(name string) {
		if i, ok := idx[name]; ok {
			cur = i
			return
		}
		idx[name] = len(secs)
		cur = len(secs)
		secs = append(secs, TunedSection{Name: name})
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	last := -1 // index of the option a continuation line extends
	for sc.Scan() {
		n++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || line[0] == ';' {
			if line == "" {
				last = -1
			}
			continue
		}
		if i := inlineComment(line); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if raw[0] == ' ' || raw[0] == '\t' {
			if cur >= 0 && last >= 0 {
				o := &secs[cur].Options[last]
				o.Value = strings.TrimSpace(o.Value + "\n" + line)
				continue
			}
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section(strings.TrimSpace(line[1 : len(line)-1]))
			last = -1
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			last = -1
			continue
		}
		if cur < 0 {
			section("")
		}
		secs[cur].Options = append(secs[cur].Options, TunedOption{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v), Line: n})
		last = len(secs[cur].Options) - 1
	}
	return secs
}

// inlineComment returns where a '#' after whitespace starts a comment, or -1.
func inlineComment(s string) int {
	for i := 1; i < len(s); i++ {
		if s[i] == '#' && (s[i-1] == ' ' || s[i-1] == '\t') {
			return i
		}
	}
	return -1
}

// tunedUnit is one unit of the merged profile.
type tunedUnit struct {
	typ     string
	enabled bool
	opts    []TunedSetting // in order, one per key
}

// tunedReserved are a unit's own options, not values it applies.
var tunedReserved = map[string]bool{"type": true, "enabled": true, "replace": true, "prepend": true, "drop": true,
	"priority": true, "devices": true, "devices_udev_regex": true, "cpuinfo_regex": true, "uname_regex": true,
	"script_pre": true, "script_post": true}

// merge adds a later profile's section to the unit, as tuned's merger
// does: its options override, drop= removes earlier ones, enabled= and
// type= take the later value.
func (u *tunedUnit) merge(s TunedSection, profile, file string) {
	if t, ok := s.get("type"); ok {
		u.typ = t
	}
	if _, ok := s.get("enabled"); ok {
		u.enabled = s.flag("enabled")
	}
	if d, ok := s.get("drop"); ok {
		for _, k := range tunedListSep.Split(strings.TrimSpace(d), -1) {
			u.set(TunedSetting{Key: k}, true)
		}
	}
	for _, o := range s.Options {
		if tunedReserved[o.Key] {
			continue
		}
		u.set(TunedSetting{Profile: profile, File: file, Unit: s.Name, Key: o.Key, Value: o.Value}, false)
	}
}

func (u *tunedUnit) set(o TunedSetting, remove bool) {
	for i := range u.opts {
		if u.opts[i].Key == o.Key {
			u.opts = append(u.opts[:i], u.opts[i+1:]...)
			break
		}
	}
	if !remove {
		u.opts = append(u.opts, o)
	}
}

// excluded reports whether tuned leaves name out when it writes the
// system's sysctl files again (a shell pattern of reapply_sysctl_exclude).
func (tu *Tuned) excluded(name string) bool {
	for _, p := range tu.ReapplyExclude {
		if ok, _ := path.Match(p, name); ok || p == name {
			return true
		}
	}
	return false
}

// Owner says what the active tuned profile does to a conntrack setting
// the plan would change: skip is the reason the plan must leave it to
// tuned (tuned writes its own value after anything ctdoctor writes, every
// time the profile is applied), note a remark for a step that still works
// (tuned sets the key, but puts the sysctl.d value back afterwards). Both
// are empty when tuned does not touch the setting, or cannot: tuned runs
// in the initial network namespace, so a namespace's own timeouts are not
// its business.
func (tu *Tuned) Owner(t Target, setting string, proposed int64) (skip, note string) {
	if tu == nil || !t.Init && !IsGlobal(setting) {
		return "", ""
	}
	redo := "tuned-adm profile " + strings.Join(tu.Active, " ")
	if setting == hashsizeSettings {
		o := tu.Hashsize
		if s, ok := tu.Sysctl[t.SysctlName("buckets")]; ok && o == nil {
			o = &s // nf_conntrack_buckets is not in any sysctl.d file ctdoctor writes: tuned's value stays
		}
		if o == nil {
			return "", ""
		}
		return fmt.Sprintf("tuned owns it: profile %s sets %s=%s in %s ([%s]) and writes the hash size every time the profile is applied (boot, tuned restart), after modprobe.d and anything written now; %s, then run %s",
			o.Profile, o.Key, o.Value, o.File, o.Unit, tu.editHint(*o, strconv.FormatInt(proposed, 10)), redo), ""
	}
	name := t.SysctlName(setting)
	o, ok := tu.Sysctl[name]
	if !ok && setting == "max" {
		o, ok = tu.Sysctl["net.nf_conntrack_max"]
	}
	if !ok {
		return "", ""
	}
	return tu.owner(name, o, strconv.FormatInt(proposed, 10))
}

// OwnerKey is Owner for a sysctl outside conntrack's own, by its full name
// (net.ipv4.ip_local_port_range); global says it is one value for the
// whole host.
func (tu *Tuned) OwnerKey(t Target, key string, global bool, proposed string) (skip, note string) {
	if tu == nil || !t.Init && !global {
		return "", ""
	}
	o, ok := tu.Sysctl[key]
	if !ok {
		return "", ""
	}
	return tu.owner(key, o, proposed)
}

// owner says what tuned's setting o of the sysctl name means for a plan
// that sets it to proposed (see Owner).
func (tu *Tuned) owner(name string, o TunedSetting, proposed string) (skip, note string) {
	redo := "tuned-adm profile " + strings.Join(tu.Active, " ")
	if tu.Reapply && !tu.excluded(name) {
		return "", fmt.Sprintf("tuned profile %s also sets %s=%s in %s ([%s]), but tuned writes /etc/sysctl.d back after its own values (reapply_sysctl is on), so the value persisted here wins; to keep the two the same, %s",
			o.Profile, o.Key, o.Value, o.File, o.Unit, tu.editHint(o, proposed))
	}
	why := "reapply_sysctl is off in " + tunedMainConf
	if tu.Reapply {
		why = name + " is in reapply_sysctl_exclude of " + tunedMainConf
	}
	return fmt.Sprintf("tuned owns it: profile %s sets %s=%s in %s ([%s]) and writes it every time the profile is applied (boot, tuned restart), after sysctl.d (%s); %s, then run %s",
		o.Profile, o.Key, o.Value, o.File, o.Unit, why, tu.editHint(o, proposed), redo), ""
}

// editHint says which file to change: the profile's own file when it is
// the operator's, else a profile of the same name under /etc/tuned that
// includes the packaged one (package updates replace files under /usr/lib).
func (tu *Tuned) editHint(o TunedSetting, proposed string) string {
	line := o.Key + "=" + proposed
	if !strings.HasPrefix(o.File, "/usr/lib/") {
		return fmt.Sprintf("set %s in [%s] of %s", line, o.Unit, o.File)
	}
	dir := "/etc/tuned/"
	if strings.HasPrefix(o.File, "/usr/lib/tuned/profiles/") {
		dir = "/etc/tuned/profiles/"
	}
	return fmt.Sprintf("%s belongs to the tuned package (updates replace it): create %s%s/tuned.conf with [main] include=%s and [%s] %s (a profile there overrides the packaged one of the same name)",
		o.File, dir, o.Profile, o.Profile, o.Unit, line)
}

// withNote appends a note to a step's reason.
func withNote(reason, note string) string {
	switch {
	case note == "":
		return reason
	case reason == "":
		return note
	}
	return reason + "; " + note
}
