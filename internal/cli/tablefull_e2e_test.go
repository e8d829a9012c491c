package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/tune"
)

var dropRE = regexp.MustCompile(`\bdrop=(\d+)`)

// drops sums the namespace's per-CPU drop counters (conntrack -S).
func drops(t *testing.T, ns *nstest.NS) int64 {
	t.Helper()
	var n int64
	for _, m := range dropRE.FindAllStringSubmatch(ns.Run("conntrack", "-S"), -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n
}

// tableFullLines counts the kernel log's "table full" lines for a namespace.
func tableFullLines(t *testing.T, inode uint64) int {
	t.Helper()
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		t.Skipf("skipped: dmesg: %v", err)
	}
	return bytes.Count(out, fmt.Appendf(nil, "table full in netns %d,", inode))
}

func sysctls(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	var keep []string
	for l := range strings.SplitSeq(ns.Run("sysctl", "-a"), "\n") {
		if strings.HasPrefix(l, "net.netfilter.") && !strings.HasPrefix(l, "net.netfilter.nf_conntrack_count") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// The classic case, end to end on the kernel: nginx proxying to a local
// upstream on loopback behind a stateful drop-policy ruleset, hit with
// 'Connection: close' requests, in a namespace whose table holds ASSURED
// entries up to just under the global max — the kernel drops and logs
// "table full". ctdoctor plan proposes NOTRACK for loopback (accept first)
// and a timeout change, predicts drops before and none after; apply
// --yes; the same load again raises no drop and logs nothing for the
// namespace; rollback restores the ruleset and every sysctl byte for byte.
func TestNginxLocalUpstreamEndToEnd(t *testing.T) {
	if os.Getenv("CTDOCTOR_TABLEFULL_TEST") != "1" {
		t.Skip("skipped: set CTDOCTOR_TABLEFULL_TEST=1 (fills a test netns to nf_conntrack_max and writes \"table full\" lines to the kernel log)")
	}
	ns := nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk", "dmesg")
	ns.Nft(nstest.DemoRuleset)
	ns.StartNginx()
	gmax := nstest.GlobalMax(t)
	ns.FillAssured(gmax - 300)
	before := struct{ ruleset, sysctls string }{ns.Run("nft", "list", "ruleset"), sysctls(t, ns)}

	load := func() {
		ns.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")
	}
	d0, l0 := drops(t, ns), tableFullLines(t, ns.Inode())
	load()
	d1, l1 := drops(t, ns), tableFullLines(t, ns.Inode())
	if d1 <= d0 {
		t.Fatalf("the load did not make the kernel drop (drop %d → %d): the case is not reproduced", d0, d1)
	}
	t.Logf("before the plan: %d drops, %d table-full log lines", d1-d0, l1-l0)

	p := planJSON(t, "--netns", ns.Name)
	var notrack, accept, timeout bool
	for _, s := range p.Applicable() {
		if s.Notrack != nil && s.Notrack.Loopback {
			notrack = true
			for _, a := range s.Actions {
				first := strings.SplitN(a.Script, "\n", 2)[0]
				accept = accept || strings.Contains(first, "ct state untracked accept") && strings.Contains(first, "inet fw input")
			}
		}
		timeout = timeout || s.Scope == tune.ScopeNetNS && strings.Contains(s.Key, "_timeout_")
	}
	if !notrack || !accept || !timeout {
		t.Fatalf("plan: NOTRACK lo %v, untracked accept first in inet fw %v, a timeout %v:\n%+v", notrack, accept, timeout, p.Steps)
	}
	if pr := p.Prediction; pr == nil || pr.Before.Drops == 0 || pr.After.Drops != 0 {
		t.Errorf("prediction %+v: want drops before the plan and none after, as the kernel shows", pr)
	}
	planFile := filepath.Join(t.TempDir(), "plan.json")
	js, _ := json.Marshal(p)
	if err := os.WriteFile(planFile, js, 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	run(t, "apply", planFile, "--yes", "--state-dir", state)
	ns.CurlOK(5, "after apply")

	d2, l2 := drops(t, ns), tableFullLines(t, ns.Inode())
	load()
	ns.CurlOK(3, "after the second load")
	d3, l3 := drops(t, ns), tableFullLines(t, ns.Inode())
	if d3 != d2 {
		t.Errorf("drops rose by %d under the same load after apply", d3-d2)
	}
	if l3 != l2 {
		t.Errorf("%d new table-full log lines for the namespace after apply", l3-l2)
	}

	run(t, "rollback", "--state-dir", state)
	if got := ns.Run("nft", "list", "ruleset"); got != before.ruleset {
		t.Errorf("ruleset after rollback:\n%s\nwant:\n%s", got, before.ruleset)
	}
	if got := sysctls(t, ns); got != before.sysctls {
		t.Errorf("sysctls after rollback differ:\n%s\nwant:\n%s", got, before.sysctls)
	}
	var h struct {
		Applies []struct{ State string } `json:"applies"`
	}
	if err := json.Unmarshal([]byte(run(t, "history", "--state-dir", state, "-o", "json")), &h); err != nil || len(h.Applies) != 1 || h.Applies[0].State != "rolled back" {
		t.Errorf("history: %v %+v, want one apply, rolled back", err, h)
	}
}
