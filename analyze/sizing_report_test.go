package analyze_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/sim"
)

// settingNumbers finds, in the prose of fixes, every value given to the
// table's limit and to its hash size: "raise the limit from … to N
// entries", "one bucket per entry of the new limit N", and any sysctl or
// hash-size assignment a fix line might spell out ("nf_conntrack_max=N",
// "hashsize=N", "echo N > …/hashsize"). Buckets and hashsize are one
// setting (writing either resizes the same hash table). Refs only refer to
// a value another finding proposes.
var settingNumbers = []struct {
	setting string
	re      *regexp.Regexp
	ref     bool
}{
	{"max", regexp.MustCompile(`raise the limit from .* to (\d+) entries`), false},
	{"max", regexp.MustCompile(`(?:nf|ip)_conntrack_max\b['"]?[\s=:]*(\d+)`), false},
	{"max", regexp.MustCompile(`of the new limit (\d+)`), true},
	{"buckets", regexp.MustCompile(`nf_conntrack_buckets\b['"]?[\s=:]*(\d+)`), false},
	{"buckets", regexp.MustCompile(`hashsize\b['"]?[\s=:]*(\d+)`), false},
	{"buckets", regexp.MustCompile(`echo\s+(\d+)\s*>\s*\S*hashsize\b`), false},
}

// proposedSizes collects, per setting, the distinct values the report's
// changes give it (the data the planner turns into commands) and the
// values its fixes' prose speaks of.
func proposedSizes(r *analyze.Report) map[string][]int64 {
	got := map[string][]int64{}
	add := func(setting string, v int64) {
		if !slices.Contains(got[setting], v) {
			got[setting] = append(got[setting], v)
		}
	}
	for _, f := range r.Findings {
		for _, fix := range f.Fixes {
			for _, sn := range settingNumbers {
				for _, m := range sn.re.FindAllStringSubmatch(fix, -1) {
					v, _ := strconv.ParseInt(m[1], 10, 64)
					add(sn.setting, v)
				}
			}
		}
		for _, c := range f.Changes {
			if setting := map[string]string{"max": "max", "hashsize": "buckets"}[c.Setting]; setting != "" {
				add(setting, c.Proposed)
			}
		}
	}
	return got
}

// checkOneSizing fails unless every fix of the report that sets the
// table's limit or hash size gives the same value, and that value is not
// below what the host has now.
func checkOneSizing(t *testing.T, name string, r *analyze.Report, curMax, curBuckets int64) map[string][]int64 {
	t.Helper()
	got := proposedSizes(r)
	for setting, vals := range got {
		if len(vals) != 1 {
			t.Errorf("%s: the fixes give %s %d different values %v, want one", name, setting, len(vals), vals)
		}
		cur := curMax
		if setting == "buckets" {
			cur = curBuckets
		}
		for _, v := range vals {
			if v < cur {
				t.Errorf("%s: a fix proposes %s %d, below the current %d", name, setting, v, cur)
			}
		}
	}
	// A finding whose prose proposes a size carries it as data, for the
	// planner (its commands come from there).
	for _, f := range r.Findings {
		for _, fix := range f.Fixes {
			for _, sn := range settingNumbers {
				if sn.ref || !sn.re.MatchString(fix) {
					continue
				}
				want := map[string]string{"max": "max", "buckets": "hashsize"}[sn.setting]
				if !slices.ContainsFunc(f.Changes, func(c analyze.Change) bool { return c.Setting == want }) {
					t.Errorf("%s: %s proposes a %s in its fixes but has no change for the planner: %s", name, f.ID, sn.setting, fix)
				}
			}
		}
	}
	return got
}

// fixtureReport diagnoses a fixture host as ctdoctor --root does.
func fixtureReport(t *testing.T, dir string) (*host.Snapshot, *analyze.Report) {
	t.Helper()
	opt := host.Options{Root: dir, Log: true}
	s, err := host.Read(context.Background(), opt)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var bd *analyze.Breakdown
	if src, err := host.Entries(opt, s); err == nil {
		acc := analyze.NewAccumulator()
		acc.IdleAbove, acc.IdleAfter = analyze.IdleWindow(s)
		if err := src(func(f *conntrack.Flow) error { acc.Add(f); return nil }); err != nil {
			t.Fatalf("entries of %s: %v", dir, err)
		}
		b := acc.Breakdown()
		bd = &b
	}
	now := s.TakenAt
	if !s.Log.Last.IsZero() {
		now = s.Log.Last.Add(time.Minute)
	}
	return s, analyze.Analyze(s, bd, now)
}

