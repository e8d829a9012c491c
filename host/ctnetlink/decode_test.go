package ctnetlink

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"golang.org/x/sys/unix"
)

// Builders for hand-made ctnetlink messages.

func attr(typ uint16, payload ...[]byte) []byte {
	var p []byte
	for _, x := range payload {
		p = append(p, x...)
	}
	b := make([]byte, 4, 4+len(p)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(p)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, p...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nest(typ uint16, children ...[]byte) []byte { return attr(typ|nlaFNested, children...) }

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// nlmsg builds a netlink message with an nfgenmsg header.
func nlmsg(typ, flags uint16, seq, pid uint32, family uint8, resID uint16, attrs ...[]byte) []byte {
	b := make([]byte, nlmsgHdrLen+nfgenHdrLen)
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[12:], pid)
	b[16] = family
	binary.BigEndian.PutUint16(b[18:], resID)
	for _, a := range attrs {
		b = append(b, a...)
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

// ctrlmsg builds NLMSG_DONE or NLMSG_ERROR with an errno payload.
func ctrlmsg(typ uint16, seq, pid uint32, errno int32) []byte {
	b := make([]byte, nlmsgHdrLen+4)
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[12:], pid)
	binary.NativeEndian.PutUint32(b[16:], uint32(errno))
	return b
}

const ctNew = nfnlSubsysCTNetlink << 8 // IPCTNL_MSG_CT_NEW

func tuple4(src, dst string, proto uint8, sport, dport uint16, zone ...uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	parts := [][]byte{
		nest(ctaTupleIP, attr(ctaIPv4Src, s[:]), attr(ctaIPv4Dst, d[:])),
		nest(ctaTupleProto, attr(ctaProtoNum, []byte{proto}), attr(ctaProtoSrcPort, be16(sport)), attr(ctaProtoDstPort, be16(dport))),
	}
	for _, z := range zone {
		parts = append(parts, attr(ctaTupleZone, be16(z)))
	}
	return concat(parts...)
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// tcpFlow is a fully populated IPv4 TCP entry as the kernel sends it.
func tcpFlow(seq, pid uint32) []byte {
	return nlmsg(ctNew, unix.NLM_F_MULTI, seq, pid, unix.AF_INET, 0,
		nest(ctaTupleOrig, tuple4("10.0.0.1", "10.0.0.2", 6, 1000, 80)),
		nest(ctaTupleReply, tuple4("10.0.0.2", "10.0.0.1", 6, 80, 1000)),
		attr(ctaStatus, be32(uint32(conntrack.StatusSeenReply|conntrack.StatusAssured|conntrack.StatusConfirmed))),
		attr(ctaTimeout, be32(431999)),
		attr(ctaMark, be32(42)),
		nest(ctaProtoinfo, nest(ctaProtoinfoTCP, attr(ctaProtoinfoState, []byte{3}), attr(2, []byte{7}), attr(4, []byte{0, 0}))),
		nest(ctaCountersOrig, attr(ctaCountersPackets, be64(5)), attr(ctaCountersBytes, be64(300))),
		nest(ctaCountersReply, attr(ctaCountersPackets, be64(4)), attr(ctaCountersBytes, be64(1<<40))),
		attr(ctaUse, be32(1)),
		attr(ctaID, be32(0xdeadbeef)),
		attr(ctaZone, be16(7)),
		nest(ctaTimestamp, attr(ctaTimestampStart, be64(1_000_000_123_000_000_000))),
		nest(ctaSecctx, attr(ctaSecctxName, []byte("system_u:object_r:unlabeled_t:s0\x00"))),
		attr(ctaLabels, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}),
		attr(99, []byte("future attribute")),
	)
}

func TestDecodeTCPFlow(t *testing.T) {
	d := decoder{now: 1_000_000_223}
	var f conntrack.Flow
	f.HasDirZones = true // must be reset
	m := tcpFlow(1, 2)
	if err := d.flow(&f, m[nlmsgHdrLen:]); err != nil {
		t.Fatal(err)
	}
	want := "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1000 dport=80 packets=5 bytes=300 " +
		"src=10.0.0.2 dst=10.0.0.1 sport=80 dport=1000 packets=4 bytes=1099511627776 [ASSURED] mark=42 " +
		"secctx=system_u:object_r:unlabeled_t:s0 zone=7 delta-time=100 use=1\n"
	if got := string(f.AppendConntrack(nil)); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if f.Family != conntrack.IPv4 || f.ID != 0xdeadbeef || f.Labels[0] != 1 || f.Labels[15] != 0x80 || f.HasDirZones {
		t.Errorf("flow %+v", f)
	}
}

func TestDecodeIPv6AndDirectionalZones(t *testing.T) {
	s, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	ip6 := func(a, b netip.Addr) []byte {
		x, y := a.As16(), b.As16()
		return nest(ctaTupleIP, attr(ctaIPv6Src, x[:]), attr(ctaIPv6Dst, y[:]))
	}
	icmp6 := func(typ uint8) []byte {
		return nest(ctaTupleProto, attr(ctaProtoNum, []byte{58}), attr(ctaProtoICMPv6ID, be16(7)),
			attr(ctaProtoICMPv6Type, []byte{typ}), attr(ctaProtoICMPv6Code, []byte{0}))
	}
	m := nlmsg(ctNew, 0, 1, 2, unix.AF_INET6, 0,
		nest(ctaTupleOrig, ip6(s, dst), icmp6(128), attr(ctaTupleZone, be16(3))),
		nest(ctaTupleReply, ip6(dst, s), icmp6(129)),
		attr(ctaStatus, be32(uint32(conntrack.StatusConfirmed))),
		attr(ctaTimeout, be32(29)), attr(ctaMark, be32(0)), attr(ctaUse, be32(1)),
		nest(ctaCountersOrig, attr(ctaCounters32Packets, be32(1)), attr(ctaCounters32Bytes, be32(104))),
	)
	var d decoder
	var f conntrack.Flow
	if err := d.flow(&f, m[nlmsgHdrLen:]); err != nil {
		t.Fatal(err)
	}
	want := "icmpv6   58 29 src=2001:db8::1 dst=2001:db8::2 type=128 code=0 id=7 zone-orig=3 packets=1 bytes=104 [UNREPLIED] " +
		"src=2001:db8::2 dst=2001:db8::1 type=129 code=0 id=7 packets=0 bytes=0 mark=0 use=1\n"
	if got := string(f.AppendConntrack(nil)); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if f.Family != conntrack.IPv6 || !f.HasDirZones || f.ZoneOrig != 3 || f.ZoneReply != 0 {
		t.Errorf("flow %+v", f)
	}
}

func TestDecodeZeroAllocs(t *testing.T) {
	m := tcpFlow(1, 2)[nlmsgHdrLen:]
	var d decoder
	var f conntrack.Flow
	if err := d.flow(&f, m); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := d.flow(&f, m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per flow, want 0", allocs)
	}
	// A datagram of many flows through the dump path.
	var dg []byte
	for range 100 {
		dg = append(dg, tcpFlow(5, 6)...)
	}
	s := dumpState{seq: 5, pid: 6, dec: &d, fn: func(*conntrack.Flow) error { return nil }}
	allocs = testing.AllocsPerRun(100, func() { s.datagram(dg) })
	if allocs != 0 || s.decErr != nil {
		t.Errorf("%v allocations per datagram (err %v), want 0", allocs, s.decErr)
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := tcpFlow(1, 2)[nlmsgHdrLen:]
	cases := map[string][]byte{
		"short nfgenmsg":     {2, 0},
		"short attr header":  append(append([]byte{}, good[:4]...), 8, 0),
		"attr len too small": append(append([]byte{}, good[:4]...), 2, 0, 1, 0),
		"attr len too big":   append(append([]byte{}, good[:4]...), 200, 0, 3, 0, 0, 0, 0, 0),
		"status 2 bytes":     nlmsg(ctNew, 0, 1, 2, 2, 0, attr(ctaStatus, be16(1)))[nlmsgHdrLen:],
		"v4 addr 5 bytes":    nlmsg(ctNew, 0, 1, 2, 2, 0, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, []byte{1, 2, 3, 4, 5}))))[nlmsgHdrLen:],
		"v6 addr 4 bytes":    nlmsg(ctNew, 0, 1, 2, 10, 0, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv6Dst, []byte{1, 2, 3, 4}))))[nlmsgHdrLen:],
		"port 4 bytes":       nlmsg(ctNew, 0, 1, 2, 2, 0, nest(ctaTupleReply, nest(ctaTupleProto, attr(ctaProtoSrcPort, be32(1)))))[nlmsgHdrLen:],
		"counter 4 bytes":    nlmsg(ctNew, 0, 1, 2, 2, 0, nest(ctaCountersOrig, attr(ctaCountersBytes, be32(1))))[nlmsgHdrLen:],
		"state 2 bytes":      nlmsg(ctNew, 0, 1, 2, 2, 0, nest(ctaProtoinfo, nest(ctaProtoinfoSCTP, attr(ctaProtoinfoState, be16(1)))))[nlmsgHdrLen:],
		"labels 17 bytes":    nlmsg(ctNew, 0, 1, 2, 2, 0, attr(ctaLabels, make([]byte, 17)))[nlmsgHdrLen:],
		"timestamp 7 bytes":  nlmsg(ctNew, 0, 1, 2, 2, 0, nest(ctaTimestamp, attr(ctaTimestampStart, make([]byte, 7))))[nlmsgHdrLen:],
		"bad attr in secctx": nlmsg(ctNew, 0, 1, 2, 2, 0, nest(ctaSecctx, []byte{9, 0, 1, 0}))[nlmsgHdrLen:],
	}
	var d decoder
	var f conntrack.Flow
	for name, b := range cases {
		if err := d.flow(&f, b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want malformed", name, err)
		}
	}
	// Every truncation of a valid message must fail cleanly or succeed, never panic.
	for i := range good {
		_ = d.flow(&f, good[:i])
	}
}

