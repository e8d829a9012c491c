package ctnetlink

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// The benchmarks share one namespace holding 250000 entries of the
// synthetic table (internal/flowgen), created on first use and deleted by
// TestMain.
const benchFlows = 250000

var bench struct {
	once sync.Once
	name string
	err  error
	skip string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bench.name != "" {
		if out, err := exec.Command("ip", "netns", "del", bench.name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip netns del %s: %v: %s\n", bench.name, err, out)
			code = 1
		}
	}
	os.Exit(code)
}

// benchNS returns the shared benchmark namespace, loading it once.
func benchNS(b testing.TB) string {
	b.Helper()
	bench.once.Do(func() {
		if os.Geteuid() != 0 {
			bench.skip = "skipped: needs root to create a network namespace"
			return
		}
		for _, c := range []string{"ip", "conntrack"} {
			if _, err := exec.LookPath(c); err != nil {
				bench.skip = "skipped: " + c + " is not installed"
				return
			}
		}
		var r [4]byte
		_, _ = rand.Read(r[:])
		name := "ctdtest-bench-" + hex.EncodeToString(r[:])
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			bench.err = fmt.Errorf("ip netns add: %v: %s", err, out)
			return
		}
		bench.name = name
		loadGenflows(b, name, benchFlows, 1)
	})
	if bench.skip != "" {
		b.Skip(bench.skip)
	}
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.name
}

func benchmarkDump(b *testing.B, depth int) {
	ns := benchNS(b)
	c, err := Open("/run/netns/" + ns)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	defer func(d int) { pipelineDepth = d }(pipelineDepth)
	pipelineDepth = depth
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		if err := c.Dump(func(*conntrack.Flow) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != benchFlows {
			b.Fatalf("dumped %d flows, want %d", n, benchFlows)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchFlows, "ns/flow")
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "maxRSS-MiB")
	}
}

// BenchmarkDump dumps 250k flows with a no-op callback (pipelined receive).
func BenchmarkDump(b *testing.B) { benchmarkDump(b, pipelineDepth) }

// BenchmarkDumpSerial is BenchmarkDump with receiving and decoding on one goroutine's schedule (no overlap).
func BenchmarkDumpSerial(b *testing.B) { benchmarkDump(b, 1) }

// BenchmarkConntrackL runs `conntrack -L > /dev/null` on the same table.
func BenchmarkConntrackL(b *testing.B) {
	ns := benchNS(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command("ip", "netns", "exec", ns, "conntrack", "-L")
		// nil Stdout and Stderr are /dev/null.
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchFlows, "ns/flow")
}

// TestPairedTiming alternates a full Dump and `conntrack -L > /dev/null` on
// the benchmark table and logs the medians and their ratio; the machine may
// be shared, so pairs taken back to back compare more fairly than separate
// benchmarks. Run with CTDTEST_PAIRED=N (N pairs).
func TestPairedTiming(t *testing.T) {
	pairs, _ := strconv.Atoi(os.Getenv("CTDTEST_PAIRED"))
	if pairs <= 0 {
		t.Skip("skipped: set CTDTEST_PAIRED=N to time N Dump / conntrack -L pairs on a 250k table")
	}
	ns := benchNS(t)
	c, err := Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var dump, ctl, ratio []float64
	for range pairs {
		start := time.Now()
		n := 0
		if err := c.Dump(func(*conntrack.Flow) error { n++; return nil }); err != nil || n != benchFlows {
			t.Fatalf("Dump: %d flows, %v", n, err)
		}
		d := time.Since(start).Seconds()
		start = time.Now()
		if err := exec.Command("ip", "netns", "exec", ns, "conntrack", "-L").Run(); err != nil {
			t.Fatal(err)
		}
		l := time.Since(start).Seconds()
		dump, ctl, ratio = append(dump, d), append(ctl, l), append(ratio, d/l)
		t.Logf("Dump %.3fs  conntrack -L %.3fs  ratio %.2f", d, l, d/l)
	}
	med := func(x []float64) float64 { x = slices.Clone(x); slices.Sort(x); return x[len(x)/2] }
	t.Logf("median of %d pairs: Dump %.3fs, conntrack -L %.3fs, ratio %.2f (median of per-pair ratios)", pairs, med(dump), med(ctl), med(ratio))
}
