package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/sim"
)

func simulate(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(append([]string{"simulate"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestSimulateList(t *testing.T) {
	code, out, errs := simulate(t, "--list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, b := range sim.Builtins() {
		if !strings.Contains(out, b.Name) {
			t.Errorf("--list lacks %s:\n%s", b.Name, out)
		}
	}
	if !strings.Contains(out, "TIME_WAIT fills the table") {
		t.Errorf("--list has no descriptions:\n%s", out)
	}
	code, out, _ = simulate(t, "--list", "-o", "json")
	var list []struct{ Name, Description string }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != len(sim.Builtins()) {
		t.Errorf("--list -o json: exit %d, %d items:\n%s", code, len(list), out)
	}
}

// simJSON is the part of the JSON result the tests read.
type simJSON struct {
	Schema   string           `json:"schema"`
	Scenario string           `json:"scenario"`
	Max      int              `json:"max"`
	Settings map[string]int64 `json:"settings"`
	Summary  struct {
		Verdict          string   `json:"verdict"`
		Full             bool     `json:"full"`
		FirstDropSeconds *float64 `json:"first_drop_seconds"`
		Peak             int      `json:"peak"`
		Drop             uint64   `json:"drop"`
		Steady           struct {
			Total int            `json:"total"`
			TCP   map[string]int `json:"tcp"`
		} `json:"steady"`
	} `json:"summary"`
	Timeline []map[string]float64 `json:"timeline"`
	Report   *analyze.Report      `json:"report"`
}

func TestSimulateNginxJSON(t *testing.T) {
	code, out, errs := simulate(t, "nginx-local-upstream", "--duration", "3m", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r simJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Schema != sim.Schema || r.Scenario != "nginx-local-upstream" || r.Max != 65536 || r.Settings["nf_conntrack_tcp_timeout_time_wait"] != 120 {
		t.Errorf("header: %+v", r)
	}
	// 3 minutes sampled every second (the step derived from --duration), t=0 included.
	if len(r.Timeline) != 181 || r.Timeline[180]["time_s"] != 180 {
		t.Fatalf("%d samples, last at %v s", len(r.Timeline), r.Timeline[len(r.Timeline)-1]["time_s"])
	}
	// The scenario's arithmetic: 500 upstream connections/s and 150 visitor
	// connections/s (open ~30 s, then closed) all end in TIME_WAIT for 120 s,
	// so before any expires the table holds about 650 × t entries: it
	// reaches 65,536 at about 100 s.
	if !r.Summary.Full || r.Summary.FirstDropSeconds == nil {
		t.Fatalf("the table should fill: %+v", r.Summary)
	}
	if at := *r.Summary.FirstDropSeconds; at < 90 || at > 110 {
		t.Errorf("first drop at %.1f s, want ~100 s", at)
	}
	if r.Summary.Peak > r.Max || r.Summary.Drop == 0 {
		t.Errorf("peak %d (max %d), drop %d", r.Summary.Peak, r.Max, r.Summary.Drop)
	}
	if tw := r.Summary.Steady.TCP["TIME_WAIT"]; float64(tw) < 0.85*float64(r.Summary.Steady.Total) {
		t.Errorf("TIME_WAIT %d of %d: the seeds' case is TIME_WAIT-dominated", tw, r.Summary.Steady.Total)
	}
	for i, s := range r.Timeline {
		if s["total"] > float64(r.Max) {
			t.Fatalf("sample %d: total %v above the max", i, s["total"])
		}
	}
}

func TestSimulateText(t *testing.T) {
	code, out, errs := simulate(t, "nginx-local-upstream", "--duration", "3m")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(out, "\n")
	verdict := ""
	for _, l := range lines[:6] {
		if strings.Contains(l, "FULL") {
			verdict = l
		}
	}
	if !strings.Contains(verdict, "table full at 00:01:") || !strings.Contains(verdict, "packets dropped") {
		t.Errorf("the verdict must come first:\n%s", out)
	}
	for _, want := range []string{"TIME_WAIT", "ESTABLISHED", "Counters   drop", "Entries over time", "drops", "┄┄ nf_conntrack_max 65,536", "upstream  tcp short 500/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour codes when stdout is not a terminal")
	}
	for _, l := range lines {
		if n := len([]rune(l)); n > 80 && !strings.HasPrefix(l, "Workloads") && !strings.HasPrefix(l, "           ") && !strings.HasPrefix(l, "ctdoctor simulate") {
			t.Errorf("line of %d columns on an 80-column default: %q", n, l)
		}
	}
	// The fix: NOTRACK on lo leaves only the visitors' entries.
	code, out, _ = simulate(t, "nginx-local-upstream-notrack", "--duration", "3m")
	if code != 0 || !strings.Contains(out, "table never fills") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestSimulateCompare(t *testing.T) {
	code, out, errs := simulate(t, "nginx-local-upstream", "--duration", "3m", "--compare", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=30", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var c struct {
		Schema   string           `json:"schema"`
		Changes  map[string]int64 `json:"changes"`
		Diff     sim.Diff         `json:"diff"`
		Current  simJSON          `json:"current"`
		Proposed simJSON          `json:"proposed"`
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	if c.Schema != sim.CompareSchema || c.Changes["nf_conntrack_tcp_timeout_time_wait"] != 30 || c.Proposed.Settings["nf_conntrack_tcp_timeout_time_wait"] != 30 {
		t.Errorf("changes %v, proposed settings %v", c.Changes, c.Proposed.Settings)
	}
	if !c.Current.Summary.Full || c.Proposed.Summary.Full {
		t.Errorf("current full %v, proposed full %v: a 30 s TIME_WAIT holds 650 × 30 ≈ 19,500 entries, far below 65,536",
			c.Current.Summary.Full, c.Proposed.Summary.Full)
	}
	// 650 closed connections/s × 30 s.
	if tw := float64(c.Proposed.Summary.Steady.TCP["TIME_WAIT"]); tw < 0.9*650*30 || tw > 1.1*650*30 {
		t.Errorf("proposed TIME_WAIT %v, want ~19,500", tw)
	}
	if c.Diff.FirstDropCurrent == nil || c.Diff.FirstDropProposed != nil || c.Diff.Drop >= 0 || c.Diff.Peak >= 0 {
		t.Errorf("diff %+v", c.Diff)
	}
	if !strings.HasPrefix(c.Diff.Verdict, "the change prevents the drops") {
		t.Errorf("diff verdict %q", c.Diff.Verdict)
	}

	code, out, _ = simulate(t, "nginx-local-upstream", "--duration", "3m", "--compare", "nf_conntrack_tcp_timeout_time_wait=30")
	for _, want := range []string{"BETTER", "current", "proposed", "first drop", "never", "TIME_WAIT", "the change prevents the drops"} {
		if !strings.Contains(out, want) {
			t.Errorf("compare text lacks %q (exit %d):\n%s", want, code, out)
		}
	}
}

func TestSimulateSVG(t *testing.T) {
	for _, args := range [][]string{
		{"syn-flood", "--duration", "150s"},
		{"nginx-local-upstream", "--duration", "150s", "--compare", "nf_conntrack_max=131072"},
	} {
		path := filepath.Join(t.TempDir(), "chart.svg")
		code, out, errs := simulate(t, append(args, "--svg", path)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		if !strings.Contains(out, "Chart written to "+path) {
			t.Errorf("no mention of the chart:\n%s", out)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(bytes.NewReader(data))
		var root string
		elems := map[string]int{}
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%v: not well-formed XML: %v", args, err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				if root == "" {
					root = se.Name.Local
					if se.Name.Space != "http://www.w3.org/2000/svg" {
						t.Errorf("root namespace %q", se.Name.Space)
					}
				}
				elems[se.Name.Local]++
			}
		}
		if root != "svg" || elems["polyline"] < 2 || elems["text"] < 5 {
			t.Errorf("%v: root %q, elements %v", args, root, elems)
		}
		if !bytes.Contains(data, []byte(`stroke-dasharray`)) {
			t.Errorf("%v: no dashed max line", args)
		}
	}
}

func TestSimulateReportFindings(t *testing.T) {
	code, out, errs := simulate(t, "nginx-local-upstream", "--duration", "3m", "--report")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"Diagnosis of the simulated table", "timewait-dominant", "loopback-tracked", "entries from simulation", "nft add rule inet ctdoctor_raw output oif lo notrack"} {
		if !strings.Contains(out, want) {
			t.Errorf("--report lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = simulate(t, "nginx-local-upstream", "--duration", "3m", "--report", "-o", "json")
	var r simJSON
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Report == nil {
		t.Fatalf("exit %d, report %v", code, r.Report)
	}
	if r.Report.Schema != analyze.Schema || r.Report.Host.Source != "simulation" || r.Report.Table.Max != 65536 {
		t.Errorf("report header %+v %+v", r.Report.Host, r.Report.Table)
	}
	if f := finding(r.Report, "timewait-dominant"); f == nil || f.Severity != analyze.Warning {
		t.Errorf("timewait-dominant: %+v (findings %v)", f, ids(r.Report))
	}
	if finding(r.Report, "loopback-tracked") == nil {
		t.Errorf("loopback-tracked missing: %v", ids(r.Report))
	}
	// The same host with NOTRACK on lo: nothing loopback left to report.
	code, out, _ = simulate(t, "nginx-local-upstream-notrack", "--duration", "3m", "--report", "-o", "json")
	r = simJSON{}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Report == nil {
		t.Fatalf("exit %d", code)
	}
	if finding(r.Report, "loopback-tracked") != nil || finding(r.Report, "table-full") != nil || r.Report.Breakdown.Loopback != 0 {
		t.Errorf("with NOTRACK on lo: findings %v, loopback %d", ids(r.Report), r.Report.Breakdown.Loopback)
	}
}

func ids(r *analyze.Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.ID)
	}
	return out
}

func TestSimulateCSV(t *testing.T) {
	code, out, errs := simulate(t, "dns-udp", "--duration", "20s", "-o", "csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 22 || recs[0][0] != "time_s" || recs[0][1] != "total" || len(recs[1]) != len(recs[0]) {
		t.Fatalf("%d records, header %v", len(recs), recs[0])
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for _, h := range []string{"time_wait", "udp", "usage", "drop", "early_drop", "insert_failed", "chaintoolong", "drop_total"} {
		if _, ok := col[h]; !ok {
			t.Errorf("no column %s in %v", h, recs[0])
		}
	}
	// dns-udp: 2,500 queries/s, each a UDP entry for 30 s: after 20 s
	// about 50,000 entries.
	if last := recs[len(recs)-1][col["udp"]]; len(last) != 5 || last[0] != '4' && last[0] != '5' {
		t.Errorf("udp entries at 20 s: %s, want ~50,000", last)
	}
}

func TestSimulateScenarioFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "web.yaml")
	if err := os.WriteFile(good, []byte(`name: web
duration: 30s
workloads:
  - {name: api, rate: 100, client: 10.0.0.0/24, server: 10.0.1.1, server_port: 80}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := simulate(t, good, "--set", "nf_conntrack_max=1000", "--seed", "9")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// 100/s for 30 s = 3,000 connections, all in TIME_WAIT: a max of 1,000
	// fills at 10 s.
	if !strings.Contains(out, "table full at 00:00:1") || !strings.Contains(out, "seed 9") || !strings.Contains(out, "nf_conntrack_max=1000") {
		t.Errorf("output:\n%s", out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: web\nduration: 30s\nworkloads:\n  - {name: api, rate: fast, client: 10.0.0.1, server: 10.0.1.1, server_port: 80}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = simulate(t, bad)
	if code != 2 || !strings.Contains(errs, "bad.yaml:4: workloads[0].rate: \"fast\" — want a number of connections per second") {
		t.Errorf("exit %d: %s", code, errs)
	}
	code, out, _ = simulate(t, "nginx-local-upstream", "--print")
	if code != 0 || !strings.HasPrefix(out, "name: nginx-local-upstream\n") {
		t.Errorf("--print: exit %d\n%s", code, out)
	}
}

func TestSimulateBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nginx-local-upstream", "--set", "nf_conntrack_maxx=5"}, `--set: unknown setting "nf_conntrack_maxx"`},
		{[]string{"nginx-local-upstream", "--set", "nf_conntrack_max"}, `--set: setting "nf_conntrack_max": want name=value`},
		{[]string{"nginx-local-upstream", "--set", "nf_conntrack_max=-1"}, "--set: setting nf_conntrack_max=-1: must be between 1"},
		{[]string{"nginx-local-upstream", "--compare", "nf_conntrack_tcp_timeout_time_wait=soon"}, `--compare: setting nf_conntrack_tcp_timeout_time_wait: value "soon" is not an integer`},
		{[]string{"nginx-local-upstream", "--duration", "5"}, `--duration "5": want a positive duration like 90s, 1h or 2d`},
		{[]string{"nginx-local-upstream", "-o", "xml"}, `-o must be text, json or csv, not "xml"`},
		{[]string{"nginx-local-upstream", "--compare", "nf_conntrack_max=1", "-o", "csv"}, "--compare prints two runs"},
		{[]string{"no-such-scenario"}, `"no-such-scenario" is neither a scenario file nor a built-in scenario (built-ins: daily-curve`},
		{[]string{}, "name a scenario"},
		{[]string{"--list", "dns-udp"}, "--list takes no scenario"},
		{[]string{"dns-udp", "--pcap", "x.pcap"}, "--pcap replays a capture instead of a scenario"},
		{[]string{"dns-udp", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"dns-udp", "--seed", "minus"}, `invalid argument "minus" for "--seed"`},
		{[]string{"dns-udp", "--color", "sometimes"}, "--color must be auto, always or never"},
	} {
		code, out, errs := simulate(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %d bytes; want exit 2 and %q", tc.args, code, errs, len(out), tc.want)
		}
	}
}

func TestSimulatePcap(t *testing.T) {
	capture := "../../sim/testdata/loopback.pcap"
	if _, err := os.Stat(capture); err != nil {
		t.Skipf("no capture fixture: %v", err)
	}
	code, out, errs := simulate(t, "--pcap", capture, "--pcap-hook", "output")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"replay of", "Packets", "Table", "Counters"} {
		if !strings.Contains(out, want) {
			t.Errorf("--pcap output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = simulate(t, "--pcap", capture, "--pcap-hook", "output", "--report", "-o", "json")
	var r struct {
		Replay sim.ReplayStats `json:"replay"`
		Report *analyze.Report `json:"report"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Report == nil || r.Replay.Packets == 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if r.Report.Breakdown.Total != r.Report.Table.Count {
		t.Errorf("report lists %d entries of %d", r.Report.Breakdown.Total, r.Report.Table.Count)
	}
	// Without --report: the counts of the final table, which the kernel's
	// own table at the end of the capture (loopback.pcap.conntrack) matches.
	code, out, _ = simulate(t, "--pcap", capture, "--pcap-hook", "output", "-o", "json")
	var c struct {
		Replay struct {
			Packets         int     `json:"packets"`
			DurationSeconds float64 `json:"duration_seconds"`
		} `json:"replay"`
		sim.TableCounts
		Stats map[string]uint64 `json:"stats"`
	}
	kernel, err := os.ReadFile(capture + ".conntrack")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Count(string(kernel), "\n"); code != 0 || json.Unmarshal([]byte(out), &c) != nil ||
		c.Total != want || c.Replay.Packets != 104 || c.Replay.DurationSeconds <= 0 || c.Stats["entries"] != uint64(want) {
		t.Errorf("-o json: exit %d, %d entries (kernel: %d), want the kernel's count:\n%s", code, c.Total, want, out)
	}
	code, _, errs = simulate(t, "--pcap", capture, "--pcap-hook", "input")
	if code != 2 || !strings.Contains(errs, "--pcap-hook must be prerouting or output") {
		t.Errorf("exit %d: %s", code, errs)
	}
}

// TestSimulateHelpExample runs the scenario the help text teaches, so the
// documentation cannot drift from the format.
func TestSimulateHelpExample(t *testing.T) {
	code, out, _ := simulate(t, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"ctdoctor simulate --list", "--compare", "--report", "--svg", "--pcap", "-o json"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks an example of %s", want)
		}
	}
	i := strings.Index(out, "  name: my-web")
	j := strings.Index(out, "closer: server")
	if i < 0 || j < i {
		t.Fatalf("no example scenario in --help:\n%s", out)
	}
	end := j + strings.IndexByte(out[j:], '\n')
	var y strings.Builder
	for _, l := range strings.Split(out[i:end], "\n") {
		y.WriteString(strings.TrimPrefix(l, "  ") + "\n")
	}
	path := filepath.Join(t.TempDir(), "my-web.yaml")
	if err := os.WriteFile(path, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := simulate(t, path, "--duration", "10s")
	if code != 0 || !strings.Contains(out, "table never fills") {
		t.Errorf("the help's example: exit %d\n%s%s\n%s", code, errs, out, y.String())
	}
}
