package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/sim"
)

// writeSimHTML writes 'simulate -o html': the run's verdict, its summary
// and its timeline chart, then the diagnosis of the table at the end when
// there is one (--report), as one self-contained page.
func writeSimHTML(w io.Writer, r *sim.Result, sc *sim.Scenario, rep *analyze.Report) error {
	return render.HTML(w, rep, render.HTMLOptions{Simulation: simulationHTML(r, sc)})
}

// simulationHTML is a run as the HTML page shows it: the text output's
// verdict (same tag, same words), its summary lines and the chart --svg
// writes.
func simulationHTML(r *sim.Result, sc *sim.Scenario) *render.HTMLSimulation {
	level, label := analyze.Healthy, "OK"
	switch r.Cause() {
	case sim.CauseTableFull:
		level, label = analyze.Critical, "FULL"
	case sim.CauseChainTooLong:
		level, label = analyze.Critical, "HASH CHAINS TOO LONG"
	case sim.CauseFullNoDrops:
		level, label = analyze.Warning, "FULL, NO DROPS"
	case sim.CauseNearFull:
		level, label = analyze.Warning, "NEAR FULL"
	}
	th := func(n int) string { return sim.Thousands(int64(n)) }
	tu := func(n uint64) string { return sim.Thousands(int64(n)) }
	usage := func(n int) string {
		if r.Max <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f%%)", float64(n)*100/float64(r.Max))
	}
	facts := []string{
		fmt.Sprintf("%s of virtual time · seed %d", r.Duration, r.Seed),
		fmt.Sprintf("Table: max %s · buckets %s · peak %s%s at %s", th(r.Max), th(int(r.Settings[engine.SetBuckets])),
			th(r.Peak), usage(r.Peak), sim.Clock(r.PeakAt)),
		fmt.Sprintf("Steady: %s entries%s, the mean over the last %s", th(r.Steady.Total), usage(r.Steady.Total),
			(r.Duration / 10).Round(time.Second)),
	}
	var states []string
	for _, row := range stateRows(r.Steady) {
		states = append(states, fmt.Sprintf("%s %s", row.name, th(row.n)))
	}
	if len(states) > 0 {
		facts = append(facts, "Steady by state: "+strings.Join(states, " · "))
	}
	facts = append(facts, fmt.Sprintf("Counters: drop %s · early_drop %s · insert_failed %s · chaintoolong %s",
		tu(r.Drop), tu(r.EarlyDrop), tu(r.InsertFailed), tu(r.ChainTooLong)))
	if r.FirstDrop >= 0 {
		facts = append(facts, fmt.Sprintf("First drop at %s%s", sim.Clock(r.FirstDrop), dropCause(r)))
	}
	facts = append(facts, fmt.Sprintf("Traffic: %s connections · %s packets · %s retransmitted",
		tu(r.Connections), tu(r.Packets), tu(r.Retransmits)))
	if r.Failed > 0 {
		facts = append(facts, tu(r.Failed)+" connections failed: conntrack dropped their packets until they gave up")
	}
	if r.Lost > 0 {
		facts = append(facts, tu(r.Lost)+" connections lost silently to the middlebox (no FIN, no RST)")
	}
	for _, wl := range sc.Workloads {
		facts = append(facts, fmt.Sprintf("Workload %s: %s", wl.Name, wl.Describe()))
	}
	if len(sc.NoTrack) > 0 {
		facts = append(facts, "NOTRACK: "+strings.Join(notrackParts(sc.NoTrack), " · "))
	}
	if set := changedSettings(r.Settings); len(set) > 0 {
		facts = append(facts, "Settings: "+strings.Join(set, " · "))
	}
	chart := timelineChart(r, sc)
	return &render.HTMLSimulation{Title: "ctdoctor simulate " + r.Scenario, Level: level, Label: label,
		Verdict: r.Verdict(), Description: r.Description, Facts: facts, Chart: &chart, ChartSubtitle: svgSubtitle(r)}
}
