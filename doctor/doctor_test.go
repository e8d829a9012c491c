package doctor_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/sim"
)

const fixtures = "../host/testdata/hosts/"

// The error contract of the package documentation, case by case.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.txt")
	if err := os.WriteFile(foreign, []byte("GET / HTTP/1.1\nHost: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		in   doctor.Input
		is   error
		as   any
		want string
	}{
		{"two sources", nil, doctor.Input{Root: dir, Snapshot: "x.tar.gz"}, doctor.ErrInput, nil, "alternatives"},
		{"netns with a root", nil, doctor.Input{Root: dir, NetNS: "x"}, doctor.ErrInput, nil, "live host only"},
		{"all-netns with a listing", nil, doctor.Input{ListingFile: foreign, AllNetNS: true}, doctor.ErrInput, nil, "live host only"},
		{"entries without a host", nil, doctor.Input{Entries: func(func(*conntrack.Flow) error) error { return nil }}, doctor.ErrInput, nil, "Entries needs Host"},
		{"missing listing", nil, doctor.Input{ListingFile: filepath.Join(dir, "missing")}, fs.ErrNotExist, nil, "missing"},
		{"foreign listing", nil, doctor.Input{ListingFile: foreign}, conntrack.ErrNoEntries, new(*conntrack.LineError), "line 1"},
		{"foreign stream", nil, doctor.Input{Listing: strings.NewReader("hello\n"), ListingName: "pasted"}, conntrack.ErrNoEntries, new(*conntrack.LineError), "pasted"},
		{"no host root", nil, doctor.Input{Root: dir}, host.ErrNotHostRoot, nil, dir},
		{"missing snapshot", nil, doctor.Input{Snapshot: filepath.Join(dir, "missing.tar.gz")}, fs.ErrNotExist, nil, "missing.tar.gz"},
		{"root is a file", nil, doctor.Input{Root: foreign}, nil, nil, "not a directory"},
		{"cancelled", cancelled, doctor.Input{Root: fixtures + "k8s-node"}, context.Canceled, nil, "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := doctor.Diagnose(tc.ctx, tc.in, doctor.Options{})
			if err == nil {
				t.Fatalf("no error; report %+v", rep.Verdict)
			}
			if rep != nil {
				t.Errorf("a report with the error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if tc.as != nil && !errors.As(err, tc.as) {
				t.Errorf("error %q is not a %T", err, tc.as)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

// What is not an error: a host without conntrack, and parts that cannot
// be read, which become warnings.
func TestNotErrors(t *testing.T) {
	empty := t.TempDir()
	if err := os.MkdirAll(filepath.Join(empty, "proc/sys/kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(empty, "proc/sys/kernel/osrelease"), []byte("6.1.0\n"), 0o644); err != nil {
		t.Fatal(err) // every host root has it (host.ErrNotHostRoot otherwise)
	}
	rep, err := doctor.Diagnose(context.Background(), doctor.Input{Root: empty}, doctor.Options{})
	if err != nil || rep.Verdict.Level != analyze.Healthy || !strings.Contains(rep.Verdict.Reason, "not active") {
		t.Errorf("no conntrack: %v %+v", err, rep)
	}
	// A listing cut short: the entries before the cut, and a warning naming the line.
	data, err := os.ReadFile("../conntrack/testdata/kernel-proc.txt")
	if err != nil {
		t.Fatal(err)
	}
	rep, err = doctor.Diagnose(context.Background(),
		doctor.Input{Listing: strings.NewReader(string(data[:len(data)-40]))}, doctor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Breakdown.Total != 6 || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "line 7") {
		t.Errorf("truncated: %d entries, warnings %q", rep.Breakdown.Total, rep.Warnings)
	}
	if rep.Host.NetNS != "stdin" {
		t.Errorf("a reader is named stdin by default, got %q", rep.Host.NetNS)
	}
	// The cut line is skipped and counted, and the verdict says so.
	if l := rep.Listing; l == nil || !l.Read || l.Text == nil || l.Text.Entries != 6 || l.Text.Skipped != 1 ||
		!strings.Contains(rep.Verdict.Reason, "1 of 7 lines were skipped") {
		t.Errorf("truncated: listing %+v, verdict %q", l, rep.Verdict.Reason)
	}
	// An empty listing: nothing to diagnose.
	rep, err = doctor.Diagnose(context.Background(), doctor.Input{Listing: strings.NewReader("")}, doctor.Options{})
	if err != nil || rep.Verdict.Level != analyze.Unknown || rep.Listing == nil || rep.Listing.Reason != analyze.ListingEmpty {
		t.Errorf("empty listing: %v, %+v", err, rep)
	}
}

// Options: NoEntries skips the listing, Top bounds the top tables, and
// Progress sees the listing start, advance and end with the right count.
func TestOptions(t *testing.T) {
	ctx := context.Background()
	in := doctor.Input{Root: fixtures + "k8s-node"}
	rep, err := doctor.Diagnose(ctx, in, doctor.Options{NoEntries: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Table.Listed != 0 || rep.Breakdown.Total != 0 || rep.Table.Count != 3072 || rep.Host.Source != "none" {
		t.Errorf("NoEntries: listed %d, count %d, source %q", rep.Table.Listed, rep.Table.Count, rep.Host.Source)
	}
	if rep.Listing == nil || rep.Listing.Read || rep.Listing.Reason != analyze.ListingSkipped {
		t.Errorf("NoEntries: listing %+v", rep.Listing)
	}
	var calls []doctor.Progress
	rep, err = doctor.Diagnose(ctx, in, doctor.Options{Top: 2, Progress: func(p doctor.Progress) { calls = append(calls, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Breakdown.TopSources) != 2 || len(rep.Breakdown.TopServices) > 2 {
		t.Errorf("Top 2: %d sources, %d services", len(rep.Breakdown.TopSources), len(rep.Breakdown.TopServices))
	}
	// 3072 entries: a start, 3 calls at 1024, 2048 and 3072, and the end.
	want := []doctor.Progress{{Stage: doctor.StageEntries}, {Stage: doctor.StageEntries, Entries: 1024},
		{Stage: doctor.StageEntries, Entries: 2048}, {Stage: doctor.StageEntries, Entries: 3072},
		{Stage: doctor.StageEntries, Entries: 3072, Done: true}}
	if len(calls) != len(want) {
		t.Fatalf("progress calls %+v, want %+v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("progress call %d: %+v, want %+v", i, calls[i], want[i])
		}
	}
}

// The simulator's --report is the same diagnosis: a simulated table handed
// over as Input.Host and Input.Entries gives the report sim.Report gives.
func TestSimulatedHost(t *testing.T) {
	sc, err := sim.BuiltinScenario("nginx-local-upstream")
	if err != nil {
		t.Fatal(err)
	}
	sc.Duration = 2 * time.Minute
	s, err := sim.New(sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want, err := s.Report(base, 10)
	if err != nil {
		t.Fatal(err)
	}
	got, err := doctor.Diagnose(context.Background(),
		doctor.Input{Host: s.Snapshot(base), Entries: s.Tracker().Flows}, doctor.Options{Top: 10, Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got.Breakdown.Total == 0 || got.Breakdown.Total != got.Table.Count {
		t.Errorf("listed %d of %d simulated entries", got.Breakdown.Total, got.Table.Count)
	}
	// The report says how its entries were read; sim.Report does not.
	if got.Listing == nil || !got.Listing.Read || got.Listing.Reason != "" {
		t.Errorf("listing %+v, want read completely", got.Listing)
	}
	got.Listing = nil
	// The doctor's fixes are the planner's (sim.Report keeps analyze's
	// text); everything else is the same.
	var planned []string
	for i := range got.Findings {
		if got.Findings[i].ID == "table-full" || got.Findings[i].ID == "loopback-tracked" {
			planned = append(planned, got.Findings[i].Fixes...)
		}
		got.Findings[i].Fixes, want.Findings[i].Fixes = nil, nil
	}
	jw, _ := json.Marshal(want)
	jg, _ := json.Marshal(got)
	if string(jw) != string(jg) {
		t.Errorf("reports differ:\n sim    %s\n doctor %s", jw, jg)
	}
	all := strings.Join(planned, "\n")
	for _, want := range []string{"sysctl -w net.netfilter.nf_conntrack_max=131072",
		"echo 131072 > /sys/module/nf_conntrack/parameters/hashsize",
		"# not planned — stop tracking loopback traffic: the firewall ruleset was not read"} {
		if !strings.Contains(all, want) {
			t.Errorf("planned fixes lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, ">> /etc/sysctl.d") || strings.Contains(all, "inet filter") {
		t.Errorf("analyze's generic fix lines survived the planner:\n%s", all)
	}
}

// A listing that breaks off: the entries before the break are counted, the
// report says the listing failed, and a warning names the error.
func TestListingBreaksOff(t *testing.T) {
	cut := errors.New("netlink: message truncated")
	src := func(fn func(*conntrack.Flow) error) error {
		var f conntrack.Flow
		for range 2 {
			if err := fn(&f); err != nil {
				return err
			}
		}
		return cut
	}
	rep, err := doctor.Diagnose(context.Background(), doctor.Input{Host: doctor.ListingSnapshot("test"), Entries: src}, doctor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := rep.Listing
	if rep.Breakdown.Total != 2 || l == nil || !l.Read || l.Reason != analyze.ListingFailed || !strings.Contains(l.Detail, "after 2 entries") {
		t.Errorf("%d entries, listing %+v", rep.Breakdown.Total, l)
	}
	if w := strings.Join(rep.Warnings, "\n"); !strings.Contains(w, cut.Error()) {
		t.Errorf("warnings %q lack the error", w)
	}
}
