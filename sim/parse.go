package sim

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// maxScenarioBytes bounds a scenario file.
const maxScenarioBytes = 1 << 20

// maxNodes bounds the YAML nodes visited (aliases can multiply them).
const maxNodes = 100000

// maxErrors is how many problems one parse reports.
const maxErrors = 10

// LoadScenario reads a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxScenarioBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return ParseScenario(path, data)
}

// ParseScenario parses a scenario from YAML; file names the input in error
// messages, each of which gives the line and the field:
//
//	scenario.yaml:14: workloads[1].rate: "10k/s" — want a number of connections per second like 10000 or "10k"
func ParseScenario(file string, data []byte) (sc *Scenario, err error) {
	if len(data) > maxScenarioBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a scenario", file, maxScenarioBytes)
	}
	defer func() {
		if r := recover(); r != nil {
			sc, err = nil, fmt.Errorf("%s: malformed YAML (%v)", file, r)
		}
	}()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(file, data, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty scenario (want a mapping with name, duration and workloads)", file)
	}
	d := &decoder{file: file}
	sc = d.scenario(doc.Content[0])
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	if sc.Name == "" {
		base := filepath.Base(file)
		sc.Name = strings.TrimSuffix(base, filepath.Ext(base))
	}
	return sc, nil
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlError rewrites a YAML syntax error as file:line: message, with the
// line of the problem: yaml.v3 reports the line where the enclosing block
// starts (counted from 0) for most syntax errors, not the line the parser
// stopped at, so a mis-indented key deep in a list was reported at the
// list's first line.
func yamlError(file string, data []byte, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("%s: invalid YAML: %s", file, msg)
	}
	msg = m[2]
	if line := problemLine(data, msg); line > 0 {
		hint := ""
		if indentProblem(msg) {
			hint = indentHint(data, line)
		}
		return fmt.Errorf("%s:%d: invalid YAML: %s%s", file, line, msg, hint)
	}
	if m[1] != "" {
		return fmt.Errorf("%s:%s: invalid YAML: %s", file, m[1], msg)
	}
	return fmt.Errorf("%s: invalid YAML: %s", file, msg)
}

// yamlProblem is the message of a YAML syntax error without its line.
func yamlProblem(err error) string {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		return m[2]
	}
	return err.Error()
}

// problemLine returns the line (from 1) at which the parser meets the
// syntax error msg, 0 if it cannot tell. The document's first lines up to
// the problem parse; from its line on, the same error comes back: the
// first prefix of whole lines that fails with msg ends at the problem's
// line (a binary search: a few parses even of a long file).
func problemLine(data []byte, msg string) int {
	var ends []int // the end of each line
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	fails := func(k int) bool {
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[k-1]], &n)
		return err != nil && yamlProblem(err) == msg
	}
	if len(ends) == 0 || !fails(len(ends)) {
		return 0
	}
	lo, hi := 1, len(ends)
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// indentProblem tells the syntax errors a mis-indented line causes.
func indentProblem(msg string) bool {
	switch msg {
	case "did not find expected key", "did not find expected '-' indicator",
		"mapping values are not allowed in this context", "block sequence entries are not allowed in this context":
		return true
	}
	return false
}

// indentHint compares the indentation of the problem's line with the line
// above it (the nearest one with content): when the first line of a block
// is the mis-indented one, the parser only stops at the next.
func indentHint(data []byte, line int) string {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	indent := func(l string) (int, bool) {
		t := strings.TrimLeft(l, " ")
		if t == "" || strings.HasPrefix(t, "#") {
			return 0, false
		}
		return len(l) - len(t), true
	}
	cur, ok := indent(lines[line-1])
	if !ok {
		return ""
	}
	for i := line - 2; i >= 0; i-- {
		if prev, ok := indent(lines[i]); ok {
			if prev == cur {
				return ""
			}
			return fmt.Sprintf(" — check the indentation: this line has %d space%s, line %d has %d",
				cur, plural(int64(cur)), i+1, prev)
		}
	}
	return ""
}

type decoder struct {
	file  string
	errs  []error
	nodes int
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s", d.file, n.Line, msg))
}

// bad reports a value that does not parse: `path: "value" — want …`.
func (d *decoder) bad(n *yaml.Node, path, want string) {
	d.errf(n, path, "%s — want %s", quoteNode(n), want)
}

func quoteNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 60 {
		v = v[:60] + "…"
	}
	return strconv.Quote(v)
}

// resolve follows aliases and counts the nodes visited.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	d.nodes++
	if n == nil || n.Kind == yaml.AliasNode {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// fields walks a mapping, calling fn for each known key, and reports
// unknown and repeated keys.
func (d *decoder) fields(n *yaml.Node, path string, known []string, fn func(key string, v *yaml.Node, p string)) {
	n = d.resolve(n)
	if n.Kind != yaml.MappingNode {
		d.bad(n, path, "a mapping with the fields "+strings.Join(known, ", "))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if d.nodes > maxNodes {
			d.errf(n, path, "too many YAML nodes (aliases expanding?)")
			return
		}
		k, v := d.resolve(n.Content[i]), d.resolve(n.Content[i+1])
		key := k.Value
		p := key
		if path != "" {
			p = path + "." + key
		}
		if k.Kind != yaml.ScalarNode || !contains(known, key) {
			if k.Kind == yaml.ScalarNode && k.Value == "<<" {
				d.errf(k, path, "merge keys (<<) are not supported")
				continue
			}
			d.errf(k, path, "unknown field %s (want one of: %s)", quoteNode(k), strings.Join(known, ", "))
			continue
		}
		if seen[key] {
			d.errf(k, p, "given twice")
			continue
		}
		seen[key] = true
		if isNull(v) {
			continue // "field:" with no value: the default
		}
		fn(key, v, p)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// list calls fn for each element of a sequence (a single value counts as a
// one-element list when single is set).
func (d *decoder) list(n *yaml.Node, path string, single bool, fn func(i int, v *yaml.Node, p string)) {
	if n.Kind != yaml.SequenceNode {
		if single && n.Kind == yaml.ScalarNode {
			fn(0, n, path)
			return
		}
		d.bad(n, path, "a list")
		return
	}
	for i, e := range n.Content {
		if d.nodes > maxNodes {
			d.errf(n, path, "too many YAML nodes (aliases expanding?)")
			return
		}
		p := fmt.Sprintf("%s[%d]", path, i)
		if single {
			p = path
			if len(n.Content) > 1 {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
		}
		fn(i, d.resolve(e), p)
	}
}

func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.bad(n, path, want)
		return "", false
	}
	return strings.TrimSpace(n.Value), true
}

func (d *decoder) str(n *yaml.Node, path string) string {
	s, _ := d.scalar(n, path, "a string")
	return s
}

func (d *decoder) duration(n *yaml.Node, path string) time.Duration {
	const want = `a duration like "90s", "5m", "1h" or "2d"`
	s, ok := d.scalar(n, path, want)
	if !ok {
		return 0
	}
	v, err := ParseDuration(s)
	if err != nil {
		d.bad(n, path, want)
		return 0
	}
	return v
}

// ParseDuration parses a Go duration ("90s", "1h30m", "250ms") extended
// with days ("2d", "1d12h"); a bare 0 is zero. Negative durations are errors.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		days = time.Duration(n) * day
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 || s[0] == '+' {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return days + v, nil
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	s, ok := d.scalar(n, path, "true or false")
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true
	case "false", "no", "off":
		return false
	}
	d.bad(n, path, "true or false")
	return false
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int64) int64 {
	want := fmt.Sprintf("an integer from %d to %d", lo, hi)
	s, ok := d.scalar(n, path, want)
	if !ok {
		return 0
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < lo || v > hi {
		d.bad(n, path, want)
		return 0
	}
	return v
}

// ParseRate parses a number of connections per second: 500, 2.5, "10k", "1.5M".
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult > 1e9 {
		return 0, fmt.Errorf("bad rate %q", s)
	}
	return v * mult, nil
}

const wantRate = `a number of connections per second like 10000 or "10k"`

func (d *decoder) rateNumber(n *yaml.Node, path string) float64 {
	s, ok := d.scalar(n, path, wantRate)
	if !ok {
		return 0
	}
	v, err := ParseRate(s)
	if err != nil {
		d.bad(n, path, wantRate)
		return 0
	}
	return v
}

func (d *decoder) rate(n *yaml.Node, path string) Rate {
	if n.Kind == yaml.ScalarNode {
		return Rate{Kind: Constant, Value: d.rateNumber(n, path)}
	}
	if n.Kind != yaml.MappingNode {
		d.bad(n, path, wantRate+", a ramp {from, to} or a daily curve {peak, trough, peak_at}")
		return Rate{}
	}
	var r Rate
	got := map[string]bool{}
	d.fields(n, path, []string{"from", "to", "peak", "trough", "peak_at"}, func(key string, v *yaml.Node, p string) {
		got[key] = true
		switch key {
		case "from":
			r.From = d.rateNumber(v, p)
		case "to":
			r.To = d.rateNumber(v, p)
		case "peak":
			r.Peak = d.rateNumber(v, p)
		case "trough":
			r.Trough = d.rateNumber(v, p)
		case "peak_at":
			r.PeakAt = d.timeOfDay(v, p)
		}
	})
	ramp := got["from"] || got["to"]
	daily := got["peak"] || got["trough"] || got["peak_at"]
	switch {
	case ramp && daily:
		d.errf(n, path, "a ramp {from, to} or a daily curve {peak, trough, peak_at}, not both")
	case ramp:
		r.Kind = Ramp
		if !got["from"] || !got["to"] {
			d.errf(n, path, "a ramp needs both from and to")
		}
	case daily:
		r.Kind = Daily
		if !got["peak"] {
			d.errf(n, path, "a daily curve needs peak (and optionally trough, peak_at)")
		}
		if r.Trough > r.Peak {
			d.errf(n, path, "a daily curve's trough (%s) is above its peak (%s)", fmtRate(r.Trough), fmtRate(r.Peak))
		}
	default:
		if len(d.errs) == 0 {
			d.errf(n, path, "empty rate: want from/to or peak/trough/peak_at")
		}
	}
	return r
}

// timeOfDay parses "14:00", "14:30:00" or a duration since midnight ("14h").
func (d *decoder) timeOfDay(n *yaml.Node, path string) time.Duration {
	const want = `a time of day like "18:00" or a duration since midnight like "18h"`
	s, ok := d.scalar(n, path, want)
	if !ok {
		return 0
	}
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		if len(parts) > 3 {
			d.bad(n, path, want)
			return 0
		}
		var t time.Duration
		units := []time.Duration{time.Hour, time.Minute, time.Second}
		for i, p := range parts {
			v, err := strconv.Atoi(p)
			lim := 60
			if i == 0 {
				lim = 24
			}
			if err != nil || v < 0 || v >= lim {
				d.bad(n, path, want)
				return 0
			}
			t += time.Duration(v) * units[i]
		}
		return t
	}
	v, err := ParseDuration(s)
	if err != nil || v >= day {
		d.bad(n, path, want)
		return 0
	}
	return v
}

