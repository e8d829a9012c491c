package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/sim"
)

type simulateOptions struct {
	list      bool
	print     bool
	set       []string
	duration  string
	seed      uint64
	seedSet   bool
	compare   string
	output    string
	svg       string
	report    bool
	pcap      string
	pcapHook  string
	pcapIface string
	color     string
	top       int
	verbose   bool
	force     bool
	derive    deriveOptions // the scenario from a host's table

	// The run-time estimate's thresholds: a note above warnAfter, a
	// refusal above refuseAfter unless --force.
	warnAfter, refuseAfter time.Duration
}

// Default thresholds of the run-time estimate.
const (
	defaultWarnAfter   = time.Minute
	defaultRefuseAfter = time.Hour
)

func newSimulateCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &simulateOptions{warnAfter: defaultWarnAfter, refuseAfter: defaultRefuseAfter}
	c := &cobra.Command{
		Use:   "simulate [SCENARIO|FILE]",
		Short: "Simulate a conntrack table under a workload: will it fill, when, and does a change help?",
		Long: `simulate answers "will my conntrack table hold?" without touching a host and
without root. It replays a scenario — the host's conntrack settings, its
NOTRACK rules and its traffic (connections per second, how long they live,
who closes them, loopback or not) — through ctdoctor's userspace tracker,
which follows the kernel's state machines, timeouts, early drop and counters,
on a virtual clock: an hour of traffic takes seconds.

It prints the verdict first, the steady count by TCP state, the kernel
counters (drop, early_drop, insert_failed, chaintoolong) and a chart of the
table over time. "Full" means one thing: the count reached nf_conntrack_max.
The verdict names why packets were dropped, if they were:
  FULL                  table full at 00:01:40, N packets dropped: new
                        connections found no free entry and early drop
                        nothing to evict (counter drop)
  HASH CHAINS TOO LONG  packets dropped because the hash chain a new entry
                        would join was too long (insert_failed,
                        chaintoolong), with room in the table: too few
                        buckets for the entries
  FULL, NO DROPS        the count reached the max, but early drop evicted
                        an unassured entry for each new connection
  NEAR FULL, OK         no drops; the peak reached 90% of the max, or not

-o json (schema ctdoctor.simulation/v2) gives the same in .summary: verdict
(the text's, word for word), cause (table_full, chain_too_long,
full_no_drops, near_full, ok), full and full_at_seconds (the count reached
the max, and when), dropped and dropped_packets (conntrack dropped packets,
any cause), first_drop_seconds and, by cause,
first_table_full_drop_seconds and first_chain_drop_seconds (null: never),
peak and peak_at_seconds (exact, not sampled), the counters and the
timeline (-o csv gives the timeline alone).

Before it starts, simulate estimates the packets the run sends from the
rates, lifetimes and duration: it notes a run expected to take over a
minute and refuses one over an hour unless --force. On a terminal, stderr
shows the virtual time reached and the time left.

SCENARIO is a built-in (see --list) or a YAML file. Start from a built-in:
  ctdoctor simulate nginx-local-upstream --print > mine.yaml
A scenario has a name, a duration, optional settings (sysctl names, any
spelling: nf_conntrack_max, net.netfilter.nf_conntrack_max), optional
notrack rules and a list of workloads:

  name: my-web
  duration: 10m
  settings: {nf_conntrack_max: 65536}
  notrack: [{iface: lo}]            # both hooks, as a raw-table rule pair
  workloads:
    - name: upstream
      proto: tcp                    # tcp, udp or icmp
      kind: short                   # one request per connection, or keepalive
      rate: 500                     # per second; "10k"; {from, to}; {peak, trough, peak_at}
      client: 127.0.0.1             # addresses or prefixes to draw from
      server: 127.0.0.1
      server_port: 8080-8083
      iface: lo                     # loopback: tracked once, at OUTPUT
      lifetime: {exponential: 5ms}  # time to answer (short) or to keep open (keepalive)
      closer: server                # who sends the first FIN

More workload fields: start, stop, host (server, client or router: where
this host sits), interval (keepalive: gap between requests), rtt,
client_ports (default 32768-60999), unanswered (a share: SYNs left in
SYN_SENT and retransmitted), syn_flood, dns, middlebox_idle_drop (a
firewall forgets idle connections; their entries linger ESTABLISHED),
syn_retries.

--compare runs the scenario twice with the same seed — as it is, and with
the proposed settings — and prints both summaries and the difference.
--report diagnoses the table at the end exactly as 'ctdoctor' diagnoses a
host: the same findings and fixes. --pcap replays a capture instead of a
scenario. -o html writes one run as a self-contained page: its verdict,
summary and timeline chart, and with --report the diagnosis below them.

--from-host, --netns NAME and --snapshot FILE derive the scenario from a
table instead: the host's settings and, per service, the traffic that keeps
that many entries in it, from Little's law (TIME_WAIT entries ÷
tcp_timeout_time_wait = connections closed per second, and so on for
SYN_SENT, UDP and ICMP; open connections are opened at the start and held).
The scenario's description gives every figure and where a rate is only a
lower bound. With --print it is shown as YAML to keep and edit; without, it
is simulated (--compare and --report work as for any scenario). Listing the
entries of a live host needs root.`,
		Example: `  ctdoctor simulate --list                                   # the built-in scenarios
  ctdoctor simulate nginx-local-upstream                     # a new connection per request: TIME_WAIT fills the table
  ctdoctor simulate nginx-local-upstream --report            # ... and what ctdoctor would say about it
  ctdoctor simulate nginx-local-upstream --compare nf_conntrack_tcp_timeout_time_wait=30
  ctdoctor simulate nginx-local-upstream --compare nf_conntrack_max=262144,nf_conntrack_buckets=262144
  ctdoctor simulate nginx-local-upstream-notrack             # the NOTRACK fix
  ctdoctor simulate my-web.yaml --set nf_conntrack_max=131072 --duration 1h
  ctdoctor simulate daily-curve --svg day.svg                # a chart to attach to a ticket
  ctdoctor simulate nginx-local-upstream --report -o html > run.html  # chart and diagnosis, one page
  ctdoctor simulate syn-flood -o csv > flood.csv             # the timeline for a spreadsheet
  ctdoctor simulate dns-udp -o json | jq .summary
  ctdoctor simulate --pcap lo.pcap --pcap-hook output --report
  ctdoctor simulate --netns web1 --print > web1.yaml        # this namespace's traffic as a scenario
  ctdoctor simulate --from-host --compare nf_conntrack_tcp_timeout_time_wait=30`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeScenario,
		SilenceUsage:      true,
		SilenceErrors:     true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.seedSet = cmd.Flags().Changed("seed")
			return runSimulate(cmd.Context(), o, args, stdout, stderr)
		},
	}
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	f := c.Flags()
	f.BoolVar(&o.list, "list", false, "list the built-in scenarios with a one-line description")
	f.BoolVar(&o.print, "print", false, "print the scenario's YAML and exit (a starting point for your own)")
	f.StringArrayVar(&o.set, "set", nil, "override a setting: `NAME=VALUE` with a sysctl name (repeatable, or comma-separated)")
	f.StringVar(&o.duration, "duration", "", "simulate this long instead of the scenario's duration (`DURATION` like 90s, 1h, 2d)")
	f.Uint64Var(&o.seed, "seed", 0, "random seed (arrivals, addresses, hash key): the same seed gives the same run")
	f.StringVar(&o.compare, "compare", "", "also run with these settings and compare: `NAME=VALUE[,NAME=VALUE]`")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text, json, csv (the timeline) or html (a page: the chart, and the diagnosis with --report)")
	f.StringVar(&o.svg, "svg", "", "write an SVG chart of the timeline to `FILE`")
	f.BoolVar(&o.report, "report", false, "diagnose the table at the end as 'ctdoctor' diagnoses a host (findings and fixes)")
	f.StringVar(&o.pcap, "pcap", "", "replay a capture (`FILE`: pcap or pcapng, optionally gzipped) instead of a scenario")
	f.StringVar(&o.pcapHook, "pcap-hook", "prerouting", "hook the captured packets enter: prerouting (received or forwarded) or output (sent by this host; loopback captures)")
	f.StringVar(&o.pcapIface, "pcap-iface", "", "interface name of the captured packets, for NOTRACK rules (default: from the pcapng file)")
	f.StringVar(&o.color, "color", "auto", "colour: auto (on a terminal, unless NO_COLOR is set), always or never")
	f.IntVar(&o.top, "top", 10, "rows in the report's top tables (with --report)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "explain every finding (with --report)")
	f.BoolVar(&o.force, "force", false, "run even when the estimate says the run takes more than an hour")
	o.derive.bind(c)
	_ = c.RegisterFlagCompletionFunc("pcap-hook", cobra.FixedCompletions([]string{"prerouting", "output"}, cobra.ShellCompDirectiveNoFileComp))
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json", "csv", "html"}, cobra.ShellCompDirectiveNoFileComp))
	_ = c.RegisterFlagCompletionFunc("color", completeColor)
	return c
}

