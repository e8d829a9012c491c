package cli

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/internal/flowgen"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// run runs ctdoctor in-process and returns stdout; a non-zero exit fails the test.
func run(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := Main(args, &out, &errb); code != 0 {
		t.Fatalf("ctdoctor %s: exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), code, errb.String(), out.String())
	}
	return out.String()
}

func report(t *testing.T, args ...string) *analyze.Report {
	t.Helper()
	out := run(t, append(args, "-o", "json")...)
	var r analyze.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	if r.Schema != "ctdoctor.report/v1" {
		t.Fatalf("schema %q", r.Schema)
	}
	return &r
}

func finding(r *analyze.Report, id string) *analyze.Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id {
			return &r.Findings[i]
		}
	}
	return nil
}

// genflows writes n entries of the repository's synthetic table
// (internal/flowgen) to a file for `conntrack -R`.
func genflows(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(path, n, 1); err != nil {
		t.Fatal(err)
	}
	return path
}

// listAggregates computes, from `conntrack -L` text with plain field
// splitting (the operators' awk pipelines, not ctdoctor's parser), the counts
// the report must reproduce.
type listAggregates struct {
	l4, tcpState, services map[string]int64
	sources                map[string]int64
	assured, unreplied     int64
	total                  int64
}

func aggregate(listing string) listAggregates {
	a := listAggregates{l4: map[string]int64{}, tcpState: map[string]int64{}, services: map[string]int64{}, sources: map[string]int64{}}
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		a.total++
		a.l4[f[0]]++ // awk '{sum[$1]++}'
		if f[0] == "tcp" {
			a.tcpState[f[3]]++ // awk '/tcp/ {sum[$4]++}'
		}
		src, dport := "", ""
		for _, x := range f {
			if strings.HasPrefix(x, "src=") && src == "" {
				src = x[4:]
			}
			if strings.HasPrefix(x, "dport=") && dport == "" {
				dport = x[6:]
			}
			switch x {
			case "[ASSURED]":
				a.assured++
			case "[UNREPLIED]":
				a.unreplied++
			}
		}
		a.sources[src]++
		if dport != "" {
			a.services[f[0]+"/"+dport]++
		}
	}
	return a
}

type kv struct {
	k string
	v int64
}

func ranked(m map[string]int64) []kv {
	var out []kv
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	slices.SortFunc(out, func(a, b kv) int { return cmp.Or(cmp.Compare(b.v, a.v), cmp.Compare(a.k, b.k)) })
	return out
}

// sameTop checks a top-N list against the full ranking: as many rows as
// the ranking has, up to n; the same counts in the same order; and every
// key holding exactly its count (ties may be ordered differently).
func sameTop(t *testing.T, what string, got []kv, all map[string]int64, n int) {
	t.Helper()
	want := ranked(all)
	if len(want) > n {
		want = want[:n]
	}
	if len(want) == 0 {
		t.Fatalf("%s: the oracle has nothing to rank: the test's table is empty", what)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d (top %d of %d keys): got %v, want %v", what, len(got), len(want), n, len(all), got, want)
	}
	for i := range got {
		if got[i].v != want[i].v || all[got[i].k] != got[i].v {
			t.Errorf("%s row %d: got %s=%d, want %s=%d", what, i, got[i].k, got[i].v, want[i].k, want[i].v)
		}
	}
}

