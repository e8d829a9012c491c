// Package kernlab is a small routed network in namespaces, for tests that
// compare something with the kernel's connection tracker.
//
// A lab is three network namespaces: a client side A, a router R and a
// server side C, joined by two veth pairs (A vA <-> rA R, R rC <-> vC C).
// Only R tracks connections and forwards. A and C hold no addresses, so no
// real stack answers: the "client" 10.0.1.2 / fd00:1::2 and the "server"
// 10.0.2.2 / fd00:2::2 exist only as static neighbour entries in R, and
// every packet is crafted by the test and injected with an AF_PACKET
// socket (from A in the original direction, from C in the reply
// direction). R forwards it out of the other veth, where the lab sees it
// arrive — the proof that the packet has passed conntrack and, for a new
// connection, that its entry has been confirmed.
//
// R's ruleset counts every packet after conntrack (prerouting, priority
// mangle) in one named counter per ctinfo, so the lab learns what a
// `ct state` match saw; the table and the statistics are read over
// ctnetlink in R. Everything lives in the three namespaces and vanishes
// with them (nstest deletes them in t.Cleanup, also on failure); nothing
// on the host changes.
package kernlab

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"golang.org/x/sys/unix"
)

// Side is where a packet is injected.
type Side int

// Sides: the client (A, original direction of connections it opens) and
// the server (C).
const (
	Client Side = iota
	Server
)

func (s Side) String() string {
	if s == Server {
		return "server"
	}
	return "client"
}

// The lab's addresses. The client and server addresses belong to nobody:
// R has permanent neighbour entries for them.
var (
	ClientIPv4 = netip.MustParseAddr("10.0.1.2")
	ServerIPv4 = netip.MustParseAddr("10.0.2.2")
	ClientIPv6 = netip.MustParseAddr("fd00:1::2")
	ServerIPv6 = netip.MustParseAddr("fd00:2::2")
)

// Interface names in R: the packet of a side arrives on this interface.
const (
	ClientIface = "rA"
	ServerIface = "rC"
)

var (
	macR = [2]net.HardwareAddr{{2, 0, 0, 0, 1, 1}, {2, 0, 0, 0, 2, 1}} // rA, rC
	macV = [2]net.HardwareAddr{{2, 0, 0, 0, 1, 2}, {2, 0, 0, 0, 2, 2}} // vA, vC
)

// Counter names in R's ruleset, one per ctinfo a state match can see.
var counterInfo = map[string]conntrack.CtInfo{
	"new_orig":  conntrack.CtNew,
	"est_orig":  conntrack.CtEstablished,
	"est_reply": conntrack.CtEstablishedReply,
	"rel_orig":  conntrack.CtRelated,
	"rel_reply": conntrack.CtRelatedReply,
	"invalid":   conntrack.CtInvalid,
	"untracked": conntrack.CtUntracked,
}

// Ruleset is R's nft ruleset: conntrack is used (so R tracks), nothing is
// dropped, and each packet is counted once after conntrack by its ctinfo.
// Only packets arriving from the lab's veths are counted.
const Ruleset = `table inet kernlab {
	counter new_orig {}
	counter est_orig {}
	counter est_reply {}
	counter rel_orig {}
	counter rel_reply {}
	counter invalid {}
	counter untracked {}
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		iifname != { "rA", "rC" } return
		ct state new ct direction original counter name "new_orig" return
		ct state established ct direction original counter name "est_orig" return
		ct state established ct direction reply counter name "est_reply" return
		ct state related ct direction original counter name "rel_orig" return
		ct state related ct direction reply counter name "rel_reply" return
		ct state invalid counter name "invalid" return
		ct state untracked counter name "untracked" return
	}
}
`

// Lab is one running lab.
type Lab struct {
	t       testing.TB
	A, R, C *nstest.NS
	ct      *ctnetlink.Conn
	tx, rx  [2]int // AF_PACKET sockets in A (Client) and C (Server)
	ifindex [2]int // vA in A, vC in C
	start   time.Time
}

// Require skips the test unless the lab can run here (root, ip, nft, conntrack).
func Require(t testing.TB) {
	t.Helper()
	nstest.Require(t, "nft", "conntrack")
}

// Missing says why a lab cannot run here ("" when it can), for tests
// that do something else instead of skipping.
func Missing() string {
	if os.Geteuid() != 0 {
		return "needs root to create network namespaces"
	}
	for _, c := range []string{"ip", "nft", "conntrack", "sysctl"} {
		if _, err := exec.LookPath(c); err != nil {
			return c + " is not installed"
		}
	}
	return ""
}