// parseSettings reads NAME=VALUE items (each possibly comma-separated).
func parseSettings(items []string, flag string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, item := range items {
		for _, kv := range strings.Split(item, ",") {
			if strings.TrimSpace(kv) == "" {
				continue
			}
			name, v, err := engine.ParseSetting(kv)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", flag, err)
			}
			out[name] = v
		}
	}
	return out, nil
}

func (o *simulateOptions) validate(args []string) error {
	switch o.output {
	case "text", "json", "csv", "html":
	default:
		return fmt.Errorf("-o must be text, json, csv or html, not %q", o.output)
	}
	if o.output == "html" && (o.compare != "" || o.pcap != "" || o.list || o.print) {
		return errors.New("-o html is the page of one simulated run: not with --compare, --pcap, --list or --print")
	}
	if err := o.derive.validate(o, args); err != nil {
		return err
	}
	switch {
	case o.list && (len(args) > 0 || o.pcap != ""):
		return errors.New("--list takes no scenario")
	case o.list:
	case o.pcap != "" && len(args) > 0:
		return errors.New("--pcap replays a capture instead of a scenario: give one or the other")
	case o.pcap != "" && (o.compare != "" || o.svg != "" || o.duration != "" || o.print || o.output == "csv"):
		return errors.New("--pcap prints the final table: --compare, --svg, --duration, --print and -o csv need a scenario")
	case o.pcap == "" && len(args) == 0 && !o.derive.active():
		return errors.New("name a scenario (a built-in from --list, or a YAML file), derive one from a table with --from-host, --netns NAME or --snapshot FILE, or give --pcap FILE")
	}
	if o.compare != "" && o.output == "csv" {
		return errors.New("--compare prints two runs: use -o text or json (csv holds one timeline)")
	}
	if o.compare != "" && o.report {
		return errors.New("--compare and --report: run --report on each variant separately (--set for the proposed one)")
	}
	if o.output == "csv" && o.report {
		return errors.New("--report needs -o text or json")
	}
	if o.top < 1 {
		return errors.New("--top must be at least 1")
	}
	return nil
}

