package sim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// The committed capture: loopback traffic of captureTraffic in a network
// namespace, as pcap and pcapng (snap length 128), and the kernel's table
// (`conntrack -L`) right after the capture stopped. Regenerate them, as
// root, with CTDOCTOR_REGEN_PCAP=1 go test ./sim -run TestReplayLiveCapture.
const (
	committedPcap      = "testdata/loopback.pcap"
	committedPcapng    = "testdata/loopback.pcapng"
	committedConntrack = "testdata/loopback.pcap.conntrack"
	committedSnaplen   = 128
)

// capFrame is one captured link-layer frame.
type capFrame struct {
	ts   time.Time
	data []byte
}

// loCapture captures the frames sent on lo in a network namespace with an
// AF_PACKET socket, as tcpdump -i lo would.
type loCapture struct {
	fd     int
	stop   atomic.Bool
	done   chan struct{}
	frames []capFrame
	err    error
}

// startCapture opens the capture socket inside ns and reads it in the
// background until Stop.
//
// Every packet on lo passes the taps twice, going out and coming back in;
// this keeps the outgoing copy, whose timestamp is taken by the sending
// thread right after the OUTPUT hook where the kernel tracks it (libpcap
// keeps the incoming one; either sees each packet once).
func startCapture(ns *nstest.NS) (*loCapture, error) {
	c := &loCapture{fd: -1, done: make(chan struct{})}
	err := ns.Do(func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(capHtons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: capHtons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
			return fmt.Errorf("bind to lo: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, err
	}
	go c.loop()
	return c, nil
}

func capHtons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *loCapture) loop() {
	defer close(c.done)
	buf := make([]byte, 256<<10)
	oob := make([]byte, 256)
	for {
		flags := 0
		if c.stop.Load() {
			flags = unix.MSG_DONTWAIT // drain what is queued, then end
		}
		n, oobn, rflags, from, err := unix.Recvmsg(c.fd, buf, oob, flags)
		if err == unix.EAGAIN || err == unix.EINTR {
			if flags != 0 {
				return
			}
			continue
		}
		if err != nil {
			c.err = err
			return
		}
		if sll, ok := from.(*unix.SockaddrLinklayer); !ok || sll.Pkttype != unix.PACKET_OUTGOING {
			continue
		}
		if rflags&unix.MSG_TRUNC != 0 {
			c.err = fmt.Errorf("a %d-byte frame did not fit the capture buffer", n)
			return
		}
		ts := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					ts = time.Unix(int64(binary.NativeEndian.Uint64(m.Data)), int64(binary.NativeEndian.Uint64(m.Data[8:])))
				}
			}
		}
		c.frames = append(c.frames, capFrame{ts: ts, data: append([]byte{}, buf[:n]...)})
	}
}

// Stop ends the capture after reading every frame already queued.
func (c *loCapture) Stop() ([]capFrame, error) {
	c.stop.Store(true)
	<-c.done
	unix.Close(c.fd)
	return c.frames, c.err
}

func writePcap(w io.Writer, frames []capFrame, snaplen int, lt layers.LinkType) error {
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(uint32(snaplen), lt); err != nil {
		return err
	}
	for _, f := range frames {
		d := f.data[:min(len(f.data), snaplen)]
		if err := pw.WritePacket(gopacket.CaptureInfo{Timestamp: f.ts, CaptureLength: len(d), Length: len(f.data)}, d); err != nil {
			return err
		}
	}
	return nil
}

func writePcapng(w io.Writer, frames []capFrame, snaplen int) error {
	nw, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{Name: "lo", LinkType: layers.LinkTypeEthernet,
		SnapLength: uint32(snaplen), TimestampResolution: 9}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		return err
	}
	for _, f := range frames {
		d := f.data[:min(len(f.data), snaplen)]
		if err := nw.WritePacket(gopacket.CaptureInfo{Timestamp: f.ts, CaptureLength: len(d), Length: len(f.data)}, d); err != nil {
			return err
		}
	}
	return nw.Flush()
}

