package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// loadMixedTable loads entries whose timeouts sit far from every histogram
// and idle boundary, so that seconds passing between two reads cannot move
// an entry from one bucket to another.
func loadMixedTable(t *testing.T, ns *nstest.NS) {
	var b strings.Builder
	for i := range 3000 {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "-I -t 5000 -u SEEN_REPLY,ASSURED -s 10.1.%d.%d -d 10.200.0.1 -p tcp --sport %d --dport 443 --state ESTABLISHED\n", i/250, i%250+1, 1024+i)
		case 1:
			fmt.Fprintf(&b, "-I -t 200000 -u SEEN_REPLY,ASSURED -s 192.168.%d.%d -d 127.0.0.1 -p tcp --sport %d --dport 8080 --state TIME_WAIT -m %d\n", i/250, i%250+1, 1024+i, i%3)
		case 2:
			fmt.Fprintf(&b, "-I -t 2000 -u UNSET -s 10.7.%d.%d -d 10.200.0.53 -p udp --sport %d --dport 53\n", i/250, i%250+1, 1024+i)
		default:
			fmt.Fprintf(&b, "-I -t 2000 -u SEEN_REPLY -s fd00::%x -d fd00::1 -p icmpv6 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id %d\n", i, i)
		}
	}
	path := filepath.Join(t.TempDir(), "mixed.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.LoadFlows(path)
}

// comparable drops what describes the run rather than the host: when it
// ran, where the entries came from, the rates and the read warnings.
func comparable(t *testing.T, r *analyze.Report) map[string]any {
	t.Helper()
	r.GeneratedAt = r.GeneratedAt.Truncate(0)
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "generated_at")
	delete(m, "warnings")
	delete(m["host"].(map[string]any), "source")
	st := m["stats"].(map[string]any)
	delete(st, "per_second")
	delete(st, "interval_seconds")
	delete(st, "source")
	// The fixes are the planner's commands: live, they are placed in the
	// namespace's firewall ruleset and files, which a snapshot does not
	// hold (offline the NOTRACK steps are left out, saying why). The
	// findings, their evidence and changes must still agree.
	for _, f := range m["findings"].([]any) {
		delete(f.(map[string]any), "fixes")
	}
	return m
}

// sameKernelLog makes the kernel-log summaries of two reports taken a
// moment apart comparable. Namespace names are resolved when the log is
// read, against the namespaces that exist then, and tests running in
// parallel create and delete namespaces (and fill their tables, adding
// log lines) all the time: names are dropped, and a log that grew between
// the reads is not compared.
func sameKernelLog(t *testing.T, a, b map[string]any) {
	t.Helper()
	la, oka := a["log"].(map[string]any)
	lb, okb := b["log"].(map[string]any)
	if !oka || !okb {
		return
	}
	for _, l := range []map[string]any{la, lb} {
		if nss, ok := l["netns"].([]any); ok {
			for _, n := range nss {
				delete(n.(map[string]any), "name")
			}
		}
	}
	if la["table_full_events"] != lb["table_full_events"] {
		t.Logf("kernel log grew between the reads (%v → %v table-full events, from other tests' namespaces): not compared",
			lb["table_full_events"], la["table_full_events"])
		delete(a, "log")
		delete(b, "log")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nft")
	ns.Track()
	loadMixedTable(t, ns)
	archive := filepath.Join(t.TempDir(), "snap.tar.gz")
	run(t, "snapshot", "--netns", ns.Name, "-o", archive)
	live := report(t, "--netns", ns.Name)
	offline := report(t, "--snapshot", archive)
	if offline.Host.Source != "snapshot" || live.Host.Source != "netlink" {
		t.Errorf("sources: live %q, snapshot %q", live.Host.Source, offline.Host.Source)
	}
	if offline.Breakdown.Total != 3000 {
		t.Fatalf("snapshot holds %d entries, want 3000", offline.Breakdown.Total)
	}
	// The snapshot of a namespace is planned for that namespace: its
	// sysctl commands are the live report's, prefixed to run in it.
	sysctls := func(r *analyze.Report) []string {
		var out []string
		for _, f := range r.Findings {
			for _, l := range f.Fixes {
				if strings.Contains(l, "sysctl") && !strings.HasPrefix(l, "#") {
					out = append(out, f.ID+": "+l)
				}
			}
		}
		return out
	}
	ls, ss := sysctls(live), sysctls(offline)
	if len(ls) == 0 {
		t.Fatal("the live report has no sysctl fix to compare: the table no longer triggers one")
	}
	if strings.Join(ls, "\n") != strings.Join(ss, "\n") {
		t.Errorf("sysctl fixes differ:\nlive\n  %s\nsnapshot\n  %s", strings.Join(ls, "\n  "), strings.Join(ss, "\n  "))
	}
	for _, l := range ss {
		if !strings.Contains(l, "ip netns exec "+ns.Name+" ") {
			t.Errorf("snapshot fix without the namespace's prefix: %s", l)
		}
	}
	a, b := comparable(t, live), comparable(t, offline)
	sameKernelLog(t, a, b)
	for k := range a {
		ja, _ := json.Marshal(a[k])
		jb, _ := json.Marshal(b[k])
		if string(ja) != string(jb) {
			t.Errorf("%s differs:\nlive     %s\nsnapshot %s", k, ja, jb)
		}
	}

	// An anonymized snapshot hides every address but gives the same numbers.
	anon := filepath.Join(t.TempDir(), "anon.tar.gz")
	run(t, "snapshot", "--netns", ns.Name, "--anonymize", "-o", anon)
	ar := report(t, "--snapshot", anon)
	if ar.Host.Hostname == live.Host.Hostname && live.Host.Hostname != "" {
		t.Errorf("hostname not anonymized: %q", ar.Host.Hostname)
	}
	if ar.Breakdown.Loopback != live.Breakdown.Loopback || ar.Breakdown.NAT != live.Breakdown.NAT ||
		fmt.Sprint(ar.Breakdown.TCPState) != fmt.Sprint(live.Breakdown.TCPState) {
		t.Errorf("anonymized breakdown differs: %+v vs %+v", ar.Breakdown, live.Breakdown)
	}
	for i, s := range ar.Breakdown.TopSources {
		if s.Count != live.Breakdown.TopSources[i].Count {
			t.Errorf("top source %d: count %d vs %d", i, s.Count, live.Breakdown.TopSources[i].Count)
		}
		if s.Addr == live.Breakdown.TopSources[i].Addr {
			t.Errorf("top source %d not anonymized: %s", i, s.Addr)
		}
	}
}

func TestSnapshotBadInput(t *testing.T) {
	dir := t.TempDir()
	notgz := filepath.Join(dir, "x.tar.gz")
	if err := os.WriteFile(notgz, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--snapshot", notgz}, "not a ctdoctor snapshot"},
		{[]string{"--snapshot", dir}, "no ctdoctor/meta.json"},
		{[]string{"--snapshot", filepath.Join(dir, "missing.tar.gz")}, "no such file"},
	} {
		var out, errb strings.Builder
		if code := Main(tc.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q (want %q)", tc.args, code, errb.String(), tc.want)
		}
	}
}
