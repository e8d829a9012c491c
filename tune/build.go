package tune

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
)

// NotrackPlanner turns a NOTRACK change into steps for the firewall
// actually present (nftables or iptables, the operator's own tables and
// chains), with the accept rule for untracked packets before every
// stateful rule the traffic reaches. It returns a *Refusal error when the
// traffic must stay tracked (NAT, conntrack helpers).
type NotrackPlanner interface {
	PlanNotrack(m analyze.TrafficMatch, t Target) ([]Step, error)
}

// Refusal is a change the planner will not make, and why.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// Options shape a plan.
type Options struct {
	Target Target
	// Global includes the host-wide steps (nf_conntrack_max, the hash size,
	// /etc files) in a plan for a namespace other than the initial one;
	// they are always included for the initial namespace.
	Global bool
	// MaxMemoryShare is the largest share of RAM a table at its new max may
	// take (0: DefaultMaxMemoryShare); Force lifts the limit.
	MaxMemoryShare float64
	Force          bool
	// Notrack plans NOTRACK changes; nil leaves them out (listed as skipped).
	Notrack NotrackPlanner
	// Now is the plan's time (zero: time.Now()).
	Now time.Time
}

// DefaultMaxMemoryShare is the largest share of RAM a plan lets the table
// take when full, unless forced.
const DefaultMaxMemoryShare = 0.10

// kubeProxyOwns are the settings kube-proxy rewrites at every start, with
// the KubeProxyConfiguration field that controls each.
var kubeProxyOwns = map[string]string{
	"max":                     "conntrack.maxPerCore (and conntrack.min)",
	"hashsize":                "conntrack.maxPerCore (it sets hashsize = max / 4)",
	"tcp_timeout_established": "conntrack.tcpEstablishedTimeout",
	"tcp_timeout_close_wait":  "conntrack.tcpCloseWaitTimeout",
	"udp_timeout":             "conntrack.udpTimeout",
	"udp_timeout_stream":      "conntrack.udpStreamTimeout",
	"tcp_be_liberal":          "conntrack.tcpBeLiberal",
}

// Build turns the findings of a report into a plan for the target. The
// report's findings carry their changes as data (Finding.Changes); one
// value is kept per setting (the first, from the most severe finding).
func Build(rep *analyze.Report, snap *host.Snapshot, opt Options) (*Plan, error) {
	if rep == nil || snap == nil {
		return nil, errors.New("tune: no report to plan from")
	}
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	t := opt.Target
	if t.Root == "" {
		t.Root = "/"
	}
	t.Legacy = snap.Settings.Legacy
	if !t.Module.Loaded && t.Module.Name == "" {
		t.Module = ReadModuleState(t.Root, t.ModuleName())
	}
	if t.Legacy {
		t.Module.BuiltIn = false // ip_conntrack was a module in every distribution kernel
	}
	tuned, err := ReadTuned(t.Root)
	if err != nil {
		return nil, err
	}
	p := &Plan{Schema: PlanSchema, ID: newID(now), CreatedAt: now.UTC(), Global: opt.Global || t.Init,
		Host: PlanHost{Hostname: snap.Hostname, BootID: readBootID(t.Root), Kernel: snap.Kernel,
			NetNS: netnsName(snap), NetNSInode: snap.NetNS.Inode, Root: t.Root}}
	share := opt.MaxMemoryShare
	if share <= 0 {
		share = DefaultMaxMemoryShare
	}

	var settings []Setting
	seen := map[string]bool{}
	var notrack []Step
	for _, f := range rep.Findings {
		for _, c := range f.Changes {
			switch c.Kind {
			case analyze.ChangeNotrack:
				if c.Match == nil {
					continue
				}
				what := "stop tracking " + describeMatch(*c.Match)
				if seen["notrack "+what] {
					continue
				}
				seen["notrack "+what] = true
				if opt.Notrack == nil {
					p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: what, Reason: "the firewall ruleset was not read (not a live host, or no permission), so no rule can be placed safely"})
					continue
				}
				steps, err := opt.Notrack.PlanNotrack(*c.Match, t)
				var ref *Refusal
				switch {
				case errors.As(err, &ref):
					p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: what, Reason: ref.Reason})
					continue
				case err != nil:
					return nil, fmt.Errorf("plan %s: %w", what, err)
				}
				for i := range steps {
					steps[i].Finding, steps[i].Evidence = f.ID, f.Evidence
					m := *c.Match
					steps[i].Notrack = &m
				}
				notrack = append(notrack, steps...)
			case analyze.ChangeSysctl, analyze.ChangeModuleParam:
				if seen[c.Setting] {
					continue
				}
				seen[c.Setting] = true
				if field, owned := kubeProxyOwns[c.Setting]; owned && snap.Kube.Present {
					p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: fmt.Sprintf("set %s to %d", c.Setting, c.Proposed),
						Reason: fmt.Sprintf("kube-proxy rewrites it at every start: set %s in kube-proxy's KubeProxyConfiguration (the kube-proxy ConfigMap in kube-system), then restart kube-proxy", field)})
					continue
				}
				skip, note := tuned.Owner(t, c.Setting, c.Proposed)
				if skip != "" {
					p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: fmt.Sprintf("set %s to %d", c.Setting, c.Proposed), Reason: skip})
					continue
				}
				if c.Setting == "max" && snap.MemBytes > 0 && !opt.Force {
					if limit := int64(share * float64(snap.MemBytes)); c.CostBytes > limit {
						p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: fmt.Sprintf("raise max to %d", c.Proposed),
							Reason: fmt.Sprintf("a full table would take %s, more than %.0f%% of this host's %s of RAM (%s); use --force to plan it anyway, or remove what fills the table first",
								analyze.HumanBytes(c.CostBytes), share*100, analyze.HumanBytes(int64(snap.MemBytes)), analyze.HumanBytes(limit))})
						seen["hashsize"] = true // the buckets go with max
						continue
					}
				}
				settings = append(settings, Setting{Name: c.Setting, Current: c.Current, Proposed: c.Proposed,
					Finding: f.ID, Evidence: f.Evidence, Reason: withNote(c.Reason, note), CostBytes: c.CostBytes})
			case analyze.ChangeGenericSysctl:
				if seen["key "+c.Key] {
					continue
				}
				seen["key "+c.Key] = true
				what := fmt.Sprintf("set %s to %s", c.Key, c.Value)
				if err := checkGenericSysctl(c); err != nil {
					p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: what, Reason: err.Error()})
					continue
				}
				global := c.Scope == ScopeGlobal
				skip, note := tuned.OwnerKey(t, c.Key, global, c.Value)
				if skip != "" {
					p.Skipped = append(p.Skipped, Skipped{Finding: f.ID, What: what, Reason: skip})
					continue
				}
				settings = append(settings, Setting{Key: c.Key, Value: c.Value, CurrentValue: c.CurrentValue, Global: global,
					Current: c.Current, Proposed: c.Proposed, Finding: f.ID, Evidence: f.Evidence, Reason: withNote(c.Reason, note)})
			}
		}
	}
	steps, skipped, err := settingSteps(t, settings)
	if err != nil {
		return nil, err
	}
	for _, st := range append(notrack, steps...) {
		if st.Scope == ScopeGlobal && !p.Global {
			p.GlobalSteps = append(p.GlobalSteps, st)
		} else {
			p.Steps = append(p.Steps, st)
		}
	}
	p.Skipped = append(p.Skipped, skipped...)
	if p.Steps == nil {
		p.Steps = []Step{}
	}
	return p, nil
}