// captureTraffic generates, inside ns, the traffic the live test captures:
// short TCP connections closed by the client and by the server, keep-alive
// connections left open, a half-closed one, an aborted one (RST), refused
// connects, UDP request/reply, a UDP stream (a packet more than 2 s after
// the reply), UDP to a closed port (ICMP port unreachable) and ping, over
// IPv4 and IPv6. It returns a function that closes what is left open.
func captureTraffic(ns *nstest.NS) (cleanup func(), err error) {
	var closers []io.Closer
	var streams []net.Conn // the first UDP flow of each family
	var wg sync.WaitGroup
	hold := make(chan struct{}) // closing it lets the half-closed server side close
	cleanup = func() {
		close(hold)
		for _, c := range slices.Backward(closers) {
			c.Close()
		}
		wg.Wait()
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	err = ns.Do(func() error {
		lc := net.ListenConfig{KeepAlive: -1} // no keep-alive probes during the test
		dialer := net.Dialer{KeepAlive: -1, Timeout: 5 * time.Second}
		for _, network := range []string{"4", "6"} {
			host := "127.0.0.1"
			if network == "6" {
				host = "::1"
			}
			ln, err := lc.Listen(context.Background(), "tcp"+network, net.JoinHostPort(host, "0"))
			if err != nil {
				return err
			}
			closers = append(closers, ln)
			served := make(chan error, 16)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					wg.Add(1)
					go func() { defer wg.Done(); served <- serveTestConn(c, hold) }()
				}
			}()
			addr := ln.Addr().String()
			// One connection of each kind; the first byte of the request
			// tells the server how it ends.
			modes := "cskkhr"
			if network == "6" {
				modes = "csk"
			}
			for _, mode := range []byte(modes) {
				c, err := dialer.Dial("tcp"+network, addr)
				if err != nil {
					return err
				}
				req := make([]byte, 1000)
				req[0] = mode
				if _, err := c.Write(req); err != nil {
					return err
				}
				if _, err := io.ReadFull(c, make([]byte, 3000)); err != nil {
					return fmt.Errorf("mode %c: reading the response: %w", mode, err)
				}
				switch mode {
				case 'c': // the client closes first
					c.Close()
					if err := <-served; err != nil {
						return err
					}
				case 's': // the server closes first
					if _, err := c.Read(make([]byte, 1)); err != io.EOF {
						return fmt.Errorf("mode s: want EOF, got %v", err)
					}
					if err := <-served; err != nil {
						return err
					}
					c.Close()
				case 'k': // keep-alive: left open
					closers = append(closers, c)
				case 'h': // half-closed: the client's FIN is acked, the server stays open
					if err := c.(*net.TCPConn).CloseWrite(); err != nil {
						return err
					}
					closers = append(closers, c)
				case 'r': // aborted with a RST
					_ = c.(*net.TCPConn).SetLinger(0)
					c.Close()
					if err := <-served; err != nil {
						return err
					}
				}
			}
			// Refused: nothing listens on port 1.
			if _, err := dialer.Dial("tcp"+network, net.JoinHostPort(host, "1")); err == nil || !strings.Contains(err.Error(), "refused") {
				return fmt.Errorf("connect to a closed port: %v, want connection refused", err)
			}

			// UDP: an echo server, a request/reply and a stream.
			us, err := lc.ListenPacket(context.Background(), "udp"+network, net.JoinHostPort(host, "0"))
			if err != nil {
				return err
			}
			closers = append(closers, us)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 2000)
				for {
					n, from, err := us.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = us.WriteTo(buf[:n], from)
				}
			}()
			for i := range 2 {
				c, err := dialer.Dial("udp"+network, us.LocalAddr().String())
				if err != nil {
					return err
				}
				closers = append(closers, c)
				if err := udpExchange(c, 100); err != nil {
					return err
				}
				if i == 0 {
					streams = append(streams, c)
				}
			}
			// UDP to a closed port: the ICMP port unreachable arrives as ECONNREFUSED.
			c, err := dialer.Dial("udp"+network, net.JoinHostPort(host, "9"))
			if err != nil {
				return err
			}
			closers = append(closers, c)
			if _, err := c.Write([]byte("anyone?")); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "refused") {
				return fmt.Errorf("udp to a closed port: %v, want connection refused", err)
			}
		}
		return nil
	})
	if err != nil {
		return cleanup, err
	}
	for _, args := range [][]string{{"-c", "2", "-i", "0.2", "127.0.0.1"}, {"-6", "-c", "1", "::1"}} {
		if out, err := ns.Output("ping", args...); err != nil {
			return cleanup, fmt.Errorf("ping %v: %v\n%s", args, err, out)
		}
	}
	// The UDP streams: another packet on the first UDP flow of each family
	// more than 2 s after its reply; the second flow stays a plain
	// request/reply.
	time.Sleep(2500 * time.Millisecond)
	for _, c := range streams {
		if err := udpExchange(c, 50); err != nil {
			return cleanup, err
		}
	}
	return cleanup, nil
}