// New builds a lab; everything is removed when the test ends.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	l := &Lab{t: t, tx: [2]int{-1, -1}, rx: [2]int{-1, -1}}
	l.A = nstest.New(t, "nft", "conntrack")
	l.R = nstest.New(t)
	l.C = nstest.New(t)
	t.Cleanup(l.close)
	for _, ns := range []*nstest.NS{l.A, l.C} {
		// Quiet ends: no IPv6 (no router solicitations, DAD, MLD), no addresses.
		ns.Run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	r := l.R
	r.Run("sysctl", "-q", "-w",
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
		"net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1",
		"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	for i, peer := range []*nstest.NS{l.A, l.C} {
		rname, vname := "rA", "vA"
		if i == 1 {
			rname, vname = "rC", "vC"
		}
		r.Run("ip", "link", "add", rname, "address", macR[i].String(), "type", "veth",
			"peer", "name", vname, "address", macV[i].String(), "netns", peer.Name)
		peer.Run("ip", "link", "set", vname, "up")
		r.Run("ip", "link", "set", rname, "up")
		r.Run("ip", "addr", "add", fmt.Sprintf("10.0.%d.1/24", i+1), "dev", rname)
		r.Run("ip", "addr", "add", fmt.Sprintf("fd00:%d::1/64", i+1), "dev", rname, "nodad")
		r.Run("ip", "neigh", "add", fmt.Sprintf("10.0.%d.2", i+1), "lladdr", macV[i].String(), "dev", rname, "nud", "permanent")
		r.Run("ip", "-6", "neigh", "add", fmt.Sprintf("fd00:%d::2", i+1), "lladdr", macV[i].String(), "dev", rname, "nud", "permanent")
		if err := peer.Do(func() error { return l.openSockets(i, vname) }); err != nil {
			t.Fatalf("kernlab: sockets in %s: %v", peer.Name, err)
		}
	}
	r.Nft(Ruleset)
	ct, err := ctnetlink.Open(r.Path())
	if err != nil {
		t.Fatalf("kernlab: ctnetlink in %s: %v", r.Name, err)
	}
	l.ct = ct
	l.start = time.Now().Round(0) // wall clock: compared with kernel timestamps
	return l
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openSockets runs inside the side's namespace: a send socket and a
// receive socket bound to its veth.
func (l *Lab) openSockets(i int, iface string) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	l.ifindex[i] = ifi.Index
	tx, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("AF_PACKET send socket: %w", err)
	}
	l.tx[i] = tx
	rx, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("AF_PACKET receive socket: %w", err)
	}
	l.rx[i] = rx
	if err := unix.Bind(rx, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("bind receive socket to %s: %w", iface, err)
	}
	// The kernel stamps each frame when the veth receives it, which is
	// when R forwarded it: the time R processed the packet, however late
	// this process gets to read it.
	if err := unix.SetsockoptInt(rx, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	return nil
}