func TestDumpStateControl(t *testing.T) {
	var d decoder
	n := 0
	s := dumpState{seq: 7, pid: 9, dec: &d, fn: func(*conntrack.Flow) error { n++; return nil }}
	dg := concat(
		tcpFlow(6, 9),  // an earlier request: ignored
		tcpFlow(7, 10), // another port: ignored
		tcpFlow(7, 9),  // counted
		nlmsg(ctNew|ipctnlMsgCtGetStats, 0, 7, 9, 2, 0), // not an entry: ignored
		tcpFlow(7, 9), // counted
	)
	binary.NativeEndian.PutUint16(dg[len(dg)-len(tcpFlow(7, 9))+6:], unix.NLM_F_MULTI|nlmFDumpIntr)
	s.datagram(dg)
	if n != 2 || s.ended || !s.intr || s.decErr != nil {
		t.Fatalf("n=%d ended=%v intr=%v err=%v", n, s.ended, s.intr, s.decErr)
	}
	s.datagram(concat(ctrlmsg(unix.NLMSG_DONE, 6, 9, 0), ctrlmsg(unix.NLMSG_DONE, 7, 9, 0), tcpFlow(7, 9)))
	if n != 2 || !s.ended || s.decErr != nil {
		t.Fatalf("after DONE: n=%d ended=%v err=%v", n, s.ended, s.decErr)
	}

	for _, tc := range []struct {
		msg  []byte
		want error
		text string
	}{
		{ctrlmsg(unix.NLMSG_ERROR, 7, 9, -int32(unix.EPERM)), ErrPermission, "CAP_NET_ADMIN"},
		{ctrlmsg(unix.NLMSG_ERROR, 7, 9, -int32(unix.EOPNOTSUPP)), ErrUnsupported, "nf_conntrack_netlink"},
		{ctrlmsg(unix.NLMSG_DONE, 7, 9, -int32(unix.ENOBUFS)), unix.ENOBUFS, "ENOBUFS"},
		{ctrlmsg(unix.NLMSG_DONE, 7, 9, -int32(unix.EINTR)), unix.EINTR, "interrupted"},
		{append(tcpFlow(7, 9)[:40:40], 0, 0, 0, 0), errMalformed, "malformed"},
	} {
		s := dumpState{seq: 7, pid: 9, dec: &d, fn: func(*conntrack.Flow) error { return nil }}
		s.datagram(tc.msg)
		if !errors.Is(s.decErr, tc.want) || !strings.Contains(s.decErr.Error(), tc.text) || !s.ended {
			t.Errorf("got %v (ended %v), want %v mentioning %q", s.decErr, s.ended, tc.want, tc.text)
		}
	}

	// A callback error stops delivery but reading goes on to DONE.
	stop := errors.New("stop")
	n = 0
	s = dumpState{seq: 7, pid: 9, dec: &d, fn: func(*conntrack.Flow) error { n++; return stop }}
	s.datagram(concat(tcpFlow(7, 9), tcpFlow(7, 9)))
	if n != 1 || s.fnErr != stop || s.ended {
		t.Fatalf("n=%d fnErr=%v ended=%v", n, s.fnErr, s.ended)
	}
	s.datagram(ctrlmsg(unix.NLMSG_DONE, 7, 9, 0))
	if !s.ended {
		t.Fatal("DONE not seen after a callback error")
	}
}

