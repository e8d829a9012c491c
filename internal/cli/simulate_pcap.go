package cli

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/sim"
)

// runReplay tracks a capture's packets with a fresh tracker (the --set
// settings) and prints the table at the end, or ctdoctor's diagnosis of it.
func runReplay(o *simulateOptions, set map[string]int64, color bool, stdout, stderr io.Writer) error {
	var hook engine.Hook
	switch strings.ToLower(o.pcapHook) {
	case "prerouting", "":
		hook = engine.Prerouting
	case "output":
		hook = engine.Output
	default:
		return &exitError{code: 2, err: fmt.Errorf("--pcap-hook must be prerouting or output, not %q", o.pcapHook)}
	}
	f, err := os.Open(o.pcap)
	if err != nil {
		return err
	}
	defer f.Close()
	clock := &engine.VirtualClock{}
	seed := o.seed
	if seed == 0 {
		seed = 1
	}
	tr, err := engine.New(engine.Config{Settings: set, Seed: seed, Clock: clock})
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	prog := newProgress(stderr, "replaying packets")
	st, err := sim.ReplayPCAP(f, tr, clock, sim.ReplayOptions{Hook: hook, Iface: o.pcapIface,
		Progress: func(n int) { prog.n.Store(int64(n)) }})
	prog.done()
	if err != nil {
		if st.Packets == 0 {
			return fmt.Errorf("%s: %w", o.pcap, err)
		}
		fmt.Fprintf(stderr, "ctdoctor: warning: %s: %v\n", o.pcap, err)
	}
	width := simWidth(stdout)
	base := st.First
	if base.IsZero() {
		base = time.Now()
	}
	snap := sim.SnapshotOf(tr, "pcap:"+o.pcap, 1, base.Add(st.Duration))
	snap.Source = "pcap"
	if o.report {
		bd, err := sim.Breakdown(tr, snap, o.top)
		if err != nil {
			return err
		}
		rep := analyze.Analyze(snap, bd, snap.TakenAt)
		if o.output == "json" {
			return writeJSON(stdout, struct {
				Schema string          `json:"schema"`
				Replay sim.ReplayStats `json:"replay"`
				Report *analyze.Report `json:"report"`
			}{sim.ReplaySchema, st, rep})
		}
		writeReplayText(stdout, o.pcap, st, tr, color, width)
		writeHeading(stdout, "Diagnosis of the table at the end of the capture (as ctdoctor reports a host)", color, width)
		return render.Text(stdout, rep, render.TextOptions{Color: color, Width: width, Verbose: o.verbose})
	}
	if o.output == "json" {
		return writeJSON(stdout, struct {
			Schema string          `json:"schema"`
			Replay sim.ReplayStats `json:"replay"`
			sim.TableCounts
			Stats map[string]uint64 `json:"stats"`
		}{sim.ReplaySchema, st, sim.CountsOf(tr), statsMap(tr)})
	}
	writeReplayText(stdout, o.pcap, st, tr, color, width)
	return nil
}

func statsMap(tr *engine.Tracker) map[string]uint64 {
	t := tr.TotalStats()
	m := map[string]uint64{}
	for f := range t.Values {
		if t.Present&(1<<f) != 0 {
			m[conntrack.StatField(f).String()] = t.Values[f]
		}
	}
	return m
}

func writeReplayText(w io.Writer, file string, st sim.ReplayStats, tr *engine.Tracker, color bool, width int) {
	t := newTextLines(color, width)
	pad := strings.Repeat(" ", labelW)
	t.fields("", "  ", " · ", paint(color, bold, "ctdoctor simulate --pcap"), "replay of "+file,
		fmt.Sprintf("%s packets over %s", sim.Thousands(int64(st.Packets)), st.Duration.Round(time.Millisecond)))
	t.blank()
	t.fields(t.label("Packets"), pad, " · ", sim.Thousands(int64(st.Decoded))+" tracked", sim.Thousands(int64(st.Skipped))+" skipped")
	for _, k := range slices.Sorted(maps.Keys(st.SkipReasons)) {
		t.prose(pad+"  ", pad+"    ", fmt.Sprintf("skipped: %s × %d", k, st.SkipReasons[k]), "")
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(st.Verdicts)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, st.Verdicts[k]))
	}
	if len(parts) > 0 {
		t.fields(t.label("Verdicts"), pad, " · ", parts...)
	}
	c := tr.Counts()
	set := tr.Settings()
	t.prose(t.label("Table"), pad, fmt.Sprintf("%s entries at the end of the capture (max %s)",
		sim.Thousands(int64(c.Total)), sim.Thousands(set[engine.SetMax])), "")
	smp := sim.Sample{Total: c.Total, TCP: c.TCP, UDP: c.UDP, ICMP: c.ICMP, Other: c.Other}
	for _, row := range stateRows(smp) {
		t.line(fmt.Sprintf("%s  %-12s %9s", pad, row.name, sim.Thousands(int64(row.n))))
	}
	t.fields(pad+"  ", pad+"  ", " · ", "assured "+sim.Thousands(int64(c.Assured)), "unreplied "+sim.Thousands(int64(c.Unreplied)))
	v := tr.TotalStats().Values
	t.fields(t.label("Counters"), pad, " · ", fmt.Sprintf("drop %d", v[conntrack.StatDrop]), fmt.Sprintf("early_drop %d", v[conntrack.StatEarlyDrop]),
		fmt.Sprintf("insert_failed %d", v[conntrack.StatInsertFailed]), fmt.Sprintf("chaintoolong %d", v[conntrack.StatChainTooLong]),
		fmt.Sprintf("invalid %d", v[conntrack.StatInvalid]))
	_, _ = io.WriteString(w, t.b.String())
}
