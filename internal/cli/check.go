package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/internal/nagios"
)

type checkOptions struct {
	warn, crit                       string
	dropWarn, dropCrit               string
	earlyWarn, earlyCrit             string
	insertFailedWarn, insertFailCrit string
	stateFile                        string
	netns, root, snapshot            string
	noEntries                        bool
	findings                         string
	noConntrack                      string
}

// checkRates are the counters whose rate check compares between runs.
var checkRates = []string{"drop", "early_drop", "insert_failed"}

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &checkOptions{}
	c := &cobra.Command{
		Use:   "check",
		Short: "Nagios/Icinga plugin: the table's usage, drop rates and findings",
		Long: `check is a monitoring plugin (Nagios, Icinga, Naemon, Sensu, Zabbix's
Nagios items): it diagnoses the table as ctdoctor does, prints one status
line with performance data, then the findings with their first fix, and
exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN (bad arguments, errors).

Thresholds use the plugin range syntax: 80 (alert above 80 or below 0),
80: (below 80), ~:80 (above 80), 10:20 (outside 10-20), @10:20 (inside).
-w/-c apply to the usage in percent of nf_conntrack_max. The rate
thresholds apply to the counters' per-second rates since the previous run,
kept in --state-file (the first run has no rates). Findings: with
--findings critical (the default) a finding ctdoctor rates critical makes
the state CRITICAL; warning also lets warning findings make it WARNING.

Perfdata: entries, usage (%), buckets, the drop/early_drop/insert_failed/
clash_resolve/chaintoolong counters (c) and, from the second run, their
*_per_second rates.`,
		Example: `  ctdoctor check                              # -w 80 -c 90, any drop critical, any early drop warning
  ctdoctor check -w 70 -c 85 --netns web1
  ctdoctor check --insert-failed-warning 1 --findings warning
  ctdoctor check --root /mnt/image           # a host's files (fixture, mounted image)`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if err := f.Parse(args); err != nil {
				return checkUsage(stdout, err)
			}
			if help, _ := f.GetBool("help"); help {
				return cmd.Help()
			}
			if f.NArg() > 0 {
				return checkUsage(stdout, fmt.Errorf("unexpected argument %q", f.Arg(0)))
			}
			state := runCheck(cmd.Context(), o, stdout)
			if state == nagios.OK {
				return nil
			}
			return &exitError{code: int(state), err: errors.New("")}
		},
	}
	f := c.Flags()
	f.BoolP("help", "h", false, "help for check")
	f.StringVarP(&o.warn, "warning", "w", "80", "usage `RANGE` in percent of the limit for WARNING")
	f.StringVarP(&o.crit, "critical", "c", "90", "usage `RANGE` in percent of the limit for CRITICAL")
	f.StringVar(&o.dropWarn, "drop-warning", "", "drop rate `RANGE` (packets/s) for WARNING")
	f.StringVar(&o.dropCrit, "drop-critical", "0", "drop rate `RANGE` (packets/s) for CRITICAL (default: any drop)")
	f.StringVar(&o.earlyWarn, "early-drop-warning", "0", "early_drop rate `RANGE` (entries/s) for WARNING (default: any early drop)")
	f.StringVar(&o.earlyCrit, "early-drop-critical", "", "early_drop rate `RANGE` (entries/s) for CRITICAL")
	f.StringVar(&o.insertFailedWarn, "insert-failed-warning", "", "insert_failed rate `RANGE` (/s) for WARNING")
	f.StringVar(&o.insertFailCrit, "insert-failed-critical", "", "insert_failed rate `RANGE` (/s) for CRITICAL")
	f.StringVar(&o.stateFile, "state-file", "", "`FILE` keeping the counters between runs for the rates (default /var/tmp/ctdoctor-check-NETNS.json)")
	f.StringVar(&o.netns, "netns", "", "network namespace to check: a `NAME` from /run/netns, a path, or a PID")
	f.StringVar(&o.root, "root", "", "check the host whose files are under `DIR` (a fixture, a mounted image)")
	f.StringVar(&o.snapshot, "snapshot", "", "check a snapshot archive `FILE` written by ctdoctor snapshot")
	f.BoolVar(&o.noEntries, "no-entries", false, "do not list the entries (faster; findings that count entries cannot fire)")
	f.StringVar(&o.findings, "findings", "critical", "findings that set the state: `LEVEL` critical, warning or none")
	f.StringVar(&o.noConntrack, "no-conntrack", "ok", "state when connection tracking is not active: `STATE` ok or unknown")
	return c
}