func runSimulate(ctx context.Context, o *simulateOptions, args []string, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := o.validate(args); err != nil {
		return &exitError{code: 2, err: err}
	}
	color, err := useColor(o.color, stdout)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	set, err := parseSettings(o.set, "--set")
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if o.list {
		return listScenarios(o, stdout)
	}
	if o.pcap != "" {
		return runReplay(o, set, color, stdout, stderr)
	}
	var sc *sim.Scenario
	switch {
	case o.derive.active():
		if sc, err = o.derive.scenario(ctx); err != nil {
			return err
		}
		if o.print {
			_, err := stdout.Write(sc.YAML())
			return err
		}
	case o.print:
		return printScenario(args[0], stdout)
	default:
		if sc, err = sim.Load(args[0]); err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	sc.Apply(set)
	if o.duration != "" {
		d, err := sim.ParseDuration(o.duration)
		if err != nil || d <= 0 {
			return &exitError{code: 2, err: fmt.Errorf("--duration %q: want a positive duration like 90s, 1h or 2d", o.duration)}
		}
		sc.Duration = d
		sc.Step = 0 // re-derived from the new duration
	}
	if o.seedSet {
		sc.Seed = o.seed
	}
	if err := sc.Validate(); err != nil {
		return &exitError{code: 2, err: err}
	}
	width := simWidth(stdout)
	est := sc.Estimate()
	if err := o.checkEstimate(est, stderr); err != nil {
		return &exitError{code: 2, err: err}
	}
	if o.compare != "" {
		proposed, err := parseSettings([]string{o.compare}, "--compare")
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		return runCompare(ctx, o, sc, proposed, est, color, width, stdout, stderr)
	}
	prog := newSimProgress(stderr, sc.Name, sc.Duration, est.Packets)
	start := time.Now()
	s, err := sim.New(sc, sim.Options{Progress: prog.update})
	if err != nil {
		prog.done()
		return &exitError{code: 2, err: err}
	}
	res, err := s.Run(ctx)
	prog.done()
	if err != nil {
		return err
	}
	wall := time.Since(start)
	if o.svg != "" {
		if err := writeSVG(o.svg, timelineChart(res, s.Scenario()), svgSubtitle(res)); err != nil {
			return err
		}
	}
	var rep *analyze.Report
	if o.report {
		// As ctdoctor diagnoses a host, fixes planned: every command printed is the plan's.
		in := doctor.Input{Host: s.Snapshot(reportBase()), Entries: s.Tracker().Flows}
		if rep, err = doctor.Diagnose(ctx, in, doctor.Options{Top: o.top}); err != nil {
			return err
		}
	}
	switch o.output {
	case "csv":
		return res.WriteCSV(stdout)
	case "json":
		return writeResultJSON(stdout, res, rep)
	case "html":
		return writeSimHTML(stdout, res, s.Scenario(), rep)
	}
	if err := writeSimText(stdout, res, s.Scenario(), wall, color, width); err != nil {
		return err
	}
	if o.svg != "" {
		fmt.Fprintf(stdout, "\nChart written to %s\n", o.svg)
	}
	if rep != nil {
		writeHeading(stdout, "Diagnosis of the simulated table at the end of the run (as ctdoctor reports a host)", color, width)
		return render.Text(stdout, rep, render.TextOptions{Color: color, Width: width, Verbose: o.verbose})
	}
	return nil
}

// simWidth is the width simulate's text fits: the terminal's, else
// $COLUMNS, else 80 (its charts' width since the start); at least
// render.MinWidth, at most 160 (a wider chart is no easier to read).
func simWidth(stdout io.Writer) int {
	w := 80
	if n, err := strconv.Atoi(strings.TrimSpace(os.Getenv("COLUMNS"))); isTerminal(stdout) || err == nil && n > 0 {
		w = render.Width(stdout)
	}
	return max(render.MinWidth, min(w, 160))
}

// reportBase is the wall time a simulated run is taken to start at: the
// report then reads as of now.
func reportBase() time.Time { return time.Now().Truncate(time.Second) }

func listScenarios(o *simulateOptions, stdout io.Writer) error {
	list := sim.Builtins()
	if o.output == "json" {
		type item struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		}
		out := make([]item, 0, len(list))
		for _, b := range list {
			out = append(out, item{b.Name, b.Description})
		}
		return writeJSON(stdout, out)
	}
	nw := 0
	for _, b := range list {
		nw = max(nw, len(b.Name))
	}
	var sb strings.Builder
	sb.WriteString("Built-in scenarios (ctdoctor simulate NAME; --print NAME shows the YAML):\n\n")
	for _, b := range list {
		lines := wrapText(b.Description, max(30, simWidth(stdout)-nw-4))
		for i, l := range lines {
			name := ""
			if i == 0 {
				name = b.Name
			}
			fmt.Fprintf(&sb, "  %-*s  %s\n", nw, name, l)
		}
	}
	_, err := io.WriteString(stdout, sb.String())
	return err
}

