package tune

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
)

type fakeNotrack struct{ refuse string }

func (f fakeNotrack) PlanNotrack(m analyze.TrafficMatch, t Target) ([]Step, error) {
	if f.refuse != "" {
		return nil, &Refusal{Reason: f.refuse}
	}
	return []Step{{Title: "notrack " + describeMatch(m), Scope: ScopeNetNS, Commands: []string{t.Prefix() + "nft -f -"},
		Actions: []Action{{Kind: KindNft, Script: "add table inet ctdoctor\n"}}}}, nil
}

func testReport(changes ...[]analyze.Change) *analyze.Report {
	r := &analyze.Report{}
	for i, c := range changes {
		r.Findings = append(r.Findings, analyze.Finding{ID: []string{"table-full", "timewait-dominant", "loopback-tracked"}[i], Changes: c})
	}
	return r
}

func TestBuild(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"/sys/module/nf_conntrack/parameters/hashsize": "65536\n",
		"/proc/sys/kernel/random/boot_id":              "0f1e2d3c-aaaa-bbbb-cccc-000000000001\n",
	})
	snap := &host.Snapshot{Hostname: "web1", Kernel: "6.18.44", MemBytes: 4 << 30, NetNS: host.NetNS{Name: "demo", Inode: 4026532177}}
	rep := testReport(
		[]analyze.Change{{Kind: analyze.ChangeSysctl, Setting: "max", Current: 65536, Proposed: 262144, CostBytes: 66 << 20},
			{Kind: analyze.ChangeModuleParam, Setting: "hashsize", Current: 65536, Proposed: 262144}},
		[]analyze.Change{{Kind: analyze.ChangeSysctl, Setting: "tcp_timeout_time_wait", Current: 120, Proposed: 30},
			{Kind: analyze.ChangeSysctl, Setting: "max", Current: 65536, Proposed: 131072}}, // a second, weaker proposal: ignored
		[]analyze.Change{{Kind: analyze.ChangeNotrack, Match: &analyze.TrafficMatch{Loopback: true}}},
	)
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	p, err := Build(rep, snap, Options{Target: Target{Root: root, NetNS: "demo"}, Notrack: fakeNotrack{}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if p.Schema != PlanSchema || p.Host.BootID != "0f1e2d3c-aaaa-bbbb-cccc-000000000001" || p.Host.NetNS != "demo" || p.Global {
		t.Fatalf("plan header: %+v", p)
	}
	if p.Steps[0].Title != "notrack loopback traffic" || p.Steps[0].Finding != "loopback-tracked" {
		t.Errorf("NOTRACK must come first: %q", titles(p.Steps))
	}
	var maxes []string
	for _, s := range append(p.Steps, p.GlobalSteps...) {
		if s.Key == "net.netfilter.nf_conntrack_max" {
			maxes = append(maxes, s.Proposed)
		}
	}
	if len(maxes) != 1 || maxes[0] != "262144" {
		t.Errorf("one max, the first finding's: %q", maxes)
	}
	for _, s := range p.Steps {
		if s.Scope == ScopeGlobal {
			t.Errorf("a namespace plan without --global holds a global step among those apply makes: %s", s.Title)
		}
	}
	if len(p.GlobalSteps) == 0 {
		t.Errorf("the global steps are not listed apart")
	}
	if len(p.Applicable()) != 2 { // notrack + time_wait
		t.Errorf("applicable: %q", titles(p.Applicable()))
	}
	// The JSON round trip keeps every step.
	b, _ := json.Marshal(p)
	var back Plan
	if err := json.Unmarshal(b, &back); err != nil || len(back.Steps) != len(p.Steps) || back.ID != p.ID {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func TestBuildRefusals(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"/sys/module/nf_conntrack/parameters/hashsize": "65536\n"})
	snap := &host.Snapshot{MemBytes: 1 << 30, Kube: host.KubeProxy{Present: true}, NetNS: host.NetNS{Init: true}}
	rep := testReport(
		[]analyze.Change{{Kind: analyze.ChangeSysctl, Setting: "max", Current: 65536, Proposed: 4 << 20, CostBytes: 1 << 30},
			{Kind: analyze.ChangeModuleParam, Setting: "hashsize", Current: 65536, Proposed: 4 << 20}},
		[]analyze.Change{{Kind: analyze.ChangeSysctl, Setting: "tcp_timeout_established", Current: 432000, Proposed: 86400},
			{Kind: analyze.ChangeSysctl, Setting: "tcp_timeout_time_wait", Current: 120, Proposed: 30}},
		[]analyze.Change{{Kind: analyze.ChangeNotrack, Match: &analyze.TrafficMatch{Proto: "tcp", Port: 80}}},
	)
	p, err := Build(rep, snap, Options{Target: Target{Root: root, Init: true}, Notrack: fakeNotrack{refuse: "port 80 is DNATed"}})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, s := range p.Skipped {
		reasons[s.What] = s.Reason
	}
	if r := reasons["set max to 4194304"]; !strings.Contains(r, "kube-proxy") {
		t.Errorf("max on a kube-proxy node: %q (all: %v)", r, reasons)
	}
	if r := reasons["set tcp_timeout_established to 86400"]; !strings.Contains(r, "conntrack.tcpEstablishedTimeout") {
		t.Errorf("established on a kube-proxy node: %q", r)
	}
	if r := reasons["stop tracking tcp port 80"]; r != "port 80 is DNATed" {
		t.Errorf("refusal: %q", r)
	}
	if findStep(p.Steps, "net.netfilter.nf_conntrack_tcp_timeout_time_wait") == nil {
		t.Errorf("time_wait is not kube-proxy's: %q", titles(p.Steps))
	}
	// Without kube-proxy the same max is refused for its memory, with the figure.
	snap.Kube.Present = false
	p, err = Build(rep, snap, Options{Target: Target{Root: root, Init: true}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range p.Skipped {
		if strings.Contains(s.Reason, "1.0 GiB") && strings.Contains(s.Reason, "10% of this host's 1.0 GiB") {
			found = true
		}
		if s.What == "stop tracking tcp port 80" && !strings.Contains(s.Reason, "ruleset was not read") {
			t.Errorf("notrack without a ruleset: %q", s.Reason)
		}
	}
	if !found {
		t.Errorf("no memory refusal: %+v", p.Skipped)
	}
	if findStep(p.Steps, "/sys/module/nf_conntrack/parameters/hashsize") != nil {
		t.Errorf("buckets planned although max was refused")
	}
	p, err = Build(rep, snap, Options{Target: Target{Root: root, Init: true}, Force: true})
	if err != nil || findStep(p.Steps, "net.netfilter.nf_conntrack_max") == nil {
		t.Fatalf("--force: %v %q", err, titles(p.Steps))
	}
}