func fixtureHosts(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("../host/testdata/hosts")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("../host/testdata/hosts", e.Name()))
		}
	}
	if len(dirs) < 4 {
		t.Fatalf("found %d fixture hosts, want at least 4", len(dirs))
	}
	return dirs
}

// Issue 8 item 1: one report, one proposal per setting. pre515 used to say
// hashsize 131072 (table-full) and 262144 (max-buckets-ratio,
// hash-chains-long); centos5 gave three values.
func TestFixtureReportsGiveOneSizing(t *testing.T) {
	for _, dir := range fixtureHosts(t) {
		s, r := fixtureReport(t, dir)
		got := checkOneSizing(t, filepath.Base(dir), r, s.Settings.Max, s.Settings.Buckets)
		t.Logf("%s: max %d buckets %d → changes and fixes propose %v", filepath.Base(dir), s.Settings.Max, s.Settings.Buckets, got)
	}
}

// The two fixtures whose table is full must get a proposal for both
// settings, with the arithmetic spelled out: twice the peak rounded up to
// a power of two, one bucket per entry, and the memory that costs.
func TestFixtureSizingValues(t *testing.T) {
	for _, tc := range []struct {
		host              string
		max, buckets, mem int64
	}{
		// 261,837 of 262,144 and 95,591 drops: the peak is the limit,
		// 2 × 262144 = 524288; 524288 × 320 B + 524288 × 8 B.
		{"pre515", 524288, 524288, 524288*320 + 524288*8},
		// 36,271 entries over a limit of 16,640: 2 × 36271 = 72542 →
		// 131072; 384 B per entry on that kernel.
		{"centos5", 131072, 131072, 131072*384 + 131072*8},
	} {
		s, r := fixtureReport(t, "../host/testdata/hosts/"+tc.host)
		got := proposedSizes(r)
		if !slices.Equal(got["max"], []int64{tc.max}) || !slices.Equal(got["buckets"], []int64{tc.buckets}) {
			t.Errorf("%s: fixes propose %v, want max %d and buckets %d", tc.host, got, tc.max, tc.buckets)
		}
		z := analyze.ProposeSizing(s, r)
		if z.Max != tc.max || z.Buckets != tc.buckets || z.MemoryAtMaxBytes != tc.mem {
			t.Errorf("%s: sizing %+v, want max %d buckets %d memory %d", tc.host, z, tc.max, tc.buckets, tc.mem)
		}
		mem := analyze.HumanBytes(tc.mem)
		if !strings.Contains(strings.Join(fixesOf(r, "table-full"), "\n"), mem) {
			t.Errorf("%s: table-full's fixes do not state the memory at the new size (%s):\n%s", tc.host, mem,
				strings.Join(fixesOf(r, "table-full"), "\n"))
		}
	}
}

func fixesOf(r *analyze.Report, id string) []string {
	for _, f := range r.Findings {
		if f.ID == id {
			return f.Fixes
		}
	}
	return nil
}

