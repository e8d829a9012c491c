package tune

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/sim"
)

// MaxPredictWall bounds the wall time a prediction may take, as the
// simulator's estimate (sim.Scenario.Estimate) of one run puts it: the
// two runs go in parallel.
const MaxPredictWall = 2 * time.Minute

// Predict checks a plan on the simulator before anyone applies it: it
// runs the scenario (usually sim.Derive's, from the same reading the plan
// was made from) twice with the same seed — as it is, the host's current
// settings, and with the changes the plan applies — and returns the peak,
// the drops and the early drops of both runs.
//
// The plan's changes become the scenario's: a sysctl step sets the setting
// of the same name (legacy ip_conntrack names included), a hash-size step
// nf_conntrack_buckets, a NOTRACK step raw-table rules at both hooks
// (loopback: iface lo; a service: its port as destination and as source,
// both directions). Only the steps apply would carry out count
// (Plan.Applicable: a per-namespace plan leaves the global ones out); the
// rest (the live ones: settings, NOTRACK rules), and settings the simulator
// does not know, are listed in NotSimulated. Files (persistence) change
// nothing live and are ignored.
//
// d is the virtual time simulated; 0 keeps the scenario's own (a derived
// scenario's lasts twice the longest time its churning entries stay in the
// table, so both runs settle). The two runs go in parallel; a scenario the
// simulator's estimate says would take longer than MaxPredictWall is
// refused.
func Predict(ctx context.Context, plan *Plan, sc *sim.Scenario, d time.Duration) (*Prediction, error) {
	if plan == nil {
		return nil, errors.New("predict: no plan")
	}
	if sc == nil {
		return nil, errors.New("predict: no scenario to run the plan on")
	}
	if d < 0 {
		return nil, fmt.Errorf("predict: negative duration %s", d)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	before := sc.Clone()
	if d > 0 {
		before.Duration, before.Step = d, 0
	}
	if err := before.Validate(); err != nil {
		return nil, fmt.Errorf("predict: %w", err)
	}
	after := before.Clone()
	changes, notes := planOnScenario(plan, after)
	if err := after.Validate(); err != nil {
		return nil, fmt.Errorf("predict: the plan's settings: %w", err)
	}
	if est := before.Estimate(); est.Wall() > MaxPredictWall {
		return nil, fmt.Errorf("predict: simulating %s of this traffic would take %s (%s); a prediction may take %s: give a shorter duration",
			before.Duration, est.Wall().Round(time.Second), est, MaxPredictWall)
	}

	// The two runs in parallel; one failing stops the other.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		res  [2]*sim.Result
		errs [2]error
	)
	for i, v := range [2]*sim.Scenario{before, after} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res[i], errs[i] = sim.Run(runCtx, v, sim.Options{}); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	for i, what := range []string{"current settings", "planned settings"} {
		if errs[i] != nil {
			return nil, fmt.Errorf("predict: simulate with the %s: %w", what, errs[i])
		}
	}
	return &Prediction{Scenario: string(before.YAML()), Duration: before.Duration.Seconds(),
		Before: predictionState(res[0]), After: predictionState(res[1]),
		Verdict:      sim.Compare(res[0], res[1], changes).Diff().Verdict,
		NotSimulated: notes}, nil
}

func predictionState(r *sim.Result) PredictionState {
	s := PredictionState{PeakEntries: int64(r.Peak), Max: int64(r.Max), Drops: r.DroppedPackets, EarlyDrops: r.EarlyDrop}
	if r.Max > 0 {
		s.PeakUsage = float64(r.Peak) / float64(r.Max)
	}
	return s
}