func printScenario(name string, stdout io.Writer) error {
	if _, err := os.Stat(name); err == nil {
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		_, err = stdout.Write(data)
		return err
	}
	data, err := sim.BuiltinSource(name)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("%w (see ctdoctor simulate --list)", err)}
	}
	_, err = stdout.Write(data)
	return err
}

// writeResultJSON writes the simulation result, with the report as its
// last field when there is one.
func writeResultJSON(w io.Writer, res *sim.Result, rep *analyze.Report) error {
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	if rep != nil {
		r, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		data = append(append(append(data[:len(data)-1], `,"report":`...), r...), '}')
	}
	var out bytes.Buffer
	if err := json.Indent(&out, data, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// runCompare runs the scenario as it is and with the proposed settings,
// concurrently (one tracker per core), with the same seed.
func runCompare(ctx context.Context, o *simulateOptions, sc *sim.Scenario, proposed map[string]int64, est sim.Estimate, color bool, width int, stdout, stderr io.Writer) error {
	alt := sc.Clone()
	alt.Apply(proposed)
	prog := newSimProgress(stderr, sc.Name, sc.Duration, est.Packets)
	var (
		wg      sync.WaitGroup
		results [2]*sim.Result
		errs    [2]error
	)
	start := time.Now()
	for i, s := range []*sim.Scenario{sc, alt} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opt := sim.Options{}
			if i == 0 {
				opt.Progress = prog.update
			}
			results[i], errs[i] = sim.Run(ctx, s, opt)
		}()
	}
	wg.Wait()
	prog.done()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	wall := time.Since(start)
	cmp := sim.Compare(results[0], results[1], proposed)
	if o.svg != "" {
		if err := writeSVG(o.svg, compareChart(cmp), fmt.Sprintf("%s · current vs proposed (%s) · seed %d", sc.Name, cmp.ProposedText(), sc.Seed)); err != nil {
			return err
		}
	}
	if o.output == "json" {
		return writeJSON(stdout, cmp)
	}
	if err := writeCompareText(stdout, cmp, sc, wall, color, width); err != nil {
		return err
	}
	if o.svg != "" {
		fmt.Fprintf(stdout, "\nChart written to %s\n", o.svg)
	}
	return nil
}

