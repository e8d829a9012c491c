package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/render"
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
		t.Errorf("TIME_WAIT %d of %d: nginx to a local upstream is TIME_WAIT-dominated", tw, r.Summary.Steady.Total)
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
		if n := len([]rune(l)); n > 80 {
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
	for _, want := range []string{"Diagnosis of the simulated table", "timewait-dominant", "loopback-tracked", "entries from simulation",
		// the planner's commands, and NOTRACK left out: a simulated host has no ruleset to place it in safely
		"sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30", "not planned — stop tracking loopback traffic"} {
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
		{[]string{"nginx-local-upstream", "-o", "xml"}, `-o must be text, json, csv or html, not "xml"`},
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

// clockOf formats seconds as the text output's hh:mm:ss (rounded to the
// second), written out here independently of sim.Clock.
func clockOf(sec float64) string {
	s := int(math.Round(sec))
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

// summaryJSON is the summary as the JSON documents it.
type summaryJSON struct {
	Verdict                   string   `json:"verdict"`
	Cause                     string   `json:"cause"`
	Full                      bool     `json:"full"`
	FullAtSeconds             *float64 `json:"full_at_seconds"`
	Dropped                   bool     `json:"dropped"`
	DroppedPackets            uint64   `json:"dropped_packets"`
	FirstDropSeconds          *float64 `json:"first_drop_seconds"`
	FirstTableFullDropSeconds *float64 `json:"first_table_full_drop_seconds"`
	FirstChainDropSeconds     *float64 `json:"first_chain_drop_seconds"`
	Peak                      int      `json:"peak"`
	PeakAtSeconds             float64  `json:"peak_at_seconds"`
	Steady                    struct {
		Total int `json:"total"`
	} `json:"steady"`
	Drop         uint64 `json:"drop"`
	EarlyDrop    uint64 `json:"early_drop"`
	InsertFailed uint64 `json:"insert_failed"`
	ChainTooLong uint64 `json:"chaintoolong"`
	Packets      uint64 `json:"packets"`
	Connections  uint64 `json:"connections"`
	Failed       uint64 `json:"failed_connections"`
}

// smallTable is a custom scenario whose outcome depends on the max: 200 new
// connections/s, all ending in TIME_WAIT for 120 s, hold 200 × t entries
// until 120 s (24,000 then).
const smallTable = `name: small-table
duration: 3m
seed: 3
workloads:
  - {name: api, rate: 200, client: 10.0.0.0/16, server: 10.0.1.1, server_port: 80, lifetime: 10ms}
`

// unansweredSYNs leaves half of the SYNs unanswered: SYN_SENT entries are
// not ASSURED, so early drop (which looks at eight buckets: a table with
// as many buckets as entries has some there) evicts one for each new SYN
// and the table fills without dropping packets.
const unansweredSYNs = `name: unanswered
duration: 2m
seed: 5
settings: {nf_conntrack_max: 2000, nf_conntrack_buckets: 2048}
workloads:
  - {name: scan, rate: 100, client: 10.0.0.0/16, server: 10.0.1.1, server_port: 80, unanswered: 1, syn_retries: 1}
`

// TestSimulateTextAgreesWithJSON runs scenarios through both outputs: every
// time and number the text shows must be the JSON's, and the verdict must
// name the cause the counters show (issue 8, item 5).
func TestSimulateTextAgreesWithJSON(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.yaml")
	unans := filepath.Join(dir, "unanswered.yaml")
	for p, y := range map[string]string{small: smallTable, unans: unansweredSYNs} {
		if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reVerdict := regexp.MustCompile(`^(FULL|HASH CHAINS TOO LONG|FULL, NO DROPS|NEAR FULL|OK) (.*)$`)
	rePeak := regexp.MustCompile(`(?m)^Table +max ([\d,]+) · buckets ([\d,]+) · peak ([\d,]+) \((\d+)%\) at (\d\d:\d\d:\d\d)`)
	reFullAt := regexp.MustCompile(`table full at (\d\d:\d\d:\d\d)`)
	reChains := regexp.MustCompile(`hash chains too long at (\d\d:\d\d:\d\d)`)
	reFirst := regexp.MustCompile(`(?m)^ +first drop at (\d\d:\d\d:\d\d)`)
	reCounters := regexp.MustCompile(`(?m)^Counters +drop ([\d,]+) · early_drop ([\d,]+) · insert_failed ([\d,]+) · chaintoolong ([\d,]+)`)
	reSteady := regexp.MustCompile(`(?m)^Steady +([\d,]+) entries`)
	reTraffic := regexp.MustCompile(`(?m)^Traffic +([\d,]+) connections · ([\d,]+) packets`)
	num := func(s string) uint64 {
		v, err := strconv.ParseUint(strings.ReplaceAll(s, ",", ""), 10, 64)
		if err != nil {
			t.Fatalf("number %q: %v", s, err)
		}
		return v
	}
	for _, tc := range []struct {
		name  string
		args  []string
		cause string
	}{
		{"nginx", []string{"nginx-local-upstream", "--duration", "4m"}, "table_full"},
		{"nginx-notrack", []string{"nginx-local-upstream-notrack", "--duration", "2m"}, "ok"},
		{"one-bucket", []string{"nginx-local-upstream", "--duration", "1m", "--set", "nf_conntrack_buckets=1"}, "chain_too_long"},
		{"syn-flood", []string{"syn-flood", "--duration", "3m"}, ""},
		{"dns", []string{"dns-udp", "--duration", "2m"}, "full_no_drops"},
		{"small-full", []string{small, "--set", "nf_conntrack_max=5000"}, "table_full"},
		{"small-near", []string{small, "--set", "nf_conntrack_max=25000"}, "near_full"},
		{"small-ok", []string{small}, "ok"},
		{"early-drop", []string{unans}, "full_no_drops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, text, errs := simulate(t, append(tc.args, "--color", "never")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			code, js, errs := simulate(t, append(tc.args, "-o", "json")...)
			if code != 0 {
				t.Fatalf("-o json: exit %d: %s", code, errs)
			}
			var r struct {
				Max     int         `json:"max"`
				Summary summaryJSON `json:"summary"`
			}
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			s := r.Summary
			if tc.cause != "" && s.Cause != tc.cause {
				t.Errorf("cause %q, want %q (verdict %q)", s.Cause, tc.cause, s.Verdict)
			}
			// The verdict may wrap: its lines run to the blank line.
			para := text[strings.Index(text, "\n\n")+2:]
			para = para[:strings.Index(para, "\n\n")]
			v := reVerdict.FindStringSubmatch(strings.Join(strings.Fields(para), " "))
			if v != nil {
				v[1] = strings.TrimSpace(v[1])
			}
			if v == nil || v[2] != s.Verdict {
				t.Fatalf("text verdict %q, JSON verdict %q\n%s", v, s.Verdict, text)
			}
			// The label and the cause.
			label := map[string]string{"table_full": "FULL", "chain_too_long": "HASH CHAINS TOO LONG",
				"full_no_drops": "FULL, NO DROPS", "near_full": "NEAR FULL", "ok": "OK"}[s.Cause]
			if v[1] != label {
				t.Errorf("label %q for cause %q", v[1], s.Cause)
			}
			// "Full" is the count reaching the max, and nothing else.
			if s.Full != (s.FullAtSeconds != nil) || s.Full != (s.Peak >= r.Max) {
				t.Errorf("full %v, full_at %v, peak %d of %d", s.Full, s.FullAtSeconds, s.Peak, r.Max)
			}
			if m := reFullAt.FindStringSubmatch(s.Verdict); m != nil {
				if s.FullAtSeconds == nil || m[1] != clockOf(*s.FullAtSeconds) {
					t.Errorf("text: table full at %s; JSON full_at_seconds %v", m[1], s.FullAtSeconds)
				}
			} else if s.Full {
				t.Errorf("the table filled (at %v s) but the verdict does not say when: %q", *s.FullAtSeconds, s.Verdict)
			}
			if m := reChains.FindStringSubmatch(s.Verdict); m != nil {
				if s.FirstChainDropSeconds == nil || m[1] != clockOf(*s.FirstChainDropSeconds) {
					t.Errorf("text: chains too long at %s; JSON first_chain_drop_seconds %v", m[1], s.FirstChainDropSeconds)
				}
			} else if s.ChainTooLong > 0 {
				t.Errorf("%d chaintoolong drops the verdict does not name: %q", s.ChainTooLong, s.Verdict)
			}
			// The causes follow from the counters.
			switch {
			case s.Drop > 0:
				if s.Cause != "table_full" || !s.Full || s.FirstTableFullDropSeconds == nil {
					t.Errorf("drop %d: cause %q, full %v, first table-full drop %v", s.Drop, s.Cause, s.Full, s.FirstTableFullDropSeconds)
				}
			case s.InsertFailed > 0:
				if s.Cause != "chain_too_long" || s.FirstChainDropSeconds == nil || strings.Contains(s.Verdict, "table full") {
					t.Errorf("insert_failed %d, drop 0: cause %q, verdict %q", s.InsertFailed, s.Cause, s.Verdict)
				}
			case s.Full:
				if s.Cause != "full_no_drops" || s.Dropped {
					t.Errorf("full without drops: cause %q, dropped %v", s.Cause, s.Dropped)
				}
			}
			if s.Dropped != (s.DroppedPackets > 0) || s.DroppedPackets != s.Drop+s.InsertFailed || s.Dropped != (s.FirstDropSeconds != nil) {
				t.Errorf("dropped %v, dropped_packets %d, drop %d + insert_failed %d, first drop %v",
					s.Dropped, s.DroppedPackets, s.Drop, s.InsertFailed, s.FirstDropSeconds)
			}
			p := rePeak.FindStringSubmatch(text)
			if p == nil {
				t.Fatalf("no Table line:\n%s", text)
			}
			if int(num(p[1])) != r.Max || int(num(p[3])) != s.Peak || p[5] != clockOf(s.PeakAtSeconds) ||
				p[4] != fmt.Sprintf("%.0f", float64(s.Peak)*100/float64(r.Max)) {
				t.Errorf("text: max %s peak %s (%s%%) at %s; JSON: max %d peak %d at %s", p[1], p[3], p[4], p[5], r.Max, s.Peak, clockOf(s.PeakAtSeconds))
			}
			if f := reFirst.FindStringSubmatch(text); (f == nil) != (s.FirstDropSeconds == nil) ||
				f != nil && f[1] != clockOf(*s.FirstDropSeconds) {
				t.Errorf("text: first drop %v; JSON first_drop_seconds %v", f, s.FirstDropSeconds)
			}
			c := reCounters.FindStringSubmatch(text)
			if c == nil || num(c[1]) != s.Drop || num(c[2]) != s.EarlyDrop || num(c[3]) != s.InsertFailed || num(c[4]) != s.ChainTooLong {
				t.Errorf("text counters %v; JSON %d %d %d %d", c, s.Drop, s.EarlyDrop, s.InsertFailed, s.ChainTooLong)
			}
			if st := reSteady.FindStringSubmatch(text); st == nil || int(num(st[1])) != s.Steady.Total {
				t.Errorf("text steady %v; JSON %d", st, s.Steady.Total)
			}
			if tr := reTraffic.FindStringSubmatch(text); tr == nil || num(tr[1]) != s.Connections || num(tr[2]) != s.Packets {
				t.Errorf("text traffic %v; JSON %d connections, %d packets", tr, s.Connections, s.Packets)
			}
		})
	}
}

// TestSimulatePcapSchema: both JSON shapes of a replay carry their schema
// (issue 8, item 19), as every other JSON document ctdoctor writes does.
func TestSimulatePcapSchema(t *testing.T) {
	capture := "../../sim/testdata/loopback.pcap"
	if _, err := os.Stat(capture); err != nil {
		t.Skipf("no capture fixture: %v", err)
	}
	for _, args := range [][]string{
		{"--pcap", capture, "--pcap-hook", "output", "-o", "json"},
		{"--pcap", capture, "--pcap-hook", "output", "-o", "json", "--report"},
	} {
		code, out, errs := simulate(t, args...)
		var r map[string]json.RawMessage
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("%v: exit %d: %s\n%s", args, code, errs, out)
		}
		var schema string
		if err := json.Unmarshal(r["schema"], &schema); err != nil || schema != sim.ReplaySchema {
			t.Errorf("%v: schema %s, want %q", args, r["schema"], "ctdoctor.replay/v1")
		}
		if !strings.HasPrefix(strings.TrimSpace(out), "{\n  \"schema\": ") {
			t.Errorf("%v: the schema should come first:\n%.200s", args, out)
		}
	}
}

// simLayouts renders a run, a run whose drops are chain-length drops, a
// comparison and a replay in colour and without, at width columns.
func simLayouts(t *testing.T, width int) map[string][2]string {
	t.Helper()
	ctx := context.Background()
	sc, err := sim.Load("nginx-local-upstream")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration, sc.Step = 3*time.Minute, 0
	out := map[string][2]string{}
	render2 := func(name string, f func(w io.Writer, color bool) error) {
		var pair [2]string
		for i, color := range []bool{true, false} {
			var b bytes.Buffer
			if err := f(&b, color); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			pair[i] = b.String()
		}
		out[name] = pair
	}
	for _, v := range []struct {
		name string
		set  map[string]int64
	}{{"full", nil}, {"chains", map[string]int64{"nf_conntrack_buckets": 1}}} {
		s := sc.Clone()
		s.Apply(v.set)
		sm, err := sim.New(s, sim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := sm.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		render2(v.name, func(w io.Writer, color bool) error {
			return writeSimText(w, res, sm.Scenario(), 1234*time.Millisecond, color, width)
		})
	}
	alt := sc.Clone()
	alt.Apply(map[string]int64{"nf_conntrack_buckets": 1})
	cur, err := sim.Run(ctx, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prop, err := sim.Run(ctx, alt, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cmp := sim.Compare(cur, prop, map[string]int64{"nf_conntrack_buckets": 1})
	render2("compare", func(w io.Writer, color bool) error {
		return writeCompareText(w, cmp, sc, 2345*time.Millisecond, color, width)
	})
	return out
}

// TestSimulateLayout: the coloured text is the plain text plus escape
// codes (labels padded by what shows, not by bytes), and no line is wider
// than the width (issue 8, items 8 and 9).
func TestSimulateLayout(t *testing.T) {
	for _, width := range []int{80, 64, 120} {
		for name, pair := range simLayouts(t, width) {
			colored, plain := pair[0], pair[1]
			if !strings.Contains(colored, "\x1b[") || strings.Contains(plain, "\x1b[") {
				t.Fatalf("%s: colour in the coloured text %v, in the plain one %v", name, strings.Contains(colored, "\x1b["), strings.Contains(plain, "\x1b["))
			}
			if strings.Contains(colored, "\x1b[m") {
				t.Errorf("%s: an empty colour code", name)
			}
			if got := render.StripANSI(colored); got != plain {
				t.Errorf("%s at %d: the coloured text shows another layout than the plain one:\n%s\n--- plain:\n%s", name, width, got, plain)
			}
			for _, l := range strings.Split(plain, "\n") {
				if n := render.VisibleWidth(l); n > width {
					t.Errorf("%s: a line %d wide at %d columns: %q", name, n, width, l)
				}
			}
		}
	}
}

// TestSimulateWidth: piped output is laid out for $COLUMNS (80 when unset).
func TestSimulateWidth(t *testing.T) {
	for _, cols := range []string{"", "80", "60", "132"} {
		t.Setenv("COLUMNS", cols)
		want := 80
		if cols != "" {
			want, _ = strconv.Atoi(cols)
		}
		for _, args := range [][]string{
			{"nginx-local-upstream", "--duration", "2m", "--color", "always"},
			{"nginx-local-upstream", "--duration", "2m", "--set", "nf_conntrack_buckets=1", "--color", "always"},
			{"nginx-local-upstream", "--duration", "2m", "--compare", "nf_conntrack_tcp_timeout_time_wait=30", "--color", "always"},
			{"--pcap", "../../sim/testdata/loopback.pcap", "--color", "always"},
			{"nginx-local-upstream", "--duration", "2m", "--report", "--color", "always"},
			{"--pcap", "../../sim/testdata/loopback.pcap", "--pcap-hook", "output", "--report", "--color", "always"},
		} {
			code, out, errs := simulate(t, args...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, errs)
			}
			widest := 0
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(render.StripANSI(l), "Findings") {
					break // fix commands may hold an unbreakable word: render's tests cover them
				}
				n := render.VisibleWidth(l)
				widest = max(widest, n)
				if n > want {
					t.Errorf("COLUMNS=%q %v: a line %d wide: %q", cols, args, n, render.StripANSI(l))
				}
			}
			if args[0] != "--pcap" && widest < want-2 {
				t.Errorf("COLUMNS=%q %v: the widest line is %d: the chart should use the width", cols, args, widest)
			}
		}
	}
}

// TestSimulateRunTimeEstimate: a run is weighed before it starts (issue 8,
// item 17): 10 million connections/s for 10 minutes is refused at once
// unless --force; a long one gets a note; the note's numbers are the
// estimate's.
func TestSimulateRunTimeEstimate(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.yaml")
	if err := os.WriteFile(huge, []byte(`name: huge
duration: 10m
workloads:
  - {name: api, rate: 10M, client: 10.0.0.0/8, server: 10.1.0.1, server_port: 80}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// A billion connections/s for a year: a wall time past what a
	// Duration holds, which must not wrap into a negative "no wait".
	absurd := filepath.Join(dir, "absurd.yaml")
	if err := os.WriteFile(absurd, []byte(`name: absurd
duration: 365d
workloads:
  - {name: api, rate: 1000000000, client: 10.0.0.0/8, server: 10.1.0.1, server_port: 80}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, args := range [][]string{{huge}, {huge, "--compare", "nf_conntrack_max=1000000"}, {"dns-udp", "--duration", "1000d"}, {absurd}} {
		code, out, errs := simulate(t, args...)
		// 6 billion connections of 8 packets: 48 billion packets.
		if code != 2 || out != "" || !strings.Contains(errs, "add --force to run it anyway") {
			t.Errorf("%v: exit %d, stdout %d bytes, stderr %q", args, code, len(out), errs)
		}
		if args[0] == huge && !strings.Contains(errs, "this run would simulate about 48 billion packets (6 billion connections)") {
			t.Errorf("%v: %s", args, errs)
		}
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("refusing took %s: the runs started", el)
	}

	// The thresholds, lowered: a small run gets the note, with the
	// estimate's numbers, and runs; --force runs past the refusal.
	sc, err := sim.Load("nginx-local-upstream")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration, sc.Step = 30*time.Second, 0
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	est := sc.Estimate()
	for _, tc := range []struct {
		warn, refuse time.Duration
		force        bool
		code         int
		want         string
	}{
		{time.Nanosecond, time.Hour, false, 0, "ctdoctor: note: this run simulates about " + sim.Approx(est.Packets) + " packets (" + sim.Approx(est.Connections) + " connections)"},
		{time.Nanosecond, time.Nanosecond, false, 2, "add --force"},
		{time.Nanosecond, time.Nanosecond, true, 0, "ctdoctor: note: this run simulates about"},
		{time.Hour, 2 * time.Hour, false, 0, ""},
	} {
		o := &simulateOptions{output: "json", color: "never", top: 10, duration: "30s", warnAfter: tc.warn, refuseAfter: tc.refuse, force: tc.force}
		var out, errb bytes.Buffer
		err := runSimulate(context.Background(), o, []string{"nginx-local-upstream"}, &out, &errb)
		code := 0
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
			errb.WriteString(ee.err.Error())
		} else if err != nil {
			code = 1
		}
		if code != tc.code || !strings.Contains(errb.String(), tc.want) || tc.want == "" && errb.Len() > 0 {
			t.Errorf("warn %s refuse %s force %v: exit %d, stderr %q; want exit %d and %q", tc.warn, tc.refuse, tc.force, code, errb.String(), tc.code, tc.want)
		}
		if code == 0 && !strings.Contains(out.String(), `"schema": "ctdoctor.simulation/v2"`) {
			t.Errorf("no result:\n%.300s", out.String())
		}
	}
}

// TestSimProgressLine: the progress line's numbers, worked out by hand.
func TestSimProgressLine(t *testing.T) {
	p := newSimProgress(&bytes.Buffer{}, "web", 10*time.Minute, 1e6)
	defer p.done()
	p.update(2*time.Minute, 250_000)
	// A quarter of the packets in 10 s: three quarters left take 30 s.
	want := "simulating web: 00:02:00 of 00:10:00 (20%), 250k packets, 30s left"
	if got := p.line(10 * time.Second); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestRoundWall(t *testing.T) {
	for d, want := range map[time.Duration]string{1500 * time.Millisecond: "2s", 90 * time.Second: "1m30s",
		2*time.Hour + 40*time.Minute: "2h40m", 26*time.Hour + 20*time.Minute: "26h", 59*time.Minute + 59*time.Second + 600*time.Millisecond: "1h00m"} {
		if got := roundWall(d); got != want {
			t.Errorf("roundWall(%s) = %q, want %q", d, got, want)
		}
	}
}