func udpExchange(c net.Conn, n int) error {
	if _, err := c.Write(make([]byte, n)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 2000)); err != nil {
		return fmt.Errorf("udp reply: %w", err)
	}
	return nil
}

// serveTestConn is the server side of one test connection; a half-closed one
// stays open until hold is closed.
func serveTestConn(c net.Conn, hold <-chan struct{}) error {
	defer c.Close()
	req := make([]byte, 1000)
	if _, err := io.ReadFull(c, req); err != nil {
		return fmt.Errorf("server: reading the request: %w", err)
	}
	if _, err := c.Write(make([]byte, 3000)); err != nil {
		return fmt.Errorf("server: writing the response: %w", err)
	}
	switch req[0] {
	case 's':
		return nil // close first
	case 'c', 'r':
		_, err := c.Read(make([]byte, 1)) // the client's FIN (EOF) or RST
		if req[0] == 'c' && err != io.EOF {
			return fmt.Errorf("server: want EOF, got %v", err)
		}
		return nil
	default: // 'k', 'h': stay open until the test ends
		_, _ = io.Copy(io.Discard, c) // 'h': returns at the client's FIN
		if req[0] == 'h' {
			<-hold
		}
		return nil
	}
}

// ctCountKey is what the test compares: protocol, state and flags.
func ctCountKey(f *conntrack.Flow) string {
	s := f.Family.String() + " " + f.Proto.String()
	if n := f.StateName(); n != "" {
		s += " " + n
	}
	if f.Assured() {
		s += " [ASSURED]"
	}
	if f.Unreplied() {
		s += " [UNREPLIED]"
	}
	return s
}

// ctTupleKey names an entry by its original and reply tuples.
func ctTupleKey(f *conntrack.Flow) string {
	tup := func(o *conntrack.Tuple) string {
		if f.Proto.IsICMP() {
			return fmt.Sprintf("%s>%s type=%d code=%d id=%d", o.Src, o.Dst, o.ICMPType, o.ICMPCode, o.ICMPID)
		}
		return fmt.Sprintf("%s:%d>%s:%d", o.Src, o.SrcPort, o.Dst, o.DstPort)
	}
	return fmt.Sprintf("%s %s | %s", f.Proto, tup(&f.Orig), tup(&f.Reply))
}

// ctTable is a conntrack table reduced to what the test compares.
type ctTable struct {
	counts map[string]int
	tuples map[string]string // tuple -> countKey
}

func ctTableOf(src conntrack.Source) (ctTable, error) {
	tb := ctTable{counts: map[string]int{}, tuples: map[string]string{}}
	err := src(func(f *conntrack.Flow) error {
		k := ctCountKey(f)
		tb.counts[k]++
		tb.tuples[ctTupleKey(f)] = k
		return nil
	})
	return tb, err
}