func TestDecodeStats(t *testing.T) {
	m := nlmsg(nfnlSubsysCTNetlink<<8|ipctnlMsgCtGetStatsCPU, unix.NLM_F_MULTI, 1, 2, 0, 3,
		attr(2, be32(11)), attr(4, be32(12)), attr(8, be32(13)), attr(9, be32(14)), attr(10, be32(15)),
		attr(11, be32(16)), attr(12, be32(17)), attr(13, be32(18)), attr(14, be32(19)), attr(15, be32(20)),
		attr(16, be32(99)), // a counter from a newer kernel
	)
	var s conntrack.Stats
	cpu, err := statsCPU(&s, m[nlmsgHdrLen:])
	if err != nil || cpu != 3 {
		t.Fatalf("cpu %d, %v", cpu, err)
	}
	for i, f := range []conntrack.StatField{conntrack.StatFound, conntrack.StatInvalid, conntrack.StatInsert,
		conntrack.StatInsertFailed, conntrack.StatDrop, conntrack.StatEarlyDrop, conntrack.StatError,
		conntrack.StatSearchRestart, conntrack.StatClashResolve, conntrack.StatChainTooLong} {
		if v, ok := s.Get(f); !ok || v != uint64(11+i) {
			t.Errorf("%s = %d, %v", f, v, ok)
		}
	}
	if s.Has(conntrack.StatSearched) || s.Has(conntrack.StatEntries) {
		t.Errorf("unexpected Present bits %b", s.Present)
	}
	if _, err := statsCPU(&s, nlmsg(0, 0, 0, 0, 0, 0, attr(2, be16(1)))[nlmsgHdrLen:]); !errors.Is(err, errMalformed) {
		t.Errorf("16-bit counter: %v", err)
	}

	g := nlmsg(nfnlSubsysCTNetlink<<8|ipctnlMsgCtGetStats, 0, 1, 2, 0, 0,
		attr(ctaStatsGlobalEntries, be32(1234)), attr(ctaStatsGlobalMaxEntries, be32(262144)))
	n, max, hn, hm, err := statsGlobal(g[nlmsgHdrLen:])
	if err != nil || n != 1234 || max != 262144 || !hn || !hm {
		t.Errorf("global: %d %d %v %v %v", n, max, hn, hm, err)
	}
}

