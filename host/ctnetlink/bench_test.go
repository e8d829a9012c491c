package ctnetlink

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// The benchmarks share one namespace holding `genflows.py 250000`, created
// on first use and deleted by TestMain.
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
func benchNS(b *testing.B) string {
	b.Helper()
	bench.once.Do(func() {
		if os.Geteuid() != 0 {
			bench.skip = "skipped: needs root to create a network namespace"
			return
		}
		if _, err := os.Stat(genflowsPath); err != nil {
			bench.skip = "skipped: " + genflowsPath + " not found"
			return
		}
		for _, c := range []string{"ip", "conntrack", "python3"} {
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