func (l *Lab) close() {
	if l.ct != nil {
		l.ct.Close()
	}
	for i := range 2 {
		for _, fd := range []int{l.tx[i], l.rx[i]} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
}

// Elapsed is the time since the lab was ready (by the wall clock, the
// clock of the kernel's packet timestamps).
func (l *Lab) Elapsed() time.Duration { return time.Now().Round(0).Sub(l.start) }

// Result is what the kernel did with one injected packet.
type Result struct {
	// CtInfo is the ctinfo R's state match saw (conntrack.CtInvalid: no
	// conntrack). Meaningless when Dropped.
	CtInfo conntrack.CtInfo
	// Forwarded: the packet came out of R on the other side.
	Forwarded bool
	// Dropped: conntrack dropped it (the drop counter moved).
	Dropped bool
	// Sent is when the packet was handed to the kernel; At is when R
	// forwarded it (the kernel's receive timestamp on the far side), the
	// time conntrack saw it — Sent when it was not forwarded. Both are
	// lab times ([Lab.Elapsed]).
	Sent, At time.Duration
}

// l4 returns the bytes after the IP header (unchanged by forwarding).
func l4(pkt []byte) []byte {
	if len(pkt) == 0 {
		return nil
	}
	switch pkt[0] >> 4 {
	case 4:
		if ihl := int(pkt[0]&15) * 4; len(pkt) >= ihl {
			return pkt[ihl:]
		}
	case 6:
		if len(pkt) >= 40 {
			return pkt[40:]
		}
	}
	return nil
}

// Send injects an IP packet (IPv4 or IPv6, checksums filled in) on a side,
// waits until R has forwarded it to the other side or conntrack has dropped
// it, and reports what R's counters saw.
func (l *Lab) Send(from Side, pkt []byte) (Result, error) {
	var res Result
	if len(pkt) == 0 {
		return res, errors.New("kernlab: empty packet")
	}
	proto := uint16(unix.ETH_P_IP)
	if pkt[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	to := 1 - int(from)
	l.drain(to)
	before, err := l.Counters()
	if err != nil {
		return res, err
	}
	drops, err := l.drops()
	if err != nil {
		return res, err
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: l.ifindex[from], Halen: 6}
	copy(sa.Addr[:], macR[from])
	res.Sent = l.Elapsed()
	if err := unix.Sendto(l.tx[from], pkt, 0, sa); err != nil {
		return res, fmt.Errorf("kernlab: send on the %s side: %w", from, err)
	}
	res.At = res.Sent
	want := l4(pkt)
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for !res.Forwarded && !res.Dropped {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("kernlab: the %s's packet neither came out of R nor was dropped by conntrack within 5 s", from)
		}
		fds := []unix.PollFd{{Fd: int32(l.rx[to]), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 10); err != nil && err != unix.EINTR {
			return res, err
		}
		for {
			n, oobn, _, src, err := unix.Recvmsg(l.rx[to], buf, oob, 0)
			if err != nil {
				break
			}
			if ll, ok := src.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if bytes.Equal(l4(buf[:n]), want) {
				res.Forwarded = true
				now := l.Elapsed()
				res.At = now
				// A stamp outside [Sent, now] would mean the wall clock
				// stepped: keep the (later) reading time then.
				if at, ok := l.stamp(oob[:oobn]); ok && at >= res.Sent-time.Millisecond && at <= now {
					res.At = at
				}
				break
			}
		}
		if !res.Forwarded {
			d, err := l.drops()
			if err != nil {
				return res, err
			}
			res.Dropped = d > drops
		}
	}
	after, err := l.Counters()
	if err != nil {
		return res, err
	}
	var moved []string
	for name, n := range after {
		if n != before[name] {
			moved = append(moved, fmt.Sprintf("%s+%d", name, n-before[name]))
			res.CtInfo = counterInfo[name]
		}
	}
	switch {
	case res.Dropped && len(moved) == 0:
	case len(moved) != 1 || !strings.HasSuffix(moved[0], "+1"):
		return res, fmt.Errorf("kernlab: want exactly one ctinfo counter +1 for the packet, got %v", moved)
	}
	return res, nil
}

// stamp returns the lab time of a received frame's kernel timestamp.
func (l *Lab) stamp(oob []byte) (time.Duration, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			var ts unix.Timespec
			ts.Sec = int64(binary.NativeEndian.Uint64(m.Data[0:]))
			ts.Nsec = int64(binary.NativeEndian.Uint64(m.Data[8:]))
			return time.Unix(ts.Unix()).Sub(l.start), true
		}
	}
	return 0, false
}

// drain discards whatever a side's receive socket holds.
func (l *Lab) drain(side int) {
	buf := make([]byte, 65536)
	for {
		if _, _, err := unix.Recvfrom(l.rx[side], buf, 0); err != nil {
			return
		}
	}
}

func (l *Lab) drops() (uint64, error) {
	st, err := l.Stats()
	if err != nil {
		return 0, err
	}
	d, _ := st.Get(conntrack.StatDrop)
	return d, nil
}

// Counters reads R's ctinfo counters (packets), by counter name.
func (l *Lab) Counters() (map[string]uint64, error) {
	out, err := l.R.Output("nft", "-j", "list", "counters", "table", "inet", "kernlab")
	if err != nil {
		return nil, fmt.Errorf("kernlab: nft list counters: %w", err)
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("kernlab: nft -j output: %w", err)
	}
	m := make(map[string]uint64, len(counterInfo))
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			m[o.Counter.Name] = o.Counter.Packets
		}
	}
	if len(m) != len(counterInfo) {
		return nil, fmt.Errorf("kernlab: nft listed %d counters, want %d", len(m), len(counterInfo))
	}
	return m, nil
}

