package render

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
)

func sample() *analyze.Report {
	acc := analyze.NewAccumulator()
	return &analyze.Report{Schema: analyze.Schema,
		Verdict:   analyze.Verdict{Level: analyze.Critical, Reason: "table full: 10 entries, limit 10"},
		Host:      analyze.HostInfo{Hostname: "web1", Kernel: "6.18.44", NetNS: "init", CPUs: 2, MemBytes: 8 << 30, Source: "netlink"},
		Table:     analyze.TableInfo{Count: 10, Max: 10, Buckets: 1024, Usage: 1},
		Breakdown: acc.Breakdown(),
		Findings: []analyze.Finding{{ID: "table-full", Severity: analyze.Critical, Summary: "full",
			Explanation: "why", Evidence: map[string]any{"count": 10}, Fixes: []string{"# comment", "sysctl -w x=1"}}}}
}

func TestTextLeadsWithVerdict(t *testing.T) {
	var b bytes.Buffer
	if err := Text(&b, sample(), TextOptions{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[2], "CRITICAL") || !strings.Contains(lines[2], "table full: 10 entries, limit 10") {
		t.Errorf("the verdict must come first, got:\n%s", b.String())
	}
	if strings.Contains(b.String(), "\x1b[") {
		t.Error("colour codes without Color")
	}
	if !strings.Contains(b.String(), "$ sysctl -w x=1") || !strings.Contains(b.String(), "[██████████████████████████████]") {
		t.Errorf("fix commands and the full gauge should show:\n%s", b.String())
	}
	b.Reset()
	Text(&b, sample(), TextOptions{Color: true})
	if !strings.Contains(b.String(), "\x1b[1;31m") {
		t.Error("critical should be red with Color")
	}
}

func TestBar(t *testing.T) {
	for frac, want := range map[float64]string{0: "          ", 1: "██████████", 0.5: "█████     ", 0.05: "▌         ", 2: "██████████"} {
		if got := Bar(frac, 10); got != want {
			t.Errorf("Bar(%v) = %q, want %q", frac, got, want)
		}
	}
	if got := num(1234567); got != "1,234,567" {
		t.Errorf("num = %q", got)
	}
}