func TestGenflowsMatchesConntrackList(t *testing.T) {
	ns := nstest.New(t, "conntrack")
	n := 250000
	if testing.Short() {
		n = 25000
	}
	ns.LoadFlows(genflows(t, n))
	// The kernel's dump walks the hash table all namespaces share, bucket by
	// bucket between reads; while other namespaces insert and delete (other
	// tests running in parallel), any dump — conntrack -L's as much as ours —
	// can miss an entry. Retry until both saw the whole table.
	var r *analyze.Report
	var a listAggregates
	for try := 1; ; try++ {
		r = report(t, "--netns", ns.Name, "--interval", "0", "--no-log")
		a = aggregate(ns.Run("conntrack", "-L"))
		if a.total == int64(n) && r.Breakdown.Total == a.total && r.Table.Count == a.total {
			break
		}
		if try == 5 {
			t.Fatalf("entries: conntrack -L %d, report listed %d, count %d, want %d", a.total, r.Breakdown.Total, r.Table.Count, n)
		}
		t.Logf("try %d: conntrack -L %d, report listed %d of %d entries (concurrent table churn); again", try, a.total, r.Breakdown.Total, n)
	}
	if fmt.Sprint(r.Breakdown.L4) != fmt.Sprint(a.l4) {
		t.Errorf("l4: got %v, conntrack -L %v", r.Breakdown.L4, a.l4)
	}
	if fmt.Sprint(r.Breakdown.TCPState) != fmt.Sprint(a.tcpState) {
		t.Errorf("tcp_state: got %v, conntrack -L %v", r.Breakdown.TCPState, a.tcpState)
	}
	if r.Breakdown.Status["assured"] != a.assured || r.Breakdown.Status["unreplied"] != a.unreplied {
		t.Errorf("status: got %v, conntrack -L assured %d unreplied %d", r.Breakdown.Status, a.assured, a.unreplied)
	}
	var src, svc []kv
	for _, s := range r.Breakdown.TopSources {
		src = append(src, kv{s.Addr, s.Count})
	}
	for _, s := range r.Breakdown.TopServices {
		svc = append(svc, kv{s.Proto + "/" + strconv.Itoa(int(s.Port)), s.Count})
	}
	// The report's default --top is 10 rows.
	sameTop(t, "top sources", src, a.sources, 10)
	sameTop(t, "top services", svc, a.services, 10)
	if r.Host.Source != "netlink" {
		t.Errorf("live entries should come over netlink, got %q", r.Host.Source)
	}
}

// A real table-full: the namespace is filled to the global max with ASSURED
// entries (early drop cannot evict them) and real packets are then dropped.
// Opt-in (CTDOCTOR_TABLEFULL_TEST=1), like every test that fills a table to
// the global nf_conntrack_max: the kernel writes "table full, dropping
// packet" to the host's kernel log, which every diagnosis of this host
// then reports for an hour.
func TestRealTableFull(t *testing.T) {
	if os.Getenv("CTDOCTOR_TABLEFULL_TEST") != "1" {
		t.Skip("skipped: set CTDOCTOR_TABLEFULL_TEST=1 (fills a test netns to the global nf_conntrack_max and writes a \"table full\" line to the host's kernel log)")
	}
	ns := nstest.New(t, "conntrack", "nft", "ping")
	ns.Track()
	raw, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if max <= 0 || max > 2_000_000 {
		t.Skipf("skipped: global nf_conntrack_max %d is not practical to fill", max)
	}
	var b strings.Builder
	for i := range max {
		fmt.Fprintf(&b, "-I -t 3600 -u SEEN_REPLY,ASSURED -s 10.%d.%d.%d -d 10.250.0.1 -p tcp --sport %d --dport 443 --state ESTABLISHED\n",
			1+i>>16, (i>>8)&255, i&255, 1024+i%60000)
	}
	path := filepath.Join(t.TempDir(), "assured.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.LoadFlows(path)
	if out, err := ns.Output("ping", "-c", "2", "-i", "0.2", "-W", "1", "127.0.0.1"); err == nil {
		t.Fatalf("ping succeeded with a full table:\n%s", out)
	}
	r := report(t, "--netns", ns.Name, "--interval", "0", "--no-entries")
	f := finding(r, "table-full")
	if f == nil || f.Severity != analyze.Critical || r.Verdict.Level != analyze.Critical {
		t.Fatalf("want critical table-full, got verdict %+v findings %+v", r.Verdict, r.Findings)
	}
	if r.Table.Count != int64(max) || r.Stats.Drop < 1 {
		t.Errorf("count %d (want %d), drop %d (want ≥ 1)", r.Table.Count, max, r.Stats.Drop)
	}
	if r.Log.TableFullEvents < 1 {
		t.Errorf("no kernel log events read (source %q)", r.Log.Source)
	}
	found := false
	for _, n := range r.Log.NetNS {
		if n.Inode == ns.Inode() && n.Count >= 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("no log event attributed to netns %d: %+v", ns.Inode(), r.Log.NetNS)
	}
	if f.Evidence["log_events"].(float64) < 1 || f.Evidence["drop"].(float64) < 1 {
		t.Errorf("evidence: %+v", f.Evidence)
	}
}

func TestShortLoopbackConnections(t *testing.T) {
	ns := nstest.New(t, "nft")
	ns.Track()
	const conns = 400
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:8080")
		if err != nil {
			return err
		}
		defer ln.Close()
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 8)
			for range conns {
				c, err := ln.Accept()
				if err != nil {
					done <- err
					return
				}
				_, _ = c.Read(buf) // returns at the client's FIN
				c.Close()
			}
			done <- nil
		}()
		for range conns {
			c, err := net.Dial("tcp4", "127.0.0.1:8080")
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("GET /\n"))
			c.Close() // the client closes first, like nginx to an upstream
		}
		return <-done
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the last FIN/ACKs cross
	r := report(t, "--netns", ns.Name, "--interval", "0", "--no-log")
	if r.Breakdown.TCPState["TIME_WAIT"] < conns*9/10 || r.Breakdown.Loopback < conns {
		t.Errorf("breakdown: %+v loopback %d", r.Breakdown.TCPState, r.Breakdown.Loopback)
	}
	for _, id := range []string{"timewait-dominant", "loopback-tracked"} {
		if finding(r, id) == nil {
			t.Errorf("missing finding %s: %+v", id, r.Findings)
		}
	}
}