// Flows returns R's table.
func (l *Lab) Flows() ([]conntrack.Flow, error) {
	fs, _, err := l.FlowsAt()
	return fs, err
}

// FlowsAt returns R's table and the lab time it was read at (the middle
// of the dump; a dump that took more than 200 ms is repeated, up to three
// times, so the time is good to a tenth of a second).
func (l *Lab) FlowsAt() ([]conntrack.Flow, time.Duration, error) {
	var fs []conntrack.Flow
	var at time.Duration
	for range 3 {
		fs = fs[:0]
		t0 := l.Elapsed()
		err := l.ct.Dump(func(f *conntrack.Flow) error {
			fs = append(fs, *f)
			return nil
		})
		if err != nil {
			return nil, 0, fmt.Errorf("kernlab: dump R's table: %w", err)
		}
		t1 := l.Elapsed()
		at = t0 + (t1-t0)/2
		if t1-t0 <= 200*time.Millisecond {
			break
		}
	}
	return fs, at, nil
}

// Get looks one entry up in R by its original tuple (`conntrack -G`, no
// table dump: cheap also in a table of a million entries); nil when there
// is none.
func (l *Lab) Get(proto conntrack.Proto, src, dst netip.Addr, sport, dport uint16) (*conntrack.Flow, error) {
	out, err := l.R.Output("conntrack", "-G", "-p", proto.String(), "-s", src.String(), "-d", dst.String(),
		"--sport", strconv.Itoa(int(sport)), "--dport", strconv.Itoa(int(dport)))
	if err != nil {
		if strings.Contains(err.Error(), "such conntrack doesn't exist") {
			return nil, nil
		}
		return nil, fmt.Errorf("kernlab: conntrack -G: %w", err)
	}
	var f conntrack.Flow
	if err := conntrack.ParseLine([]byte(strings.TrimSpace(out)), &f); err != nil {
		return nil, fmt.Errorf("kernlab: conntrack -G output %q: %w", out, err)
	}
	return &f, nil
}

// Stats returns R's conntrack statistics, summed over CPUs.
func (l *Lab) Stats() (conntrack.Stats, error) {
	per, err := l.ct.Stats()
	if err != nil {
		return conntrack.Stats{}, fmt.Errorf("kernlab: R's statistics: %w", err)
	}
	return conntrack.SumStats(per), nil
}

// Count returns R's entry count and the global max.
func (l *Lab) Count() (count, max int64, err error) { return l.ct.Count() }

// Fill loads n entries into R's table in one `conntrack -R` run; line(i)
// returns the i-th entry's `conntrack -I` arguments (without the -I).
func (l *Lab) Fill(n int, line func(i int) string) error {
	file := filepath.Join(l.t.TempDir(), "fill.txt")
	fh, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(fh)
	for i := range n {
		w.WriteString("-I ")
		w.WriteString(line(i))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if _, err := l.R.Output("conntrack", "-R", file); err != nil {
		return fmt.Errorf("kernlab: conntrack -R: %w", err)
	}
	return nil
}

// Sysctls reads net.netfilter sysctls in R (names without the
// "net.netfilter." prefix, e.g. "nf_conntrack_udp_timeout"). Names R does
// not have are left out.
func (l *Lab) Sysctls(names []string) (map[string]int64, error) {
	args := []string{"-e"}
	for _, n := range names {
		args = append(args, "net.netfilter."+n)
	}
	out, err := l.R.Output("sysctl", args...)
	if err != nil {
		return nil, fmt.Errorf("kernlab: sysctl in R: %w", err)
	}
	m := map[string]int64{}
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("kernlab: sysctl line %q: %w", strings.TrimSpace(line), err)
		}
		m[strings.TrimPrefix(strings.TrimSpace(k), "net.netfilter.")] = n
	}
	return m, nil
}

// SetSysctl writes a per-namespace net.netfilter sysctl in R (a timeout,
// nf_conntrack_tcp_loose, …; never the global max or buckets).
func (l *Lab) SetSysctl(name string, v int64) error {
	if _, err := l.R.Output("sysctl", "-q", "-w", fmt.Sprintf("net.netfilter.%s=%d", name, v)); err != nil {
		return fmt.Errorf("kernlab: sysctl in R: %w", err)
	}
	return nil
}

// GlobalMax reads nf_conntrack_max (the limit every namespace's count is
// compared with; writable only in the initial namespace, never written here).
func GlobalMax() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