// planOnScenario makes the plan's live changes to sc: settings and NOTRACK
// rules. It returns the settings changed (canonical names) and what it
// could not simulate.
func planOnScenario(p *Plan, sc *sim.Scenario) (map[string]int64, []string) {
	changes := map[string]int64{}
	var notes []string
	if sc.Settings == nil {
		sc.Settings = map[string]int64{}
	}
	applied := p.Applicable()
	if len(applied) < len(p.Steps) {
		for _, st := range p.Steps {
			if st.Scope == ScopeGlobal && !p.Global && live(st) {
				notes = append(notes, st.Title+" (a global step: this plan does not apply it without --global)")
			}
		}
	}
	for _, st := range applied {
		if st.Notrack != nil {
			sc.NoTrack = append(sc.NoTrack, NotrackRules(*st.Notrack)...)
			continue
		}
		for _, a := range st.Actions {
			switch a.Kind {
			case KindSysctl, KindModuleParam:
			default:
				continue // files persist what the live steps do; rules without a NOTRACK match change no tracking
			}
			name, ok := simSetting(a)
			if !ok {
				notes = append(notes, fmt.Sprintf("%s = %s (the simulator has no such setting)", a.Path, a.Value))
				continue
			}
			canon, v, err := engine.ParseSetting(name + "=" + strings.TrimSpace(a.Value))
			if err != nil {
				notes = append(notes, fmt.Sprintf("%s = %s (%v)", a.Path, a.Value, err))
				continue
			}
			sc.Settings[canon] = v
			changes[canon] = v
		}
	}
	return changes, notes
}

// live reports whether a step changes what the tracker does now (a
// setting, a NOTRACK rule), not only what happens at the next boot.
func live(st Step) bool {
	if st.Notrack != nil {
		return true
	}
	for _, a := range st.Actions {
		if a.Kind == KindSysctl || a.Kind == KindModuleParam {
			return true
		}
	}
	return false
}

// simSetting maps a sysctl or module-parameter path to the simulator's
// setting name.
func simSetting(a Action) (string, bool) {
	if a.Kind == KindModuleParam {
		return engine.SetBuckets, path.Base(a.Path) == "hashsize"
	}
	name := strings.TrimPrefix(a.Path, "/proc/sys/")
	if name == a.Path {
		return "", false
	}
	name = strings.ReplaceAll(name, "/", ".")
	// Legacy kernels: net.ipv4.ip_conntrack_max, net.ipv4.netfilter.ip_conntrack_*.
	if _, rest, ok := strings.Cut(name, "ip_conntrack_"); ok {
		name = "nf_conntrack_" + rest
	}
	canon, err := engine.CanonicalSetting(name)
	return canon, err == nil
}

// NotrackRules are the raw-table rules a NOTRACK change adds, as the
// simulator expresses them: loopback at both hooks on lo (loopback is
// tracked once, at OUTPUT, so both are needed); a service's port as
// destination and as source at both hooks, so that both directions of its
// connections go untracked whichever side this host is.
func NotrackRules(m analyze.TrafficMatch) []engine.NoTrackRule {
	if m.Loopback {
		return []engine.NoTrackRule{{Hook: engine.Prerouting, Iface: "lo"}, {Hook: engine.Output, Iface: "lo"}}
	}
	proto, ok := conntrack.ProtoByName(m.Proto)
	if !ok || m.Port == 0 {
		return nil
	}
	port := engine.PortRange{Lo: m.Port, Hi: m.Port}
	var out []engine.NoTrackRule
	for _, h := range []engine.Hook{engine.Prerouting, engine.Output} {
		out = append(out, engine.NoTrackRule{Hook: h, Proto: proto, DPort: port}, engine.NoTrackRule{Hook: h, Proto: proto, SPort: port})
	}
	return out
}

// String is the prediction in a few lines for a person: the verdict,
// before → after, and what was not simulated.
func (p *Prediction) String() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	st := func(s PredictionState) string {
		return fmt.Sprintf("peak %s of %s (%.0f%%), %s dropped, %s early drops", sim.Thousands(s.PeakEntries), sim.Thousands(s.Max),
			s.PeakUsage*100, sim.Thousands(int64(s.Drops)), sim.Thousands(int64(s.EarlyDrops)))
	}
	fmt.Fprintf(&b, "simulated %s: %s\n", time.Duration(p.Duration*float64(time.Second)), p.Verdict)
	fmt.Fprintf(&b, "  now:  %s\n  then: %s\n", st(p.Before), st(p.After))
	for _, n := range p.NotSimulated {
		fmt.Fprintf(&b, "  not simulated: %s\n", n)
	}
	return b.String()
}