// The simulated nginx host has 65,536 buckets and max 65,536 and fills up:
// its report used to propose hashsize 32768, half of today's table.
func TestSimulatedReportGivesOneSizing(t *testing.T) {
	sc, err := sim.Load("nginx-local-upstream")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration, sc.Step = 150*time.Second, 0 // full at 1:40; the default 10 minutes adds nothing here
	s, err := sim.New(sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := s.Report(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 10)
	if err != nil {
		t.Fatal(err)
	}
	got := checkOneSizing(t, "simulated nginx-local-upstream", r, r.Table.Max, r.Table.Buckets)
	if len(got["buckets"]) == 0 || len(got["max"]) == 0 {
		t.Errorf("the simulated table fills up (%d of %d), yet the fixes propose %v", r.Table.Count, r.Table.Max, got)
	}
}

// No finding a user sees may refer to material outside the repository
// (the "seeds" the project started from): it must explain the pitfall.
func TestFindingsDoNotCiteSeeds(t *testing.T) {
	check := func(name string, r *analyze.Report) {
		for _, f := range r.Findings {
			text := strings.ToLower(f.Summary + "\n" + f.Explanation + "\n" + strings.Join(f.Fixes, "\n"))
			if strings.Contains(text, "seed") {
				t.Errorf("%s: finding %s mentions seeds:\n%s", name, f.ID, text)
			}
		}
	}
	for _, dir := range fixtureHosts(t) {
		_, r := fixtureReport(t, dir)
		check(filepath.Base(dir), r)
	}
	// Every rule: two synthetic reports that make each one fire.
	fired := map[string]bool{}
	for i, r := range []*analyze.Report{allRulesReport(t), noStatsReport()} {
		check("synthetic "+strconv.Itoa(i), r)
		for _, f := range r.Findings {
			fired[f.ID] = true
		}
	}
	for _, id := range []string{"table-full", "table-near-full", "netns-near-full", "insert-failed-races", "chain-too-long",
		"hash-chains-long", "max-buckets-ratio", "unreplied-flood", "timewait-dominant", "local-ports-exhausted",
		"loopback-tracked", "busy-port-tracked", "established-timeout-long", "legacy-ip-conntrack", "kube-proxy-manages",
		"stats-unavailable"} {
		if !fired[id] {
			t.Errorf("the synthetic reports do not make %s fire: its text is not checked", id)
		}
	}
}

func noStatsReport() *analyze.Report {
	s := &host.Snapshot{Source: "proc", Kernel: "6.18.44", CPUs: 2, MemBytes: 8 << 30,
		Settings: host.Settings{Count: 10, Max: 262144, Buckets: 262144, HashSize: 262144, SlabSize: 256}}
	return analyze.Analyze(s, nil, time.Now())
}

func allRulesReport(t *testing.T) *analyze.Report {
	t.Helper()
	var sb strings.Builder
	line := func(s string) { sb.WriteString(s + "\n") }
	for i := range 600 {
		p := strconv.Itoa(20000 + i)
		line("tcp      6 100 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=" + p + " dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=" + p + " [ASSURED] mark=0 use=1")
	}
	for i := range 300 {
		p := strconv.Itoa(20000 + i)
		line("tcp      6 100 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=" + p + " dport=8081 src=127.0.0.1 dst=127.0.0.1 sport=8081 dport=" + p + " [ASSURED] mark=0 use=1")
	}
	for i := range 600 {
		p := strconv.Itoa(1000 + i)
		a := "10.9.0." + strconv.Itoa(i%200+1)
		line("udp      17 20 src=" + a + " dst=10.0.0.1 sport=" + p + " dport=5060 [UNREPLIED] src=10.0.0.1 dst=" + a + " sport=5060 dport=" + p + " mark=0 use=1")
	}
	for i := range 300 {
		p := strconv.Itoa(30000 + i)
		line("tcp      6 1000 ESTABLISHED src=10.0.0.5 dst=10.0.0.6 sport=" + p + " dport=443 src=10.0.0.6 dst=10.0.0.5 sport=443 dport=" + p + " [ASSURED] mark=0 use=1")
	}
	acc := analyze.NewAccumulator()
	s := &host.Snapshot{Source: "proc", Kernel: "5.4.0", CPUs: 2, MemBytes: 8 << 30,
		NetNS: host.NetNS{Name: "init", Init: true, Inode: 4026531840},
		Settings: host.Settings{Count: 60000, Max: 65536, Buckets: 16384, HashSize: 16384, SlabSize: 320, Legacy: true,
			Timeouts: map[string]int64{"tcp_timeout_established": 432000, "tcp_timeout_time_wait": 120}},
		TCP:      host.TCPSysctls{KeepaliveTime: 7200, KeepaliveIntvl: 75, KeepaliveProbes: 9, PortRangeLow: 20000, PortRangeHigh: 20599},
		Kube:     host.KubeProxy{Present: true, Evidence: []string{"process kube-proxy running"}},
		AllNetNS: []host.NetNSUsage{{NetNS: host.NetNS{Name: "busy", Inode: 4026532000}, Count: 60000, Max: 65536}}}
	acc.IdleAbove, acc.IdleAfter = analyze.IdleWindow(s)
	if err := conntrack.ReadAll(strings.NewReader(sb.String()))(func(f *conntrack.Flow) error { acc.Add(f); return nil }); err != nil {
		t.Fatal(err)
	}
	b := acc.Breakdown()
	st := conntrack.Stats{}
	st.Set(conntrack.StatDrop, 10)
	st.Set(conntrack.StatInsertFailed, 10)
	st.Set(conntrack.StatChainTooLong, 10)
	s.Stats = &host.StatsRead{Source: "proc", Total: st}
	r := analyze.Analyze(s, &b, time.Now())
	return r
}
