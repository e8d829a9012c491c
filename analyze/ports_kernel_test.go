package analyze_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// Issue 8 item 4 against the kernel: in a namespace whose local port range
// has 1,000 ports, a client makes 2,000 short connections to a local
// server — more than the range holds — and the table then holds one entry
// per local port used, not one per connection: the TIME_WAIT entries of
// 127.0.0.1 → 127.0.0.1:8080 stop at a cap set by the range, and
// local-ports-exhausted must say so while timewait-dominant gives its rate
// only as a lower bound. Two regimes, both the kernel's:
//
//   - the client closes first (nginx to an upstream): its sockets sit in
//     TIME_WAIT, connect() uses the even ports, then the odd ones, then
//     reuses TIME_WAIT sockets older than ~1 s (tcp_tw_reuse, on for
//     loopback): the cap is the whole range;
//   - the server closes first: the client's ports come free at once and
//     connect() keeps taking even ones, reopening their TIME_WAIT entries:
//     the cap is half the range.
func TestLocalPortsExhaustedKernel(t *testing.T) {
	for _, tc := range []struct {
		name              string
		clientClosesFirst bool
		min, max          int64 // TIME_WAIT entries expected, of 1000 ports
		summary           string
	}{
		{"client closes first", true, 900, 1000, "local ports exhausted"},
		{"server closes first", false, 450, 550, "local ports running out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kernelTW, r, b := portsInNamespace(t, tc.clientClosesFirst)
			if kernelTW < tc.min || kernelTW > tc.max {
				t.Fatalf("conntrack -L: %d TIME_WAIT entries after 2000 connections through 1000 ports, want %d–%d",
					kernelTW, tc.min, tc.max)
			}
			top := b.TopTuples[0]
			if top.Src != "127.0.0.1" || top.Dst != "127.0.0.1" || top.Port != 8080 || top.Error != 0 || top.TimeWait != kernelTW {
				t.Errorf("top tuple %+v, want 127.0.0.1 → 127.0.0.1:8080 with the kernel's %d TIME_WAIT entries, exact", top, kernelTW)
			}
			f := fixesFinding(r, "local-ports-exhausted")
			if f == nil {
				t.Fatalf("no local-ports-exhausted finding: %+v", r.Findings)
			}
			row := f.Evidence["tuples"].([]map[string]any)[0]
			if f.Evidence["local_ports"] != int64(1000) || row["time_wait"] != kernelTW || !strings.HasPrefix(f.Summary, tc.summary) {
				t.Errorf("%s / evidence %v, want %q…, local_ports 1000 and time_wait %d", f.Summary, f.Evidence, tc.summary, kernelTW)
			}
			t.Logf("%s: %s", f.ID, f.Summary)
			tw := fixesFinding(r, "timewait-dominant")
			if tw == nil || !strings.Contains(tw.Summary, "at least") || strings.Contains(tw.Summary, "about") {
				t.Errorf("timewait-dominant must give Little's law only as a lower bound: %+v", tw)
			}
		})
	}
}

// portsInNamespace makes 2,000 short connections to 127.0.0.1:8080 in a new
// namespace with the local port range 40000–40999 and returns the kernel's
// count of TIME_WAIT entries for them (conntrack -L), and the report and
// breakdown of the namespace.
func portsInNamespace(t *testing.T, clientClosesFirst bool) (int64, *analyze.Report, *analyze.Breakdown) {
	ns := nstest.New(t, "nft", "sysctl", "conntrack")
	hostRange, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	// ip_local_port_range is per network namespace: this changes the test's own only.
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40999")
	if got := strings.Fields(ns.Run("cat", "/proc/sys/net/ipv4/ip_local_port_range")); strings.Join(got, " ") != "40000 40999" {
		t.Fatalf("namespace port range %v", got)
	}
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); string(after) != string(hostRange) {
		t.Fatalf("the host's own port range changed: %q → %q", hostRange, after)
	}
	ns.Track()
	const conns = 2000
	var made, refused int
	err = ns.Do(func() error {
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
				if clientClosesFirst {
					_, _ = io.Copy(io.Discard, c) // until the client's FIN
				} else {
					_, _ = c.Read(make([]byte, 8)) // the request, then close first
				}
				c.Close()
			}
		}()
		deadline := time.Now().Add(60 * time.Second)
		for made < conns {
			if time.Now().After(deadline) {
				return errors.New("deadline")
			}
			c, err := net.Dial("tcp4", "127.0.0.1:8080")
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				// Every port is held by a TIME_WAIT socket too young to
				// reuse: wait a little.
				refused++
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("GET /\n"))
			if clientClosesFirst {
				c.Close()
			} else {
				_, _ = io.Copy(io.Discard, c) // until the server's FIN
				c.Close()
			}
			made++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after %d connections: %v", made, err)
	}
	time.Sleep(300 * time.Millisecond) // let the last FIN/ACKs cross

	// The kernel's own listing is the oracle for the count.
	listing := ns.Run("conntrack", "-L", "-p", "tcp", "--state", "TIME_WAIT", "--dport", "8080")
	kernelTW := int64(strings.Count(listing, "TIME_WAIT"))
	even := 0
	for _, l := range strings.Split(listing, "\n") {
		for _, fld := range strings.Fields(l) {
			if p, ok := strings.CutPrefix(fld, "sport="); ok {
				if p[len(p)-1]%2 == 0 {
					even++
				}
				break
			}
		}
	}
	t.Logf("%d connections (%d connects refused with EADDRNOTAVAIL); conntrack -L: %d TIME_WAIT entries, %d with an even source port",
		made, refused, kernelTW, even)

	opt := host.Options{NetNS: ns.Name}
	snap, err := host.Read(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if snap.TCP.PortRangeLow != 40000 || snap.TCP.PortRangeHigh != 40999 {
		t.Fatalf("port range read as %d–%d, want the namespace's 40000–40999", snap.TCP.PortRangeLow, snap.TCP.PortRangeHigh)
	}
	src, err := host.Entries(opt, snap)
	if err != nil {
		t.Fatal(err)
	}
	acc := analyze.NewAccumulator()
	acc.IdleAbove, acc.IdleAfter = analyze.IdleWindow(snap)
	if err := src(func(f *conntrack.Flow) error { acc.Add(f); return nil }); err != nil {
		t.Fatal(err)
	}
	b := acc.Breakdown()
	if len(b.TopTuples) == 0 {
		t.Fatal("no tuple counts")
	}
	return kernelTW, analyze.Analyze(snap, &b, time.Now()), &b
}

func fixesFinding(r *analyze.Report, id string) *analyze.Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id {
			return &r.Findings[i]
		}
	}
	return nil
}