func (tb ctTable) String() string {
	var lines []string
	for k, n := range tb.counts {
		lines = append(lines, fmt.Sprintf("%4d %s", n, k))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// ctDiff says how the engine's table differs from the kernel's, entry by entry.
func ctDiff(kernel, eng ctTable) string {
	var d []string
	for t, k := range kernel.tuples {
		if e, ok := eng.tuples[t]; !ok {
			d = append(d, fmt.Sprintf("  %s: kernel %s, engine has no entry", t, k))
		} else if e != k {
			d = append(d, fmt.Sprintf("  %s: kernel %s, engine %s", t, k, e))
		}
	}
	for t, e := range eng.tuples {
		if _, ok := kernel.tuples[t]; !ok {
			d = append(d, fmt.Sprintf("  %s: kernel has no entry, engine %s", t, e))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

// replayCapture replays a capture into a fresh tracker and returns its table.
func replayCapture(t *testing.T, r io.Reader, opt ReplayOptions, cfg engine.Config) (ctTable, ReplayStats, *engine.Tracker, error) {
	t.Helper()
	vc, ok := cfg.Clock.(*engine.VirtualClock)
	if !ok {
		vc = &engine.VirtualClock{}
	}
	cfg.Clock, cfg.Seed = vc, 1
	tr, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, rerr := ReplayPCAP(r, tr, vc, opt)
	if got := vc.Now(); rerr == nil && got != st.Duration {
		t.Errorf("the clock reads %v after the replay, want the capture's duration %v", got, st.Duration)
	}
	tb, err := ctTableOf(tr.Flows)
	if err != nil {
		t.Fatal(err)
	}
	return tb, st, tr, rerr
}

// compareWithKernel fails the test unless the engine's table has the
// kernel's entries (both tuples, protocol, state and flags), and explains
// the difference entry by entry.
func compareWithKernel(t *testing.T, what string, kernel, eng ctTable, st ReplayStats) {
	t.Helper()
	if !maps.Equal(kernel.counts, eng.counts) || !maps.Equal(kernel.tuples, eng.tuples) {
		t.Errorf("%s: the engine's table differs from the kernel's.\nkernel:\n%v\nengine:\n%v\nentries:\n%s\nreplay: %+v",
			what, kernel, eng, ctDiff(kernel, eng), st)
	}
}

// liveEntry is what the live comparison checks of an entry.
type liveEntry struct {
	key     string // ctCountKey: family, protocol, state, flags
	timeout int64
}

func liveEntries(src conntrack.Source) (map[string]liveEntry, error) {
	m := map[string]liveEntry{}
	err := src(func(f *conntrack.Flow) error {
		m[ctTupleKey(f)] = liveEntry{ctCountKey(f), int64(f.Timeout)}
		return nil
	})
	return m, err
}

// compareLive fails the test unless the engine holds the kernel's entries
// (both tuples), each with its state and flags and the seconds left
// within 1 s, read at the same moment of the capture's timeline.
func compareLive(t *testing.T, what string, kernel, eng map[string]liveEntry) {
	t.Helper()
	var d []string
	for tup, k := range kernel {
		e, ok := eng[tup]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("  %s: kernel %s %ds left, engine has no entry", tup, k.key, k.timeout))
		case e.key != k.key || e.timeout-k.timeout > 1 || k.timeout-e.timeout > 1:
			d = append(d, fmt.Sprintf("  %s: kernel %s %ds left, engine %s %ds left", tup, k.key, k.timeout, e.key, e.timeout))
		}
	}
	for tup, e := range eng {
		if _, ok := kernel[tup]; !ok {
			d = append(d, fmt.Sprintf("  %s: kernel has no entry, engine %s %ds left", tup, e.key, e.timeout))
		}
	}
	if len(d) > 0 {
		slices.Sort(d)
		t.Errorf("%s: the engine's table differs from the kernel's (±1 s on the timeouts):\n%s", what, strings.Join(d, "\n"))
	}
}

// TestReplayLiveCapture is the requirement: traffic generated on
// loopback in a namespace, captured to pcap, and replayed ends with the
// same state counts as the kernel's table at the end of the capture.
func TestReplayLiveCapture(t *testing.T) {
	ns := nstest.New(t, "conntrack", "nft", "ping")
	ns.Track()
	capt, err := startCapture(ns)
	if err != nil {
		t.Fatal(err)
	}
	cleanup, err := captureTraffic(ns)
	defer cleanup()
	if err != nil {
		capt.Stop()
		t.Fatal(err)
	}
	// Let the last ACKs leave (nothing is sent after them: no timers run
	// on the open connections), then stop and read the table at once.
	time.Sleep(300 * time.Millisecond)
	frames, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	// The listing's moment on the capture's timeline (the captured
	// frames carry the kernel's wall-clock stamps) is where the engine's
	// clock goes before its table is compared, timeouts included.
	listStart := time.Now()
	listing, err := ns.Output("conntrack", "-L")
	if err != nil {
		t.Fatalf("conntrack -L: %v", err)
	}
	listEnd := time.Now()
	if len(frames) == 0 {
		t.Fatal("nothing captured")
	}
	listedAt := listStart.Add(listEnd.Sub(listStart) / 2).Sub(frames[0].ts)
	kernelLive, err := liveEntries(conntrack.ReadAll(strings.NewReader(listing)))
	if err != nil {
		t.Fatalf("parsing conntrack -L: %v\n%s", err, listing)
	}
	kernel, err := ctTableOf(conntrack.ReadAll(strings.NewReader(listing)))
	if err != nil {
		t.Fatalf("parsing conntrack -L: %v\n%s", err, listing)
	}
	t.Logf("%d frames captured; the kernel's table:\n%s", len(frames), listing)
	if len(kernel.counts) < 8 {
		t.Fatalf("the kernel's table is missing the test's traffic:\n%s", listing)
	}

	var full, snapped, ng bytes.Buffer
	if err := writePcap(&full, frames, 1<<18, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	if err := writePcap(&snapped, frames, committedSnaplen, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	if err := writePcapng(&ng, frames, committedSnaplen); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{{"pcap", full.Bytes()}, {"pcap, snap length 128", snapped.Bytes()}, {"pcapng, snap length 128", ng.Bytes()}} {
		vc := &engine.VirtualClock{}
		eng, st, tr, err := replayCapture(t, bytes.NewReader(c.b), ReplayOptions{Hook: engine.Output}, engine.Config{Clock: vc})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.Packets != len(frames) || st.Decoded != len(frames) || st.Skipped != 0 {
			t.Errorf("%s: %+v, want all %d frames decoded", c.name, st, len(frames))
		}
		compareWithKernel(t, c.name, kernel, eng, st)
		if listedAt < st.Duration {
			t.Fatalf("%s: the listing (%v into the capture) is before the last packet (%v)", c.name, listedAt, st.Duration)
		}
		vc.Set(listedAt)
		engLive, err := liveEntries(tr.Flows)
		if err != nil {
			t.Fatal(err)
		}
		compareLive(t, c.name, kernelLive, engLive)
		t.Logf("%s: %d packets, verdicts %v, %v; tables compared %v after the first packet", c.name, st.Packets, st.Verdicts, st.Duration, listedAt)
	}

	if os.Getenv("CTDOCTOR_REGEN_PCAP") != "" {
		for name, b := range map[string][]byte{committedPcap: snapped.Bytes(), committedPcapng: ng.Bytes(), committedConntrack: []byte(listing)} {
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("wrote %s, %s and %s", committedPcap, committedPcapng, committedConntrack)
	}
}

// committedCapture returns the committed capture files and the kernel's table.
func committedCapture(t *testing.T) (pcap, pcapng []byte, kernel ctTable) {
	t.Helper()
	var err error
	if pcap, err = os.ReadFile(committedPcap); err != nil {
		t.Fatal(err)
	}
	if pcapng, err = os.ReadFile(committedPcapng); err != nil {
		t.Fatal(err)
	}
	listing, err := os.ReadFile(committedConntrack)
	if err != nil {
		t.Fatal(err)
	}
	if kernel, err = ctTableOf(conntrack.ReadAll(bytes.NewReader(listing))); err != nil {
		t.Fatal(err)
	}
	return pcap, pcapng, kernel
}

// readCapFrames reads the frames of an Ethernet pcap.
func readCapFrames(t testing.TB, b []byte) []capFrame {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []capFrame
	for {
		d, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, capFrame{ts: ci.Timestamp, data: d})
	}
}

// TestReplayCommittedCapture replays the committed pcap and pcapng (and a
// gzip-compressed copy): the engine ends with the kernel's table.
func TestReplayCommittedCapture(t *testing.T) {
	pcap, pcapng, kernel := committedCapture(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(pcap)
	_ = zw.Close()
	var stats []ReplayStats
	for _, c := range []struct {
		name string
		b    []byte
	}{{"pcap", pcap}, {"pcapng", pcapng}, {"pcap.gz", gz.Bytes()}} {
		eng, st, _, err := replayCapture(t, bytes.NewReader(c.b), ReplayOptions{Hook: engine.Output}, engine.Config{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.Packets < 50 || st.Decoded != st.Packets || st.Skipped != 0 || st.Duration < 2*time.Second {
			t.Errorf("%s: %+v, want every record of a capture longer than 2 s decoded", c.name, st)
		}
		if st.Verdicts["NEW"] == 0 || st.Verdicts["ESTABLISHED,REPLY"] == 0 || st.Verdicts["RELATED,REPLY"] == 0 {
			t.Errorf("%s: verdicts %v, want NEW, ESTABLISHED,REPLY and RELATED,REPLY (the port unreachables)", c.name, st.Verdicts)
		}
		compareWithKernel(t, c.name, kernel, eng, st)
		stats = append(stats, st)
	}
	for _, st := range stats[1:] {
		if st.Packets != stats[0].Packets || !st.First.Equal(stats[0].First) || !st.Last.Equal(stats[0].Last) ||
			!maps.Equal(st.Verdicts, stats[0].Verdicts) {
			t.Errorf("replays differ: %+v vs %+v", st, stats[0])
		}
	}
}

// relink rewrites Ethernet frames for another link type.
func relink(t testing.TB, frames []capFrame, lt int) []capFrame {
	t.Helper()
	out := make([]capFrame, len(frames))
	for i, f := range frames {
		et, ip := binary.BigEndian.Uint16(f.data[12:]), f.data[14:]
		v6 := et == 0x86dd
		var hdr []byte
		switch lt {
		case linkEthernet: // with an 802.1Q tag and an 802.1ad outer tag
			hdr = append(append([]byte{}, f.data[:12]...), 0x88, 0xa8, 0, 7, 0x81, 0x00, 0x20, 0x05, byte(et>>8), byte(et))
		case linkRaw, linkRawDLT12, linkRawDLT14, linkIPv4, linkIPv6:
		case linkLinuxSLL:
			hdr = []byte{0, 4, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, byte(et >> 8), byte(et)}
		case linkLinuxSLL2:
			hdr = []byte{byte(et >> 8), byte(et), 0, 0, 0, 0, 0, 1, 3, 4, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0}
		case linkNull: // little-endian, Darwin's AF_INET6
			hdr = []byte{2, 0, 0, 0}
			if v6 {
				hdr = []byte{30, 0, 0, 0}
			}
		case linkLoop: // network byte order, OpenBSD's AF_INET6
			hdr = []byte{0, 0, 0, 2}
			if v6 {
				hdr = []byte{0, 0, 0, 24}
			}
		default:
			t.Fatalf("relink: link type %d", lt)
		}
		out[i] = capFrame{ts: f.ts, data: append(hdr, ip...)}
	}
	return out
}

// TestReplayLinkTypes replays the committed capture re-encapsulated in
// every link type ReplayPCAP reads: the same packets, the same table.
func TestReplayLinkTypes(t *testing.T) {
	pcap, _, kernel := committedCapture(t)
	frames := readCapFrames(t, pcap)
	for _, lt := range []int{linkEthernet, linkRaw, linkRawDLT12, linkRawDLT14, linkLinuxSLL, linkLinuxSLL2, linkNull, linkLoop} {
		var b bytes.Buffer
		if err := writePcap(&b, relink(t, frames, lt), 1<<16, layers.LinkType(lt)); err != nil {
			t.Fatal(err)
		}
		eng, st, _, err := replayCapture(t, &b, ReplayOptions{Hook: engine.Output}, engine.Config{})
		if err != nil {
			t.Fatalf("link type %d: %v", lt, err)
		}
		if st.Decoded != len(frames) {
			t.Errorf("link type %d: %+v, want %d packets decoded", lt, st, len(frames))
		}
		compareWithKernel(t, fmt.Sprintf("link type %d", lt), kernel, eng, st)
	}
}

// TestReplaySkips: frames that are not IP, or not decodable, are counted
// and skipped, and the replay goes on.
func TestReplaySkips(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	syn, _ := engine.AppendIP(nil, &engine.Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: src, Dst: dst,
		SrcPort: 1000, DstPort: 80, Flags: engine.SYN})
	frag := append([]byte{}, syn...)
	frag[6], frag[7] = 0, 0x10 // fragment offset 128
	eth := func(et uint16, p []byte) []byte {
		return append([]byte{1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1, byte(et >> 8), byte(et)}, p...)
	}
	t0 := time.Unix(1700000000, 0)
	frames := []capFrame{
		{t0, eth(0x0806, make([]byte, 28))},                  // ARP
		{t0.Add(time.Second), eth(0x0800, syn)},              // tracked
		{t0.Add(2 * time.Second), eth(0x0800, frag)},         // later fragment
		{t0.Add(3 * time.Second), eth(0x0800, syn[:30])},     // cut TCP header
		{t0.Add(4 * time.Second), eth(0x0800, []byte{0x55})}, // IP version 5
		{t0.Add(5 * time.Second), eth(0x8100, []byte{0, 1})}, // cut VLAN tag
		{t0.Add(6 * time.Second), eth(0x0026, []byte{1, 2})}, // 802.3 length
		{t0.Add(7 * time.Second), []byte{1, 2, 3}},           // cut Ethernet header
	}
	var b bytes.Buffer
	if err := writePcap(&b, frames, 1<<16, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	var progress []int
	_, st, tr, err := replayCapture(t, &b, ReplayOptions{Progress: func(n int) { progress = append(progress, n) }}, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"non-IP ethertype 0x0806": 1, "IPv4 non-first fragment": 1, "truncated TCP header": 1,
		"unsupported IP version": 1, "truncated VLAN tag": 1, "802.3 frame (not IP)": 1, "truncated Ethernet header": 1,
	}
	if st.Packets != 8 || st.Decoded != 1 || st.Skipped != 7 || !maps.Equal(st.SkipReasons, want) {
		t.Errorf("stats %+v, want 8 packets, 1 decoded, skip reasons %v", st, want)
	}
	if !maps.Equal(st.Verdicts, map[string]int{"NEW": 1}) || tr.Count() != 1 {
		t.Errorf("verdicts %v and %d entries, want one NEW entry", st.Verdicts, tr.Count())
	}
	if !st.First.Equal(t0) || !st.Last.Equal(t0.Add(7*time.Second)) || st.Duration != 7*time.Second {
		t.Errorf("times %v %v %v, want the first and last records'", st.First, st.Last, st.Duration)
	}
	if !slices.Equal(progress, []int{8}) {
		t.Errorf("progress calls %v, want [8]", progress)
	}
}

// TestReplayTruncated: a file cut in a record ends the replay with the
// statistics so far and an error naming the packets read; a file cut at
// a record boundary is just shorter.
func TestReplayTruncated(t *testing.T) {
	pcap, pcapng, _ := committedCapture(t)
	frames := readCapFrames(t, pcap)
	// Record boundaries of the pcap: 24-byte file header, 16-byte record headers.
	ends := []int{24}
	for _, f := range frames {
		ends = append(ends, ends[len(ends)-1]+16+min(len(f.data), committedSnaplen))
	}
	if ends[len(ends)-1] != len(pcap) {
		t.Fatalf("record ends %d, file %d bytes", ends[len(ends)-1], len(pcap))
	}
	for _, n := range []int{10, 3, len(frames) - 1} {
		for _, cut := range []int{ends[n], ends[n] + 7, ends[n] + 20} {
			_, st, _, err := replayCapture(t, bytes.NewReader(pcap[:cut]), ReplayOptions{Hook: engine.Output}, engine.Config{})
			if st.Packets != n {
				t.Errorf("cut at %d: %d packets read, want %d", cut, st.Packets, n)
			}
			if cut == ends[n] {
				if err != nil {
					t.Errorf("cut at a record boundary: %v", err)
				}
				continue
			}
			want := fmt.Sprintf("pcap file truncated: %d packets read, then the file ends in the middle of a record", n)
			if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("cut at %d: error %v, want %q", cut, err, want)
			}
		}
	}
	// pcapng: cut anywhere after the headers.
	for _, cut := range []int{len(pcapng) / 2, len(pcapng) - 3} {
		_, st, _, err := replayCapture(t, bytes.NewReader(pcapng[:cut]), ReplayOptions{}, engine.Config{})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pcapng file truncated: %d packets read", st.Packets)) ||
			st.Packets == 0 || st.Packets >= len(frames) {
			t.Errorf("pcapng cut at %d of %d: %d packets, error %v", cut, len(pcapng), st.Packets, err)
		}
	}
	// Headers cut short.
	for _, c := range []struct {
		b    []byte
		want string
	}{
		{nil, "not a pcap or pcapng file: the input is empty"},
		{pcap[:2], "not a pcap or pcapng file: 2-byte input"},
		{pcap[:20], "reading pcap file header"},
		{pcapng[:20], "reading pcapng section header"},
		{[]byte("GET / HTTP/1.1\r\n"), "not a pcap or pcapng file: magic number 47 45 54 20"},
	} {
		_, _, _, err := replayCapture(t, bytes.NewReader(c.b), ReplayOptions{}, engine.Config{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.b, err, c.want)
		}
	}
}

// TestReplayUnknownLinkType: a link type ReplayPCAP cannot strip is an error.
func TestReplayUnknownLinkType(t *testing.T) {
	pcap, _, _ := committedCapture(t)
	frames := readCapFrames(t, pcap)[:3]
	var b bytes.Buffer
	if err := writePcap(&b, frames, 1<<16, layers.LinkType(147)); err != nil { // USER0
		t.Fatal(err)
	}
	_, st, _, err := replayCapture(t, &b, ReplayOptions{}, engine.Config{})
	if err == nil || !strings.Contains(err.Error(), "unsupported link type 147") || st.Packets != 0 {
		t.Errorf("pcap: %+v, error %v, want unsupported link type 147", st, err)
	}
	// pcapng: an Ethernet interface then a USER0 one.
	var ng bytes.Buffer
	nw, err := pcapgo.NewNgWriterInterface(&ng, pcapgo.NgInterface{Name: "lo", LinkType: layers.LinkTypeEthernet}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	user, err := nw.AddInterface(pcapgo.NgInterface{Name: "usb0", LinkType: layers.LinkType(147)})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: f.ts, CaptureLength: len(f.data), Length: len(f.data)}
		if i == 2 {
			ci.InterfaceIndex = user
		}
		if err := nw.WritePacket(ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.Flush(); err != nil {
		t.Fatal(err)
	}
	_, st, _, err = replayCapture(t, &ng, ReplayOptions{}, engine.Config{})
	if err == nil || !strings.Contains(err.Error(), "pcapng record 3: unsupported link type 147") || st.Packets != 3 || st.Decoded != 2 {
		t.Errorf("pcapng: %+v, error %v, want the third record's unsupported link type 147", st, err)
	}
}

// TestReplayHookAndIface: packets enter at the given hook, on the pcapng
// interface's name unless the options name one; a NOTRACK rule for
// loopback output then untracks every packet.
func TestReplayHookAndIface(t *testing.T) {
	pcap, pcapng, _ := committedCapture(t)
	notrack := engine.Config{NoTrack: []engine.NoTrackRule{{Hook: engine.Output, Iface: "lo"}}}
	for _, c := range []struct {
		name      string
		b         []byte
		opt       ReplayOptions
		untracked bool
	}{
		{"pcapng, interface lo from the file", pcapng, ReplayOptions{Hook: engine.Output}, true},
		{"pcap, Iface lo", pcap, ReplayOptions{Hook: engine.Output, Iface: "lo"}, true},
		{"pcap, no interface name", pcap, ReplayOptions{Hook: engine.Output}, false},
		{"pcapng, Iface eth0 overrides", pcapng, ReplayOptions{Hook: engine.Output, Iface: "eth0"}, false},
		{"pcapng, at prerouting", pcapng, ReplayOptions{Hook: engine.Prerouting}, false},
	} {
		eng, st, _, err := replayCapture(t, bytes.NewReader(c.b), c.opt, notrack)
		if err != nil {
			t.Fatal(err)
		}
		if untracked := st.Verdicts["UNTRACKED"] == st.Decoded && len(eng.counts) == 0; untracked != c.untracked {
			t.Errorf("%s: verdicts %v, %d kinds of entries; want untracked=%v", c.name, st.Verdicts, len(eng.counts), c.untracked)
		}
	}
}

// BenchmarkReplayPCAP replays the committed capture.
func BenchmarkReplayPCAP(b *testing.B) {
	pcap, err := os.ReadFile(filepath.Clean(committedPcap))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		vc := &engine.VirtualClock{}
		tr, err := engine.New(engine.Config{Clock: vc, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ReplayPCAP(bytes.NewReader(pcap), tr, vc, ReplayOptions{Hook: engine.Output}); err != nil {
			b.Fatal(err)
		}
	}
}