// checkUsage reports a bad argument the plugin way: UNKNOWN on stdout, exit 3.
func checkUsage(stdout io.Writer, err error) error {
	fmt.Fprintf(stdout, "CONNTRACK UNKNOWN - %v\n", err)
	return &exitError{code: int(nagios.Unknown), err: err, help: "ctdoctor check"}
}

// checkState is what the state file keeps between runs.
type checkState struct {
	At       time.Time         `json:"at"`
	NetNS    string            `json:"netns"`
	Counters map[string]uint64 `json:"counters"`
}

// runCheck prints the plugin output and returns the state.
func runCheck(ctx context.Context, o *checkOptions, stdout io.Writer) nagios.State {
	unknown := func(format string, args ...any) nagios.State {
		fmt.Fprintf(stdout, "CONNTRACK UNKNOWN - "+format+"\n", args...)
		return nagios.Unknown
	}
	usage, err := threshold(o.warn, o.crit, "-w", "-c")
	if err != nil {
		return unknown("%v", err)
	}
	rates := map[string]nagios.Threshold{}
	for i, spec := range [][2]string{{o.dropWarn, o.dropCrit}, {o.earlyWarn, o.earlyCrit}, {o.insertFailedWarn, o.insertFailCrit}} {
		name := strings.ReplaceAll(checkRates[i], "_", "-")
		th, err := threshold(spec[0], spec[1], "--"+name+"-warning", "--"+name+"-critical")
		if err != nil {
			return unknown("%v", err)
		}
		rates[checkRates[i]] = th
	}
	switch o.findings {
	case "critical", "warning", "none":
	default:
		return unknown("--findings %q: want critical, warning or none", o.findings)
	}
	if o.noConntrack != "ok" && o.noConntrack != "unknown" {
		return unknown("--no-conntrack %q: want ok or unknown", o.noConntrack)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	res, err := doctor.Run(ctx, doctor.Input{NetNS: o.netns, Root: o.root, Snapshot: o.snapshot}, doctor.Options{NoEntries: o.noEntries})
	if err != nil {
		return unknown("%v", err)
	}
	rep := res.Report
	if res.Snapshot == nil { // no connection tracking at all
		if o.noConntrack == "unknown" {
			return unknown("%s", rep.Verdict.Reason)
		}
		fmt.Fprintf(stdout, "CONNTRACK OK - %s\n", rep.Verdict.Reason)
		return nagios.OK
	}
	t := rep.Table
	if t.Max <= 0 || t.Count < 0 {
		return unknown("the table's size is unknown (count %d, limit %d)", t.Count, t.Max)
	}
	pct := 100 * float64(t.Count) / float64(t.Max)
	state := usage.State(pct)
	var reasons, long []string
	if state != nagios.OK {
		reasons = append(reasons, fmt.Sprintf("table %s%% full (%d of %d)", round2(pct), t.Count, t.Max))
	}
	perf := []nagios.Perf{
		{Label: "entries", Value: float64(t.Count), Min: nagios.Float(0), Max: nagios.Float(float64(t.Max))},
		{Label: "usage", Value: round(pct), UOM: "%", Threshold: usage, Min: nagios.Float(0), Max: nagios.Float(100)},
	}
	if t.Buckets > 0 {
		perf = append(perf, nagios.Perf{Label: "buckets", Value: float64(t.Buckets)})
	}
	// Counters, and their rates since the previous run.
	now := rep.GeneratedAt
	counters := map[string]uint64{}
	if s := rep.Stats; s.Available {
		counters = map[string]uint64{"drop": s.Drop, "early_drop": s.EarlyDrop, "insert_failed": s.InsertFailed,
			"clash_resolve": s.ClashResolve, "chaintoolong": s.ChainTooLong}
		for _, k := range []string{"drop", "early_drop", "insert_failed", "clash_resolve", "chaintoolong"} {
			perf = append(perf, nagios.Perf{Label: k, Value: float64(counters[k]), UOM: "c"})
		}
	} else {
		long = append(long, "counters: not available (no /proc/net/stat/nf_conntrack and no netlink access: run as root)")
	}
	path := o.stateFile
	if path == "" {
		path = defaultStateFile(rep.Host.NetNS)
	}
	prev, perr := readCheckState(path)
	// Rates compare live runs; for a root or snapshot only with an explicit --state-file.
	live := (o.root == "" && o.snapshot == "") || o.stateFile != ""
	switch {
	case len(counters) == 0 || !live:
	case perr != nil && !errors.Is(perr, os.ErrNotExist):
		long = append(long, fmt.Sprintf("rates: %v", perr))
	case prev == nil || prev.NetNS != rep.Host.NetNS:
		long = append(long, "rates: none yet (they need a previous run; state in "+path+")")
	case !now.After(prev.At):
		long = append(long, "rates: the previous run is not older than this one")
	default:
		dt := now.Sub(prev.At).Seconds()
		for _, k := range checkRates {
			cur, ok1 := counters[k]
			old, ok2 := prev.Counters[k]
			if !ok1 || !ok2 || cur < old {
				long = append(long, fmt.Sprintf("rates: %s went back from %d to %d (reboot or module reload): no rate this run", k, old, cur))
				continue
			}
			r := float64(cur-old) / dt
			th := rates[k]
			perf = append(perf, nagios.Perf{Label: k + "_per_second", Value: round(r), Threshold: th, Min: nagios.Float(0)})
			if s := th.State(r); s != nagios.OK {
				state = nagios.Worse(state, s)
				reasons = append(reasons, fmt.Sprintf("%s %s/s", k, round2(r)))
			}
		}
	}
	if len(counters) > 0 && live {
		if err := writeCheckState(path, checkState{At: now, NetNS: rep.Host.NetNS, Counters: counters}); err != nil {
			long = append(long, fmt.Sprintf("state file: %v (no rates next run)", err))
		}
	}
	// Findings, most severe first (the report's order).
	for _, f := range rep.Findings {
		fs := nagios.OK
		switch {
		case f.Severity == analyze.Critical && o.findings != "none":
			fs = nagios.Critical
		case f.Severity == analyze.Warning && o.findings == "warning":
			fs = nagios.Warning
		}
		if fs != nagios.OK {
			state = nagios.Worse(state, fs)
			reasons = append(reasons, f.ID)
		}
		line := fmt.Sprintf("[%s] %s: %s", strings.ToUpper(f.Severity), f.ID, oneLine(f.Summary))
		if fix := firstFix(f.Fixes); fix != "" {
			line += "\n    fix: " + fix
		}
		long = append(long, line)
	}
	if len(rep.Findings) == 0 {
		long = append(long, "no findings")
	}
	summary := rep.Verdict.Reason
	if state != nagios.OK && len(reasons) > 0 {
		summary = strings.Join(reasons, ", ") + " — " + summary
	}
	items := make([]string, len(perf))
	for i, p := range perf {
		items[i] = p.String()
	}
	fmt.Fprintf(stdout, "CONNTRACK %s - %s | %s\n", state, oneLine(summary), strings.Join(items, " "))
	for _, l := range long {
		fmt.Fprintln(stdout, l)
	}
	return state
}

// threshold parses a warning and a critical range ("" is none).
func threshold(warn, crit, wflag, cflag string) (nagios.Threshold, error) {
	var th nagios.Threshold
	if warn != "" {
		r, err := nagios.ParseRange(warn)
		if err != nil {
			return th, fmt.Errorf("%s: %w", wflag, err)
		}
		th.Warn = &r
	}
	if crit != "" {
		r, err := nagios.ParseRange(crit)
		if err != nil {
			return th, fmt.Errorf("%s: %w", cflag, err)
		}
		th.Crit = &r
	}
	return th, nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// defaultStateFile is the state file of a namespace.
func defaultStateFile(netns string) string {
	return filepath.Join("/var/tmp", "ctdoctor-check-"+unsafeName.ReplaceAllString(netns, "_")+".json")
}

func readCheckState(path string) (*checkState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s checkState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &s, nil
}

// writeCheckState writes the state file atomically (temp file and rename).
func writeCheckState(path string, s checkState) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ctdoctor-check-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// firstFix is a finding's first command (comments skipped).
func firstFix(fixes []string) string {
	for _, f := range fixes {
		f = strings.TrimSpace(f)
		if f != "" && !strings.HasPrefix(f, "#") {
			return oneLine(f)
		}
	}
	return ""
}

// oneLine keeps plugin output lines whole: no newlines, no '|' (which
// starts the performance data).
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "|", "\u00a6").Replace(s)
}

func round(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

func round2(v float64) string { return nagios.Number(round(v)) }