func (d *decoder) dist(n *yaml.Node, path string) Dist {
	if n.Kind == yaml.ScalarNode {
		return Dist{Mean: d.duration(n, path)}
	}
	const want = `a duration like "5ms", or {exponential: 5ms} or {fixed: 5ms}`
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		d.bad(n, path, want)
		return Dist{}
	}
	var r Dist
	d.fields(n, path, []string{"fixed", "exponential"}, func(key string, v *yaml.Node, p string) {
		r = Dist{Mean: d.duration(v, p), Exponential: key == "exponential"}
	})
	return r
}

func (d *decoder) share(n *yaml.Node, path string) float64 {
	const want = `a share like 0.05 or "5%"`
	s, ok := d.scalar(n, path, want)
	if !ok {
		return 0
	}
	div := 1.0
	if strings.HasSuffix(s, "%") {
		s, div = strings.TrimSpace(strings.TrimSuffix(s, "%")), 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || v/div < 0 || v/div > 1 {
		d.bad(n, path, want+" between 0 and 1")
		return 0
	}
	return v / div
}

// ParsePorts parses "8080", "8080-8087" into a range.
func ParsePorts(s string) (engine.PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil || a == 0 {
		return engine.PortRange{}, fmt.Errorf("bad port %q", s)
	}
	b := a
	if isRange {
		b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err != nil || b < a {
			return engine.PortRange{}, fmt.Errorf("bad port range %q", s)
		}
	}
	return engine.PortRange{Lo: uint16(a), Hi: uint16(b)}, nil
}

func (d *decoder) ports(n *yaml.Node, path string) engine.PortRange {
	const want = `a port like 8080 or a range like "8080-8087"`
	s, ok := d.scalar(n, path, want)
	if !ok {
		return engine.PortRange{}
	}
	r, err := ParsePorts(s)
	if err != nil {
		d.bad(n, path, want)
	}
	return r
}

// ParsePrefix parses "10.0.0.0/8" or a single address ("127.0.0.1").
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zoned address %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (d *decoder) prefix(n *yaml.Node, path string) netip.Prefix {
	const want = `an address like "10.0.0.1" or a prefix like "10.0.0.0/16"`
	s, ok := d.scalar(n, path, want)
	if !ok {
		return netip.Prefix{}
	}
	p, err := ParsePrefix(s)
	if err != nil || p.Addr().Is4In6() {
		d.bad(n, path, want)
		return netip.Prefix{}
	}
	return p
}

func (d *decoder) prefixes(n *yaml.Node, path string) []netip.Prefix {
	var out []netip.Prefix
	d.list(n, path, true, func(_ int, v *yaml.Node, p string) {
		if pf := d.prefix(v, p); pf.IsValid() {
			out = append(out, pf)
		}
	})
	if len(out) > 0 {
		fam := out[0].Addr().Is4()
		for _, p := range out {
			if p.Addr().Is4() != fam {
				d.errf(n, path, "mixes IPv4 and IPv6")
				return nil
			}
		}
	}
	return out
}

var scenarioFields = []string{"name", "description", "duration", "step", "seed", "cpus", "settings", "notrack", "workloads"}

func (d *decoder) scenario(n *yaml.Node) *Scenario {
	sc := &Scenario{Settings: map[string]int64{}}
	var durNode, stepNode, wlNode *yaml.Node
	d.fields(n, "", scenarioFields, func(key string, v *yaml.Node, p string) {
		switch key {
		case "name":
			sc.Name = d.str(v, p)
		case "description":
			sc.Description = d.str(v, p)
		case "duration":
			durNode = v
			sc.Duration = d.duration(v, p)
		case "step":
			stepNode = v
			sc.Step = d.duration(v, p)
		case "seed":
			s, ok := d.scalar(v, p, "an unsigned integer")
			if ok {
				x, err := strconv.ParseUint(s, 0, 64)
				if err != nil {
					d.bad(v, p, "an unsigned integer")
				}
				sc.Seed = x
			}
		case "cpus":
			sc.CPUs = int(d.integer(v, p, 1, 1024))
		case "settings":
			d.settings(v, p, sc.Settings)
		case "notrack":
			d.list(v, p, false, func(_ int, e *yaml.Node, ep string) {
				sc.NoTrack = append(sc.NoTrack, d.notrack(e, ep)...)
			})
		case "workloads":
			wlNode = v
			d.list(v, p, false, func(i int, e *yaml.Node, ep string) {
				w := d.workload(e, ep)
				if w.Name == "" {
					w.Name = fmt.Sprintf("workload%d", i+1)
				}
				sc.Workloads = append(sc.Workloads, w)
			})
		}
	})
	if n = d.resolve(n); n.Kind != yaml.MappingNode {
		return sc
	}
	switch {
	case durNode == nil:
		d.errf(n, "duration", "missing — want a duration like \"10m\" or \"1h\"")
	case sc.Duration <= 0 && len(d.errs) == 0:
		d.bad(durNode, "duration", "a positive duration like \"10m\"")
	case sc.Duration > 400*day:
		d.bad(durNode, "duration", "at most 400d")
	}
	if stepNode != nil && sc.Step != 0 {
		if sc.Step < time.Millisecond {
			d.bad(stepNode, "step", "at least 1ms")
		} else if sc.Duration > 0 && sc.Duration/sc.Step > 1_000_000 {
			d.bad(stepNode, "step", "at most a million samples: a longer step")
		}
	}
	if wlNode == nil {
		d.errf(n, "workloads", "missing — want a list of workloads")
	} else if len(sc.Workloads) == 0 && len(d.errs) == 0 {
		d.errf(wlNode, "workloads", "empty — want at least one workload")
	}
	if len(d.errs) == 0 {
		if sc.Step == 0 {
			sc.Step = defaultStep(sc.Duration)
		}
		if sc.CPUs == 0 {
			sc.CPUs = 1
		}
	}
	return sc
}

func (d *decoder) settings(n *yaml.Node, path string, out map[string]int64) {
	if n.Kind != yaml.MappingNode {
		d.bad(n, path, "a mapping of sysctl names to values, like nf_conntrack_max: 262144")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.resolve(n.Content[i]), d.resolve(n.Content[i+1])
		p := path + "." + k.Value
		if k.Kind != yaml.ScalarNode {
			d.bad(k, path, "a sysctl name")
			continue
		}
		name, err := engine.CanonicalSetting(k.Value)
		if err != nil {
			d.errf(k, p, "%v", err)
			continue
		}
		if _, dup := out[name]; dup {
			d.errf(k, p, "given twice (as %s)", name)
			continue
		}
		s, ok := d.scalar(v, p, "an integer")
		if !ok {
			continue
		}
		_, val, err := engine.ParseSetting(name + "=" + s)
		if err != nil {
			d.errf(v, p, "%v", err)
			continue
		}
		out[name] = val
	}
}

var notrackFields = []string{"hook", "iface", "proto", "src", "dst", "sport", "dport"}

// notrack reads one rule; without a hook it applies at both hooks (two rules).
func (d *decoder) notrack(n *yaml.Node, path string) []engine.NoTrackRule {
	var r engine.NoTrackRule
	hooks := []engine.Hook{engine.Prerouting, engine.Output}
	d.fields(n, path, notrackFields, func(key string, v *yaml.Node, p string) {
		switch key {
		case "hook":
			switch strings.ToLower(d.str(v, p)) {
			case "prerouting":
				hooks = []engine.Hook{engine.Prerouting}
			case "output":
				hooks = []engine.Hook{engine.Output}
			case "both":
			default:
				d.bad(v, p, "prerouting, output or both")
			}
		case "iface":
			r.Iface = d.str(v, p)
		case "proto":
			s := strings.ToLower(d.str(v, p))
			pr, ok := conntrack.ProtoByName(s)
			if !ok {
				d.bad(v, p, "a protocol name like tcp, udp or icmp")
			}
			r.Proto = pr
		case "src":
			r.Src = d.prefix(v, p)
		case "dst":
			r.Dst = d.prefix(v, p)
		case "sport":
			r.SPort = d.ports(v, p)
		case "dport":
			r.DPort = d.ports(v, p)
		}
	})
	if (r.SPort != engine.PortRange{} || r.DPort != engine.PortRange{}) && r.Proto != 0 && !r.Proto.HasPorts() {
		d.errf(n, path, "ports given for %s, which has none", r.Proto)
	}
	out := make([]engine.NoTrackRule, 0, 2)
	for _, h := range hooks {
		r.Hook = h
		out = append(out, r)
	}
	return out
}

var workloadFields = []string{"name", "proto", "rate", "start", "stop", "client", "server", "server_port",
	"client_ports", "iface", "host", "kind", "lifetime", "interval", "rtt", "closer", "unanswered",
	"syn_flood", "dns", "middlebox_idle_drop", "syn_retries"}

func (d *decoder) workload(n *yaml.Node, path string) Workload {
	w := Workload{Proto: conntrack.TCP, ClientCloses: true, SYNRetries: DefaultSYNRetries,
		Lifetime: Dist{Mean: time.Millisecond}}
	nodes := map[string]*yaml.Node{}
	before := len(d.errs)
	d.fields(n, path, workloadFields, func(key string, v *yaml.Node, p string) {
		nodes[key] = v
		switch key {
		case "name":
			w.Name = d.str(v, p)
		case "proto":
			s := strings.ToLower(d.str(v, p))
			switch s {
			case "tcp", "udp", "icmp":
				w.Proto, _ = conntrack.ProtoByName(s)
			default:
				d.bad(v, p, "tcp, udp or icmp")
			}
		case "rate":
			w.Rate = d.rate(v, p)
		case "start":
			w.Start = d.duration(v, p)
		case "stop":
			w.Stop = d.duration(v, p)
		case "client":
			w.Clients = d.prefixes(v, p)
		case "server":
			w.Servers = d.prefixes(v, p)
		case "server_port":
			w.ServerPorts = d.ports(v, p)
		case "client_ports":
			w.ClientPorts = d.ports(v, p)
		case "iface":
			w.Iface = d.str(v, p)
		case "host":
			switch strings.ToLower(d.str(v, p)) {
			case "server":
				w.Host = Server
			case "client":
				w.Host = Client
			case "router":
				w.Host = Router
			default:
				d.bad(v, p, "server, client or router (where this host sits on the path)")
			}
		case "kind":
			switch strings.ToLower(d.str(v, p)) {
			case "short":
				w.Kind = Short
			case "keepalive", "keep-alive":
				w.Kind = Keepalive
			default:
				d.bad(v, p, "short (one request per connection) or keepalive")
			}
		case "lifetime":
			w.Lifetime = d.dist(v, p)
		case "interval":
			w.Interval = d.dist(v, p)
		case "rtt":
			w.RTT = d.duration(v, p)
		case "closer":
			switch strings.ToLower(d.str(v, p)) {
			case "client":
				w.ClientCloses = true
			case "server":
				w.ClientCloses = false
			default:
				d.bad(v, p, "client or server (who sends the first FIN)")
			}
		case "unanswered":
			w.Unanswered = d.share(v, p)
		case "syn_flood":
			w.SYNFlood = d.boolean(v, p)
		case "dns":
			w.DNS = d.boolean(v, p)
		case "middlebox_idle_drop":
			w.MiddleboxIdleDrop = d.duration(v, p)
		case "syn_retries":
			w.SYNRetries = int(d.integer(v, p, 0, 15))
		}
	})
	if len(d.errs) > before {
		return w
	}
	if nodes["lifetime"] == nil && w.Kind == Keepalive {
		w.Lifetime = Dist{Mean: time.Minute}
	}
	if n = d.resolve(n); n.Kind != yaml.MappingNode {
		return w
	}
	// Cross-field checks, each reported at the field that breaks it.
	at := func(key string) *yaml.Node {
		if v := nodes[key]; v != nil {
			return v
		}
		return n
	}
	if w.SYNFlood && w.Proto == conntrack.TCP && len(w.Clients) == 0 {
		w.Clients = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		if len(w.Servers) > 0 && w.Servers[0].Addr().Is6() {
			w.Clients = []netip.Prefix{netip.MustParsePrefix("::/0")}
		}
	}
	if w.DNS && w.Proto == conntrack.TCP && nodes["proto"] == nil {
		w.Proto = conntrack.UDP
	}
	if nodes["rate"] == nil {
		d.errf(n, path+".rate", "missing — want "+wantRate)
	}
	if len(w.Clients) == 0 {
		d.errf(n, path+".client", `missing — want the clients' addresses, like "10.0.0.0/16"`)
	}
	if len(w.Servers) == 0 {
		d.errf(n, path+".server", `missing — want the servers' addresses, like "10.1.0.10"`)
	}
	if len(w.Clients) > 0 && len(w.Servers) > 0 && w.Clients[0].Addr().Is4() != w.Servers[0].Addr().Is4() {
		d.errf(at("server"), path+".server", "is %s but client is %s: use one family", family(w.Servers[0]), family(w.Clients[0]))
	}
	if w.Stop != 0 && w.Stop <= w.Start {
		d.errf(at("stop"), path+".stop", "%s is not after start (%s)", w.Stop, w.Start)
	}
	if w.SYNFlood && w.Proto != conntrack.TCP {
		d.errf(at("syn_flood"), path+".syn_flood", "needs proto tcp (is %s)", w.Proto)
	}
	if w.DNS && w.Proto != conntrack.UDP {
		d.errf(at("dns"), path+".dns", "needs proto udp (is %s)", w.Proto)
	}
	if w.Proto != conntrack.ICMP && w.ServerPorts == (engine.PortRange{}) && !w.DNS {
		d.errf(at("server_port"), path+".server_port", "missing — want the servers' port, like 443 or \"8080-8087\"")
	}
	if w.Proto == conntrack.ICMP && nodes["server_port"] != nil {
		d.errf(nodes["server_port"], path+".server_port", "icmp has no ports")
	}
	if w.MiddleboxIdleDrop > 0 && (w.Proto != conntrack.TCP || w.Kind != Keepalive) {
		d.errf(at("middlebox_idle_drop"), path+".middlebox_idle_drop", "needs a tcp keepalive workload (kind: keepalive)")
	}
	if nodes["interval"] != nil && w.Kind != Keepalive {
		d.errf(nodes["interval"], path+".interval", "applies to kind: keepalive only")
	}
	if w.Kind == Keepalive && w.Interval.Mean <= 0 && nodes["interval"] != nil {
		d.bad(nodes["interval"], path+".interval", "a positive duration")
	}
	if err := w.validate(); err != nil && len(d.errs) == before {
		d.errf(n, path, "%v", err)
	}
	return w
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}