func TestErrnoError(t *testing.T) {
	for _, tc := range []struct {
		errno unix.Errno
		want  error
	}{
		{unix.EPERM, ErrPermission}, {unix.EACCES, ErrPermission},
		{unix.EPROTONOSUPPORT, ErrUnsupported}, {unix.EINVAL, ErrUnsupported},
		{unix.EAGAIN, ErrTimeout}, {unix.ENOBUFS, unix.ENOBUFS}, {unix.EBUSY, unix.EBUSY},
	} {
		err := errnoError("op", tc.errno)
		if !errors.Is(err, tc.want) || !errors.Is(err, tc.errno) || !strings.HasPrefix(err.Error(), "ctnetlink: op: ") {
			t.Errorf("%v: %v", tc.errno, err)
		}
	}
}

func TestSecctxShared(t *testing.T) {
	m := tcpFlow(1, 2)[nlmsgHdrLen:]
	var d decoder
	var f1, f2 conntrack.Flow
	if d.flow(&f1, m) != nil || d.flow(&f2, m) != nil {
		t.Fatal("decode failed")
	}
	if f1.SecCtx != "system_u:object_r:unlabeled_t:s0" || f1.SecCtx != f2.SecCtx {
		t.Errorf("secctx %q %q", f1.SecCtx, f2.SecCtx)
	}
}
