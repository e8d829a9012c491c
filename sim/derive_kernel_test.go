package sim_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/sim"
)

// TestDeriveKernel: a steady load of short loopback connections at a
// known rate in a namespace whose tcp_timeout_time_wait is 10 s, read by
// doctor.Run while it runs: the derived rate is the load's, and the
// derived scenario, simulated, settles at the kernel's count.
func TestDeriveKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: runs a 30 s load in a namespace")
	}
	ns := nstest.New(t, "nft", "sysctl", "conntrack")
	hostTW, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")
	if err != nil {
		t.Skipf("skipped: no conntrack sysctls on this host: %v", err)
	}
	// A namespace's own timeouts: this changes the test's namespace only.
	ns.Run("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=10")
	if after, _ := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait"); string(after) != string(hostTW) {
		t.Fatalf("the host's own tcp_timeout_time_wait changed: %q → %q", hostTW, after)
	}
	ns.Track()

	const rate = 200.0 // connections per second
	const settle = 25 * time.Second
	var made atomic.Int64
	var stamps []time.Time // written by the load only, read after it stopped
	stop := make(chan struct{})
	loadErr := make(chan error, 1)
	go func() {
		loadErr <- ns.Do(func() error {
			ln, err := net.Listen("tcp4", "127.0.0.1:8080")
			if err != nil {
				return err
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					// An upstream answering with Connection: close: it reads
					// the request, answers and closes first.
					go func() {
						_, _ = c.Read(make([]byte, 64))
						_, _ = c.Write([]byte("HTTP/1.0 200 OK\r\n\r\n"))
						c.Close()
					}()
				}
			}()
			start := time.Now()
			for i := 0; ; i++ {
				if wait := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
					select {
					case <-stop:
						return nil
					case <-time.After(wait):
					}
				}
				select {
				case <-stop:
					return nil
				default:
				}
				c, err := net.Dial("tcp4", "127.0.0.1:8080")
				if err != nil {
					return err
				}
				_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				_, _ = io.Copy(io.Discard, c) // until the server's FIN
				c.Close()
				made.Add(1)
				stamps = append(stamps, time.Now())
			}
		})
	}()
	select {
	case err := <-loadErr:
		t.Fatalf("load: %v", err)
	case <-time.After(settle):
	}
	// Read the namespace as ctdoctor does, while the load runs.
	readAt := time.Now()
	res, err := doctor.Run(context.Background(), doctor.Input{NetNS: ns.Name}, doctor.Options{Interval: time.Second})
	readDone := time.Now()
	kernelTW := strings.Count(ns.Run("conntrack", "-L", "-p", "tcp", "--dport", "8080", "--state", "TIME_WAIT"), "TIME_WAIT")
	close(stop)
	if err := <-loadErr; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("load: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Breakdown == nil {
		t.Fatalf("the entries were not listed: %v", res.Snapshot.Warnings)
	}
	// The load's real rate over the last TIME_WAIT timeout before the reading.
	var recent int
	for _, s := range stamps {
		if s.After(readAt.Add(-10*time.Second)) && !s.After(readAt) {
			recent++
		}
	}
	actual := float64(recent) / 10
	kernel := res.Breakdown.Total
	t.Logf("load: %d connections, %.1f/s over the 10 s before the reading (listing took %s); kernel: %d entries listed, %d TIME_WAIT (conntrack -L just after: %d; nf_conntrack_count %d, with the expired entries not yet reaped)",
		made.Load(), actual, readDone.Sub(readAt).Round(time.Millisecond), kernel, res.Breakdown.TCPState["TIME_WAIT"], kernelTW, res.Snapshot.Settings.Count)

	sc, err := sim.Derive(res.Snapshot, res.Report, res.Breakdown)
	if err != nil {
		t.Fatal(err)
	}
	var w *sim.Workload
	for i := range sc.Workloads {
		if sc.Workloads[i].Name == "tcp-8080-lo" {
			w = &sc.Workloads[i]
		}
	}
	if w == nil {
		t.Fatalf("no tcp-8080-lo workload:\n%s", sc.YAML())
	}
	if sc.Settings[engine.SetTCPTimeoutTimeWait] != 10 {
		t.Errorf("the namespace's tcp_timeout_time_wait was not taken: %v", sc.Settings)
	}
	if math.Abs(w.Rate.Value-actual) > 0.15*actual {
		t.Errorf("derived rate %v/s, the load ran %.1f/s", w.Rate.Value, actual)
	}
	simRes, err := sim.Run(context.Background(), sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	diff := float64(int64(simRes.Steady.Total)-kernel) / float64(kernel)
	t.Logf("derived rate %v/s; simulated steady state %d entries (%d TIME_WAIT) vs the kernel's %d: %+.1f%%",
		w.Rate.Value, simRes.Steady.Total, simRes.Steady.TCP[conntrack.TCPTimeWait], kernel, diff*100)
	if math.Abs(diff) > 0.15 {
		t.Errorf("simulated steady state %d entries, the kernel had %d (more than 15%% apart)\n%s", simRes.Steady.Total, kernel, sc.YAML())
	}
}