func writeSVG(path string, c render.Chart, subtitle string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := render.SVG(f, c, render.SVGOptions{Subtitle: subtitle}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkEstimate weighs the run before it starts: a note on stderr when it
// should take longer than warnAfter, an error (unless --force) when longer
// than refuseAfter. The two runs of --compare run side by side, one a core.
func (o *simulateOptions) checkEstimate(est sim.Estimate, stderr io.Writer) error {
	wall := est.Wall()
	if o.compare != "" && runtime.GOMAXPROCS(0) < 2 {
		wall *= 2
	}
	what := fmt.Sprintf("about %s packets (%s connections): about %s at the simulator's %s packets/s",
		sim.Approx(est.Packets), sim.Approx(est.Connections), roundWall(wall), sim.Approx(sim.PacketsPerSecond))
	switch {
	case wall > o.refuseAfter && !o.force:
		return fmt.Errorf("this run would simulate %s; shorten --duration or lower the rates, or add --force to run it anyway", what)
	case wall > o.warnAfter:
		fmt.Fprintf(stderr, "ctdoctor: note: this run simulates %s\n", what)
	}
	return nil
}

// roundWall rounds a wall time for people: seconds, minutes or hours.
func roundWall(d time.Duration) string {
	if d >= time.Hour-30*time.Second {
		d = d.Round(time.Minute)
	}
	d = d.Round(time.Second)
	switch {
	case d >= 10*time.Hour:
		return fmt.Sprintf("%dh", int(d.Round(time.Hour)/time.Hour))
	case d >= time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d/time.Minute)%60)
	case d >= time.Minute:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d/time.Second)%60)
	}
	return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
}

// simProgress shows how far a run is on a terminal's stderr: the virtual
// time reached, the packets simulated and the time left at the speed so
// far. Like progress, it starts after half a second and prints nothing
// when stderr is not a terminal.
type simProgress struct {
	name    string
	total   time.Duration
	est     float64 // the packets the estimate expects
	now     atomic.Int64
	packets atomic.Uint64
	status  *statusLine
}

func newSimProgress(stderr io.Writer, name string, total time.Duration, est float64) *simProgress {
	p := &simProgress{name: name, total: total, est: est}
	p.status = startStatusLine(stderr, p.line)
	return p
}

// line is the progress line after elapsed of wall time.
func (p *simProgress) line(elapsed time.Duration) string {
	now, pk := time.Duration(p.now.Load()), float64(p.packets.Load())
	s := fmt.Sprintf("simulating %s: %s of %s", p.name, sim.Clock(now), sim.Clock(p.total))
	if p.total > 0 {
		s += fmt.Sprintf(" (%.0f%%)", min(100, float64(now)*100/float64(p.total)))
	}
	s += ", " + compactCount(pk) + " packets"
	if pk > 0 && p.est > pk {
		left := time.Duration(float64(elapsed) * (p.est - pk) / pk)
		s += ", " + roundWall(left) + " left"
	}
	return s
}

// compactCount writes a count in few columns: 950, 694k, 1.4M, 48G.
func compactCount(x float64) string {
	for _, u := range []struct {
		v      float64
		suffix string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if v := x / u.v; v >= 1 {
			if v < 10 {
				return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + u.suffix
			}
			return fmt.Sprintf("%.0f%s", v, u.suffix)
		}
	}
	return fmt.Sprintf("%.0f", x)
}

func (p *simProgress) update(now time.Duration, packets uint64) {
	p.now.Store(int64(now))
	p.packets.Store(packets)
}

func (p *simProgress) done() { p.status.done() }