// Applicable returns the steps apply carries out: Steps (a plan made
// without Global holds the whole host's steps apart, in GlobalSteps).
func (p *Plan) Applicable() []Step {
	if p.Global {
		return p.Steps
	}
	return slices.DeleteFunc(slices.Clone(p.Steps), func(s Step) bool { return s.Scope == ScopeGlobal })
}

// Empty reports whether the plan has nothing to do, here or for the
// whole host.
func (p *Plan) Empty() bool { return len(p.Steps) == 0 && len(p.GlobalSteps) == 0 }

// checkGenericSysctl refuses a generic sysctl change the planner cannot
// make safely: a key that is no sysctl name, a value over several lines,
// a per-namespace key outside net.* (only those are namespaced), a scope
// it does not know.
func checkGenericSysctl(c analyze.Change) error {
	switch {
	case c.Key == "" || strings.Trim(c.Key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" ||
		strings.HasPrefix(c.Key, ".") || strings.HasSuffix(c.Key, ".") || strings.Contains(c.Key, ".."):
		return fmt.Errorf("%q is not a sysctl name", c.Key)
	case strings.TrimSpace(c.Value) == "" || strings.ContainsAny(c.Value+c.CurrentValue, "\n\x00"):
		return fmt.Errorf("no value, or a value over several lines, for %s", c.Key)
	case c.Scope == ScopeNetNS && !strings.HasPrefix(c.Key, "net."):
		return fmt.Errorf("%s is not a per-namespace setting (only net.* keys are)", c.Key)
	case c.Scope != ScopeNetNS && c.Scope != ScopeGlobal:
		return fmt.Errorf("scope %q of %s: want %s or %s", c.Scope, c.Key, ScopeNetNS, ScopeGlobal)
	}
	return nil
}

func describeMatch(m analyze.TrafficMatch) string {
	if m.Loopback {
		return "loopback traffic"
	}
	return fmt.Sprintf("%s port %d", m.Proto, m.Port)
}

func netnsName(s *host.Snapshot) string {
	if s.NetNS.Init || s.NetNS.Name == "" {
		return "init"
	}
	return s.NetNS.Name
}

func readBootID(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "/proc/sys/kernel/random/boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func newID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
