package exporter

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The process metrics agree with what /proc/self/status says and with the
// clock: resident memory within 20% of VmRSS, a start time in the last
// hour, some CPU spent, some files open.
func TestProcessCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newProcessCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.Metric[0]
		if m.Gauge != nil {
			got[mf.GetName()] = m.Gauge.GetValue()
		} else {
			got[mf.GetName()] = m.Counter.GetValue()
		}
	}
	if len(got) != 6 {
		t.Errorf("%d process metrics, want 6: %v", len(got), got)
	}
	status, _ := os.ReadFile("/proc/self/status")
	var rssKB float64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKB, _ = strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		}
	}
	if r := got["process_resident_memory_bytes"] / 1024; r < 0.8*rssKB || r > 1.2*rssKB {
		t.Errorf("resident memory %.0f KiB, /proc/self/status VmRSS %.0f KiB", r, rssKB)
	}
	start := time.Unix(int64(got["process_start_time_seconds"]), 0)
	if time.Since(start) < 0 || time.Since(start) > time.Hour {
		t.Errorf("start time %s", start)
	}
	if got["process_open_fds"] < 3 || got["process_max_fds"] < got["process_open_fds"] || got["process_virtual_memory_bytes"] <= got["process_resident_memory_bytes"] {
		t.Errorf("implausible: %v", got)
	}
}