func TestUnansweredTraffic(t *testing.T) {
	ns := nstest.New(t, "nft")
	ns.Nft(nstest.TrackRuleset + `table inet blackhole {
	chain input {
		type filter hook input priority -10;
		tcp dport 9 drop
		udp dport 9 drop
	}
}
`)
	err := ns.Do(func() error {
		sa := &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}
		for range 300 {
			// A non-blocking connect sends one SYN; nobody answers.
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
				unix.Close(fd)
				return err
			}
			unix.Close(fd)
			u, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				return err
			}
			if err := unix.Sendto(u, []byte("query"), 0, sa); err != nil {
				unix.Close(u)
				return err
			}
			unix.Close(u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := report(t, "--netns", ns.Name, "--interval", "0", "--no-log")
	f := finding(r, "unreplied-flood")
	if f == nil {
		t.Fatalf("missing unreplied-flood: breakdown %+v findings %+v", r.Breakdown.Status, r.Findings)
	}
	if r.Breakdown.Unreplied["tcp"] < 250 || r.Breakdown.Unreplied["udp"] < 250 || r.Breakdown.TCPState["SYN_SENT"] < 250 {
		t.Errorf("unreplied by protocol %v, states %v", r.Breakdown.Unreplied, r.Breakdown.TCPState)
	}
}

func TestAllNetNS(t *testing.T) {
	a := nstest.New(t, "conntrack")
	b := nstest.New(t, "conntrack")
	load := func(ns *nstest.NS, n int) {
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, "-I -t 3600 -u SEEN_REPLY -s 10.9.%d.%d -d 10.9.255.1 -p udp --sport %d --dport 53\n", i/250, i%250+1, 1024+i)
		}
		path := filepath.Join(t.TempDir(), "f.txt")
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		ns.LoadFlows(path)
	}
	load(a, 300)
	load(b, 120)
	r := report(t, "--all-netns", "--no-entries", "--interval", "0", "--no-log")
	got := map[string]int64{}
	for _, n := range r.Namespaces {
		got[n.Name] = n.Count
		if n.Max != r.Table.Max {
			t.Errorf("%s: max %d, want the global %d", n.Name, n.Max, r.Table.Max)
		}
	}
	if got[a.Name] != 300 || got[b.Name] != 120 {
		t.Errorf("counts: %v", got)
	}
	if out := run(t, "--all-netns", "--no-entries", "--interval", "0", "--no-log", "--color", "never"); !strings.Contains(out, a.Name) {
		t.Errorf("text report lacks the namespace table:\n%s", out)
	}
}
