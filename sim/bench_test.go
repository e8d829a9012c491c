package sim

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hourScenario is the performance target of docs/design.md: one hour of
// 10,000 new short connections per second (eight packets each), on a
// table big enough to hold the 1.2 million TIME_WAIT entries that rate
// leaves (10,000 × 120 s).
const hourScenario = `
name: short-10k
duration: 1h
step: 10s
seed: 1
settings:
  nf_conntrack_max: 2097152
  nf_conntrack_buckets: 2097152
workloads:
  - name: web
    proto: tcp
    rate: 10k
    client: 10.0.0.0/16
    server: 10.1.0.10
    server_port: 443
    host: server
    lifetime: {exponential: 5ms}
    rtt: 1ms
`

// BenchmarkSimulateHour simulates one hour of 10k new connections/s and
// reports the speed-up over real time (the budget is ≥ 60×).
func BenchmarkSimulateHour(b *testing.B) {
	sc, err := ParseScenario("short-10k.yaml", []byte(hourScenario))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		start, cpu0 := time.Now(), cpuTime()
		r, err := Run(context.Background(), sc, Options{})
		if err != nil {
			b.Fatal(err)
		}
		wall, cpu := time.Since(start), cpuTime()-cpu0
		b.ReportMetric(sc.Duration.Seconds()/wall.Seconds(), "x-realtime")
		// On a shared machine the wall clock includes other processes'
		// turns; the CPU time (all threads, GC included) does not.
		b.ReportMetric(sc.Duration.Seconds()/cpu.Seconds(), "x-realtime-cpu")
		b.ReportMetric(float64(wall.Nanoseconds())/float64(r.Packets), "ns/packet")
		b.ReportMetric(float64(r.Packets), "packets")
		b.ReportMetric(float64(r.Peak), "peak-entries")
	}
}

// BenchmarkSimulateBuiltins runs each built-in scenario once and reports
// the packets simulated per second, of wall time and of CPU time: the
// speed the run-time estimate (PacketsPerSecond) assumes.
func BenchmarkSimulateBuiltins(b *testing.B) {
	for _, bi := range Builtins() {
		b.Run(bi.Name, func(b *testing.B) {
			sc, err := Load(bi.Name)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				start, cpu0 := time.Now(), cpuTime()
				r, err := Run(context.Background(), sc, Options{})
				if err != nil {
					b.Fatal(err)
				}
				wall, cpu := time.Since(start), cpuTime()-cpu0
				b.ReportMetric(float64(r.Packets)/wall.Seconds(), "packets/s")
				b.ReportMetric(float64(r.Packets)/cpu.Seconds(), "packets/cpu-s")
				b.ReportMetric(float64(r.Packets), "packets")
			}
		})
	}
}
