package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/flowgen"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// TestBenchExporter250k measures `ctdoctor exporter` as it runs for real
// (its own process, background diagnoses in niced child processes) against
// a namespace holding 250,000 entries: GET /metrics latency between
// listings and with listings back to back, 50 concurrent scrapers, the
// exporter's peak RSS; beside a bare read of nf_conntrack_count and
// node_exporter's conntrack collector on the same table when
// prometheus-node-exporter is installed. A benchmark (minutes), so only
// with CTDOCTOR_BENCH_EXPORTER=1:
//
//	sudo CTDOCTOR_BENCH_EXPORTER=1 go test -run TestBenchExporter250k -v -timeout 30m ./internal/cli
//
// CTDOCTOR_BENCH_ENTRIES (default 250000) and CTDOCTOR_BENCH_SECONDS (the
// concurrent phase, default 60) change the sizes.
func TestBenchExporter250k(t *testing.T) {
	if os.Getenv("CTDOCTOR_BENCH_EXPORTER") != "1" {
		t.Skip("skipped: a benchmark; set CTDOCTOR_BENCH_EXPORTER=1 to run it")
	}
	entries := benchEnv("CTDOCTOR_BENCH_ENTRIES", 250000)
	seconds := benchEnv("CTDOCTOR_BENCH_SECONDS", 60)
	n := nstest.New(t, "conntrack", "nft")
	n.Track()
	flows := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(flows, entries, 1); err != nil {
		t.Fatal(err)
	}
	n.LoadFlows(flows)
	t.Logf("table: %s entries (conntrack -C)", strings.TrimSpace(n.Run("conntrack", "-C")))
	type row struct {
		what string
		d    []time.Duration
		cpu  float64 // ms of the server process's CPU per scrape, -1 unknown
	}
	var rows []row

	var bare []time.Duration
	if err := n.Do(func() error {
		for i := 0; i < 2000; i++ {
			s := time.Now()
			if _, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count"); err != nil {
				return err
			}
			bare = append(bare, time.Since(s))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rows = append(rows, row{"bare read of nf_conntrack_count (thread in the ns)", bare, -1})

	get := func(client *http.Client, url string, count int) []time.Duration {
		d := make([]time.Duration, 0, count)
		for i := 0; i < count; i++ {
			s := time.Now()
			resp, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %s", url, resp.Status)
			}
			d = append(d, time.Since(s))
		}
		return d
	}
	waitListed := func(addr string) {
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			_, body := httpGet(t, "http://"+addr+"/metrics")
			if _, ok := sampleValue(body, "ctdoctor_conntrack_listed_entries"); ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no background listing within 90s")
			}
		}
	}
	client := &http.Client{}

	// node_exporter's conntrack collector in the namespace, if installed.
	if ne, err := exec.LookPath("prometheus-node-exporter"); err == nil {
		var addr string
		if err := n.Do(func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			addr = l.Addr().String()
			return l.Close()
		}); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", n.Name, ne, "--collector.disable-defaults", "--collector.conntrack", "--web.listen-address="+addr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
		nsClient := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var c net.Conn
			err := n.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, a)
				return err
			})
			return c, err
		}}}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if resp, err := nsClient.Get("http://" + addr + "/metrics"); err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("node_exporter did not start")
			}
		}
		c0 := procCPU(cmd.Process.Pid)
		d := get(nsClient, "http://"+addr+"/metrics", 1000)
		rows = append(rows, row{"node_exporter (conntrack collector only), GET /metrics", d, (procCPU(cmd.Process.Pid) - c0) / 1000})
	} else {
		t.Log("prometheus-node-exporter is not installed: no side-by-side figure")
	}

	// Between listings: the default 30s interval, after the first listing.
	quiet := startExporter(t, "", "--netns", n.Name, "--no-log", "--web.listen-address", "127.0.0.1:0")
	waitListed(quiet.addr)
	c0 := procCPU(quiet.cmd.Process.Pid)
	d := get(client, "http://"+quiet.addr+"/metrics", 1000)
	rows = append(rows, row{"ctdoctor exporter, GET /metrics, between listings", d, (procCPU(quiet.cmd.Process.Pid) - c0) / 1000})
	quiet.cmd.Process.Signal(syscall.SIGTERM)
	<-quiet.done

	// Listings back to back: every scrape competes with one.
	busy := startExporter(t, "", "--netns", n.Name, "--no-log", "--breakdown-interval", "1s", "--web.listen-address", "127.0.0.1:0")
	waitListed(busy.addr)
	rows = append(rows, row{"ctdoctor exporter, GET /metrics, listings back to back", get(client, "http://"+busy.addr+"/metrics", 1000), -1})
	_, body := httpGet(t, "http://"+busy.addr+"/metrics")
	took, _ := sampleValue(body, "ctdoctor_exporter_breakdown_duration_seconds")
	listed, _ := sampleValue(body, "ctdoctor_conntrack_listed_entries")

	hwmOne := procHWM(busy.cmd.Process.Pid)
	var mu sync.Mutex
	var conc []time.Duration
	failed := 0
	var wg sync.WaitGroup
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for time.Now().Before(end) {
				s := time.Now()
				resp, err := c.Get("http://" + busy.addr + "/metrics")
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				d := time.Since(s)
				mu.Lock()
				if ok {
					conc = append(conc, d)
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rows = append(rows, row{fmt.Sprintf("ctdoctor exporter, 50 scrapers for %ds, listings back to back (%d scrapes)", seconds, len(conc)), conc, -1})
	hwm := procHWM(busy.cmd.Process.Pid)

	t.Logf("background listing of %.0f entries: %.2fs each (in a child process at nice %d)", listed, took, listingNice)
	t.Logf("| what | p50 | p99 | max | server CPU per scrape |")
	t.Logf("|---|---|---|---|---|")
	for _, r := range rows {
		cpu := "—"
		if r.cpu >= 0 {
			cpu = fmt.Sprintf("%.2f ms", r.cpu)
		}
		t.Logf("| %s | %s | %s | %s | %s |", r.what, benchPct(r.d, 50), benchPct(r.d, 99), benchPct(r.d, 100), cpu)
	}
	t.Logf("failed scrapes: %d; exporter process peak RSS (VmHWM): %.1f MB after one scraper, %.1f MB after 50", failed, float64(hwmOne)/1024, float64(hwm)/1024)
	if failed > 0 {
		t.Errorf("%d scrapes failed", failed)
	}
}

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchPct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "-"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := max((len(s)*p+99)/100, 1)
	return fmt.Sprintf("%.2f ms", float64(s[i-1])/1e6)
}

// procCPU is a process's user and system CPU time so far, in ms.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) * 10 // clock ticks of 10 ms
}

// procHWM is a process's peak resident set in KiB (VmHWM).
func procHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}
