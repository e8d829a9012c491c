package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"golang.org/x/sys/unix"
)

var (
	wtS4 = netip.MustParseAddr("192.0.2.1")
	wtD4 = netip.MustParseAddr("198.51.100.2")
	wtS6 = netip.MustParseAddr("2001:db8::1")
	wtD6 = netip.MustParseAddr("2001:db8::2")
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refChecksumOK verifies an Internet checksum the plainest way: the
// one's-complement sum of the 16-bit words, pseudo-header included, is
// 0xffff. It shares no code with wire.go.
func refChecksumOK(pseudo, data []byte) bool {
	buf := append(append([]byte{}, pseudo...), data...)
	if len(buf)%2 == 1 {
		buf = append(buf, 0)
	}
	var s uint32
	for i := 0; i < len(buf); i += 2 {
		s += uint32(buf[i])<<8 | uint32(buf[i+1])
		s = s&0xffff + s>>16
	}
	return s == 0xffff
}

// refVerify checks every checksum of a raw packet AppendIP built (no
// options, no extension headers) with refChecksumOK.
func refVerify(t *testing.T, b []byte) {
	t.Helper()
	var pseudo, l4 []byte
	var proto byte
	if b[0]>>4 == 4 {
		if !refChecksumOK(nil, b[:20]) {
			t.Errorf("IPv4 header checksum wrong: % x", b[:20])
		}
		proto, l4 = b[9], b[20:]
		pseudo = append(append([]byte{}, b[12:20]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
		if proto == 1 {
			pseudo = nil
		}
	} else {
		proto, l4 = b[6], b[40:]
		pseudo = append(append([]byte{}, b[8:40]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
	}
	v6 := b[0]>>4 == 6
	switch {
	case proto == 6, proto == 17, proto == 136, proto == 33, proto == 1 && !v6, proto == 58 && v6:
		if !refChecksumOK(pseudo, l4) {
			t.Errorf("IPv%d protocol %d checksum wrong: % x", b[0]>>4, proto, l4[:min(len(l4), 64)])
		}
	}
}

// TestAppendIPGolden compares AppendIP with bytes computed independently
// (a plain Python struct/checksum script, not this code), then decodes them.
func TestAppendIPGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Packet
		hex  string
	}{
		{"tcp4 syn", Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: wtS4, Dst: wtD4,
			SrcPort: 40000, DstPort: 80, Flags: SYN, Seq: 1000, Window: 64240},
			"45000028 00004000 40064e99 c0000201 c6336402  9c400050 000003e8 00000000 5002faf0 28420000"},
		{"tcp4 data", Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: wtS4, Dst: wtD4,
			SrcPort: 40000, DstPort: 80, Flags: PSH | ACK, Seq: 1001, Ack: 2002, Window: 502, PayloadLen: 5},
			"4500002d 00004000 40064e94 c0000201 c6336402  9c400050 000003e9 000007d2 501801f6 194f0000 0000000000"},
		{"udp4", Packet{Family: conntrack.IPv4, Proto: conntrack.UDP, Src: wtS4, Dst: wtD4,
			SrcPort: 5353, DstPort: 53, PayloadLen: 3},
			"4500001f 00004000 40114e97 c0000201 c6336402  14e90035 000bfe82 000000"},
		{"echo4", Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4,
			ICMPType: 8, ICMPID: 0x1234},
			"4500001c 00004000 40014eaa c0000201 c6336402  0800e5cb 12340000"},
		{"port unreachable4", Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4,
			ICMPType: 3, ICMPCode: 3, PayloadLen: 28, HasEmbedded: true,
			Embedded: Embedded{Proto: conntrack.UDP, Src: wtD4, Dst: wtS4, SrcPort: 53, DstPort: 5353}},
			"45000038 00004000 40014e8e c0000201 c6336402  0303e94d 00000000" +
				"4500001c 00004000 40114e9a c6336402 c0000201  003514e9 0008fe88"},
		{"tcp6 ack", Packet{Family: conntrack.IPv6, Proto: conntrack.TCP, Src: wtS6, Dst: wtD6,
			SrcPort: 40000, DstPort: 443, Flags: ACK, Seq: 7, Ack: 9, Window: 100},
			"60000000 00140640 20010db8000000000000000000000001 20010db8000000000000000000000002" +
				"9c4001bb 00000007 00000009 50100064 b5f00000"},
		{"udp6", Packet{Family: conntrack.IPv6, Proto: conntrack.UDP, Src: wtS6, Dst: wtD6,
			SrcPort: 1000, DstPort: 2000},
			"60000000 00081140 20010db8000000000000000000000001 20010db8000000000000000000000002 03e807d0 000898b1"},
		{"echo6", Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6,
			ICMPType: 128, ICMPID: 7},
			"60000000 00083a40 20010db8000000000000000000000001 20010db8000000000000000000000002 80002441 00070000"},
		{"unreachable6", Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6,
			ICMPType: 1, ICMPCode: 4, PayloadLen: 48, HasEmbedded: true,
			Embedded: Embedded{Proto: conntrack.TCP, Src: wtD6, Dst: wtS6, SrcPort: 443, DstPort: 40000}},
			"60000000 00383a40 20010db8000000000000000000000001 20010db8000000000000000000000002 0104434f 00000000" +
				"60000000 00140640 20010db8000000000000000000000002 20010db8000000000000000000000001 01bb9c40 00000000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := mustHex(t, c.hex)
			got, err := AppendIP([]byte{0xee}, &c.p)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != 0xee {
				t.Fatal("AppendIP overwrote the buffer's prefix")
			}
			got = got[1:]
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendIP:\n got % x\nwant % x", got, want)
			}
			refVerify(t, got)
			var p Packet
			if err := DecodeIP(want, &p); err != nil {
				t.Fatal(err)
			}
			if p != c.p {
				t.Fatalf("DecodeIP:\n got %+v\nwant %+v", p, c.p)
			}
		})
	}
}

// TestAppendIPChecksums checks every protocol's checksum with the
// independent verifier, over odd and even payload lengths.
func TestAppendIPChecksums(t *testing.T) {
	for _, fam := range []conntrack.Family{conntrack.IPv4, conntrack.IPv6} {
		s, d := wtS4, wtD4
		if fam == conntrack.IPv6 {
			s, d = wtS6, wtD6
		}
		for _, proto := range []conntrack.Proto{conntrack.TCP, conntrack.UDP, conntrack.UDPLite,
			conntrack.DCCP, conntrack.ICMP, conntrack.ICMPv6, conntrack.GRE} {
			for _, n := range []int{0, 1, 2, 7, 1000, 1001} {
				p := Packet{Family: fam, Proto: proto, Src: s, Dst: d, SrcPort: 0xfff0, DstPort: 0xffee,
					Seq: 0xffffffff, Ack: 0xfffefffe, Flags: SYN | ACK, Window: 0xffff,
					ICMPType: 8, ICMPID: 0xffff, PayloadLen: n}
				if fam == conntrack.IPv6 {
					p.ICMPType = 128
				}
				b, err := AppendIP(nil, &p)
				if err != nil {
					t.Fatal(err)
				}
				refVerify(t, b)
				var q Packet
				if err := DecodeIP(b, &q); err != nil {
					t.Fatalf("%v %v %d: %v", fam, proto, n, err)
				}
				if q.PayloadLen != n || q.Proto != proto {
					t.Errorf("%v %v: PayloadLen %d proto %v, want %d %v", fam, proto, q.PayloadLen, q.Proto, n, proto)
				}
			}
		}
	}
}

// TestAppendIPSCTPChecksum checks the CRC32c against the RFC 4960 / iSCSI
// test vector style: a known SCTP common header.
func TestAppendIPSCTPChecksum(t *testing.T) {
	p := Packet{Family: conntrack.IPv4, Proto: conntrack.SCTP, Src: wtS4, Dst: wtD4, SrcPort: 1, DstPort: 2}
	b, err := AppendIP(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	sctp := b[20:]
	// CRC32c (Castagnoli) computed bit by bit, independently of hash/crc32.
	got := binary.LittleEndian.Uint32(sctp[8:])
	buf := append([]byte{}, sctp...)
	copy(buf[8:], []byte{0, 0, 0, 0})
	crc := ^uint32(0)
	for _, c := range buf {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x82f63b78
			} else {
				crc >>= 1
			}
		}
	}
	if want := ^crc; got != want {
		t.Fatalf("SCTP checksum %08x, want %08x", got, want)
	}
}

func TestAppendIPErrors(t *testing.T) {
	for _, c := range []struct {
		p    Packet
		want string
	}{
		{Packet{Family: conntrack.IPv4, Src: wtS6, Dst: wtD4}, "IPv4 packet needs IPv4 addresses"},
		{Packet{Family: conntrack.IPv6, Src: wtS6, Dst: netip.Addr{}}, "IPv6 packet needs IPv6 addresses"},
		{Packet{Family: 7, Src: wtS4, Dst: wtD4}, "unknown address family 7"},
		{Packet{Family: conntrack.IPv4, Src: wtS4, Dst: wtD4, PayloadLen: -1}, "negative PayloadLen"},
		{Packet{Family: conntrack.IPv4, Src: wtS4, Dst: wtD4, PayloadLen: 65516}, "packet too long: 65536 bytes"},
		{Packet{Family: conntrack.IPv4, Src: wtS4, Dst: wtD4, PayloadLen: 1 << 20}, "does not fit"},
		{Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4, ICMPType: 3,
			HasEmbedded: true, Embedded: Embedded{Proto: conntrack.UDP, Src: wtS6, Dst: wtD6}},
			"quoted packet: AppendIP: an IPv4 packet needs IPv4 addresses"},
	} {
		b, err := AppendIP([]byte{1, 2}, &c.p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AppendIP(%+v): error %v, want %q", c.p, err, c.want)
		}
		if len(b) != 2 {
			t.Errorf("AppendIP(%+v) failed but returned %d bytes, want the 2 it was given", c.p, len(b))
		}
	}
	// The largest IPv4 and IPv6 packets fit.
	if _, err := AppendIP(nil, &Packet{Family: conntrack.IPv4, Src: wtS4, Dst: wtD4, PayloadLen: 65515}); err != nil {
		t.Error(err)
	}
	if _, err := AppendIP(nil, &Packet{Family: conntrack.IPv6, Src: wtS6, Dst: wtD6, PayloadLen: 65535}); err != nil {
		t.Error(err)
	}
}

// wtBuild is AppendIP that fails the test on error.
func wtBuild(t testing.TB, p Packet) []byte {
	t.Helper()
	b, err := AppendIP(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wtFixLen rewrites an IPv4 total length / IPv6 payload length and the
// IPv4 header checksum after a test edited a packet.
func wtFixLen(b []byte) []byte {
	if b[0]>>4 == 4 {
		ihl := int(b[0]&15) * 4
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], wireChecksum(0, b[:ihl]))
	} else {
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	}
	return b
}

// wtInsert inserts ext at offset at.
func wtInsert(b []byte, at int, ext ...byte) []byte {
	return append(append(append([]byte{}, b[:at]...), ext...), b[at:]...)
}

func TestDecodeIPCases(t *testing.T) {
	tcp4 := Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: wtS4, Dst: wtD4,
		SrcPort: 1, DstPort: 2, Flags: ACK, Seq: 3, Ack: 4, Window: 5, PayloadLen: 100}
	tcp6 := tcp4
	tcp6.Family, tcp6.Src, tcp6.Dst = conntrack.IPv6, wtS6, wtD6
	udp6 := Packet{Family: conntrack.IPv6, Proto: conntrack.UDP, Src: wtS6, Dst: wtD6, SrcPort: 9, DstPort: 10, PayloadLen: 4}

	// IPv4 with 8 bytes of options (IHL 7).
	v4opts := func() []byte {
		b := wtBuild(t, tcp4)
		b = wtInsert(b, 20, 1, 1, 1, 1, 1, 1, 1, 0) // NOPs, EOL
		b[0] = 0x47
		return wtFixLen(b)
	}()
	// TCP with 12 bytes of options (data offset 8).
	tcpopts := func() []byte {
		b := wtBuild(t, tcp4)
		b = wtInsert(b, 40, 2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7)
		b[32] = 8 << 4
		return wtFixLen(b)
	}()
	// IPv6: hop-by-hop (8), destination options (16), routing (8), first fragment (8).
	v6ext := func() []byte {
		b := wtBuild(t, tcp6)
		b[6] = 0 // hop-by-hop
		ext := []byte{
			60, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop -> dest opts, PadN
			43, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // dest opts (16) -> routing
			44, 0, 0, 0, 0, 0, 0, 0, // routing (type 0, segments left 0) -> fragment
			6, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, // fragment offset 0, M=1 -> TCP
		}
		return wtFixLen(wtInsert(b, 40, ext...))
	}()
	v6ah := func() []byte {
		b := wtBuild(t, udp6)
		b[6] = 51
		ext := []byte{17, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12} // AH: (4+2)*4 = 24 bytes
		return wtFixLen(wtInsert(b, 40, ext...))
	}()
	frag4 := func() []byte {
		b := wtBuild(t, tcp4)
		b[6], b[7] = 0x20, 0x10 // MF, offset 16 units = 128 bytes
		return wtFixLen(b)
	}()
	firstFrag4 := func() []byte {
		b := wtBuild(t, tcp4)
		b[6], b[7] = 0x20, 0 // MF, offset 0
		return wtFixLen(b)
	}()
	frag6 := func() []byte {
		b := wtBuild(t, tcp6)
		b[6] = 44
		return wtFixLen(wtInsert(b, 40, 6, 0, 0x05, 0x01, 0, 0, 0, 1)) // offset 160, M=1
	}()
	// Snap length: only the headers of a 100-byte-payload segment captured.
	snap4 := wtBuild(t, tcp4)[:40]
	snap6 := wtBuild(t, tcp6)[:60]
	// Ethernet minimum-frame padding after the IP packet is ignored.
	padded := append(wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.UDP, Src: wtS4, Dst: wtD4,
		SrcPort: 1, DstPort: 2}), 0, 0, 0, 0, 0, 0)
	// IPv4 total length 0 (BIG TCP super-packet): the captured length counts.
	big4 := func() []byte {
		b := wtBuild(t, tcp4)
		b[2], b[3] = 0, 0
		return b
	}()
	jumbo6 := func() []byte {
		b := wtBuild(t, tcp6)
		b[4], b[5] = 0, 0
		return b
	}()
	// ICMP time exceeded quoting an echo request; ICMPv6 too-big quoting
	// a UDP packet behind a destination options header.
	echoQuote := Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtD4, Dst: netip.MustParseAddr("203.0.113.9"),
		ICMPType: 8, ICMPID: 77}
	timeExceeded := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4, ICMPType: 11})
		return wtFixLen(append(b, wtBuild(t, echoQuote)...))
	}()
	tooBig := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6, ICMPType: 2})
		in := wtBuild(t, udp6)
		in[6] = 60
		in = wtFixLen(wtInsert(in, 40, 17, 0, 1, 4, 0, 0, 0, 0))
		return wtFixLen(append(b, in...))
	}()
	quoteFrag := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4, ICMPType: 3})
		return wtFixLen(append(b, frag4[:28]...))
	}()
	quoteV6in4 := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4, ICMPType: 3})
		return wtFixLen(append(b, wtBuild(t, udp6)...))
	}()
	quoteShort := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4, ICMPType: 3})
		return wtFixLen(append(b, wtBuild(t, tcp4)[:22]...))
	}()
	// ICMPv6 node information query (139) has an ID-like field; router
	// solicitation (133) has none.
	nodeInfo := wtBuild(t, Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6, ICMPType: 139, ICMPID: 3})
	routerSol := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6, ICMPType: 133})
		b[44], b[45] = 9, 9 // reserved bytes: not an ID
		return b
	}()
	// Protocol 58 in IPv4 is not ICMPv6 to the decoder: a generic payload.
	v6in4 := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.ICMPv6, Src: wtS4, Dst: wtD4, PayloadLen: 8})
	badVersion := wtBuild(t, tcp4)
	badVersion[0] = 0x55
	dccpBad := func() []byte {
		b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.DCCP, Src: wtS4, Dst: wtD4})
		b[24] = 2
		return b
	}()

	withEmb := func(p Packet, e Embedded, n int) Packet {
		p.HasEmbedded, p.Embedded, p.PayloadLen = true, e, n
		return p
	}
	for _, c := range []struct {
		name string
		b    []byte
		want Packet
		err  string
		is   error
	}{
		{name: "ipv4 options", b: v4opts, want: tcp4},
		{name: "tcp options", b: tcpopts, want: func() Packet { p := tcp4; p.PayloadLen = 100; return p }()},
		{name: "ipv6 extension headers", b: v6ext, want: tcp6},
		{name: "ipv6 authentication header", b: v6ah, want: udp6},
		{name: "ipv4 first fragment", b: firstFrag4, want: tcp4},
		{name: "ipv4 later fragment", b: frag4, err: "IPv4 non-first fragment: offset 128 bytes", is: ErrFragment},
		{name: "ipv6 later fragment", b: frag6, err: "IPv6 non-first fragment: offset 1280 bytes", is: ErrFragment},
		{name: "ipv4 snaplen", b: snap4, want: tcp4},
		{name: "ipv6 snaplen", b: snap6, want: tcp6},
		{name: "ethernet padding", b: padded, want: Packet{Family: conntrack.IPv4, Proto: conntrack.UDP,
			Src: wtS4, Dst: wtD4, SrcPort: 1, DstPort: 2}},
		{name: "ipv4 length 0", b: big4, want: tcp4},
		{name: "ipv6 length 0", b: jumbo6, want: tcp6},
		{name: "icmp quoting icmp", b: timeExceeded, want: withEmb(Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP,
			Src: wtS4, Dst: wtD4, ICMPType: 11}, Embedded{Proto: conntrack.ICMP, Src: echoQuote.Src, Dst: echoQuote.Dst,
			ICMPType: 8, ICMPID: 77}, 28)},
		{name: "icmpv6 quoting udp behind options", b: tooBig, want: withEmb(Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6,
			Src: wtS6, Dst: wtD6, ICMPType: 2}, Embedded{Proto: conntrack.UDP, Src: wtS6, Dst: wtD6, SrcPort: 9, DstPort: 10}, 60)},
		{name: "icmp quoting a fragment", b: quoteFrag, err: "ICMP error quote: IPv4 non-first fragment: offset 128 bytes", is: ErrFragment},
		{name: "icmp quoting ipv6", b: quoteV6in4, err: "bad ICMP error: quotes an IP version 6 header"},
		{name: "icmp quoting 2 tcp bytes", b: quoteShort, err: "ICMP error quote: truncated TCP header: 2 of 4 bytes", is: ErrTruncated},
		{name: "node information", b: nodeInfo, want: Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6,
			ICMPType: 139, ICMPID: 3}},
		{name: "router solicitation", b: routerSol, want: Packet{Family: conntrack.IPv6, Proto: conntrack.ICMPv6, Src: wtS6, Dst: wtD6,
			ICMPType: 133}},
		{name: "proto 58 in ipv4", b: v6in4, want: Packet{Family: conntrack.IPv4, Proto: conntrack.ICMPv6, Src: wtS4, Dst: wtD4,
			PayloadLen: 8}},
		{name: "empty", b: nil, err: "truncated IP header: 0 of 20 bytes", is: ErrTruncated},
		{name: "short ipv4", b: wtBuild(t, tcp4)[:12], err: "truncated IPv4 header: 12 of 20 bytes", is: ErrTruncated},
		{name: "short ipv6", b: wtBuild(t, tcp6)[:39], err: "truncated IPv6 header: 39 of 40 bytes", is: ErrTruncated},
		{name: "short options", b: v4opts[:24], err: "truncated IPv4 header: 24 of 28 bytes", is: ErrTruncated},
		{name: "short tcp", b: wtBuild(t, tcp4)[:30], err: "truncated TCP header: 10 of 20 bytes", is: ErrTruncated},
		{name: "version 5", b: badVersion, err: "unsupported IP version: 5"},
		{name: "ihl 4", b: append([]byte{0x44}, make([]byte, 30)...), err: "bad IPv4 header length: 16 bytes"},
		{name: "total < ihl", b: func() []byte { b := wtBuild(t, tcp4); b[3] = 10; return b }(),
			err: "bad IPv4 total length: 10 bytes, shorter than its 20-byte header"},
		{name: "tcp offset 4", b: func() []byte { b := wtBuild(t, tcp4); b[32] = 0x40; return b }(), err: "bad TCP data offset: 16 bytes"},
		{name: "tcp offset past end", b: func() []byte {
			b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: wtS4, Dst: wtD4})
			b[32] = 0xf0
			return b
		}(), err: "bad TCP data offset: 60-byte header in a 20-byte segment"},
		{name: "dccp offset", b: dccpBad, err: "bad DCCP data offset: 8-byte header in a 16-byte packet"},
		{name: "udp length past the datagram", b: func() []byte {
			b := wtBuild(t, udp6)
			b[45] = 13
			return b
		}(), err: "bad UDP length: 13 bytes in a 12-byte datagram"},
		{name: "udp length 7", b: func() []byte {
			b := wtBuild(t, udp6)
			b[45] = 7
			return b
		}(), err: "bad UDP length: 7 bytes in a 12-byte datagram"},
		{name: "udp length short of the datagram", b: func() []byte {
			b := wtBuild(t, udp6)
			b[45] = 8
			return b
		}(), want: udp6},
		{name: "udplite coverage", b: func() []byte {
			b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.UDPLite, Src: wtS4, Dst: wtD4, PayloadLen: 2})
			b[25] = 11
			return b
		}(), err: "bad UDP-Lite checksum coverage: 11 bytes in a 10-byte datagram"},
		{name: "udplite coverage 8", b: func() []byte {
			b := wtBuild(t, Packet{Family: conntrack.IPv4, Proto: conntrack.UDPLite, Src: wtS4, Dst: wtD4, PayloadLen: 2})
			b[25] = 8
			return b
		}(), want: Packet{Family: conntrack.IPv4, Proto: conntrack.UDPLite, Src: wtS4, Dst: wtD4, PayloadLen: 2}},
		{name: "ipv6 no next header", b: func() []byte {
			b := wtBuild(t, udp6)
			b[6] = 60
			return wtFixLen(wtInsert(b, 40, 59, 0, 1, 4, 0, 0, 0, 0))
		}(), err: "IPv6 no next header: next header 59 at byte 48"},
		{name: "ipv6 extension past payload", b: func() []byte {
			b := append([]byte{}, v6ext...)
			binary.BigEndian.PutUint16(b[4:], 20)
			return b
		}(), err: "bad IPv6 extension header: header at byte 48 ends past the 20-byte payload"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p Packet
			p.Zone, p.Iface = 9, "stale" // DecodeIP resets the packet
			err := DecodeIP(c.b, &p)
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				if c.is != nil && !errors.Is(err, c.is) {
					t.Fatalf("error %v does not wrap %v", err, c.is)
				}
				var de *DecodeError
				if !errors.As(err, &de) || de.Reason == "" {
					t.Fatalf("error %v is not a *DecodeError with a reason", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p != c.want {
				t.Fatalf("\n got %+v\nwant %+v", p, c.want)
			}
		})
	}
}

// wtCorpus is one packet of every kind the codec knows, as AppendIP builds it.
func wtCorpus(t testing.TB) [][]byte {
	var out [][]byte
	add := func(p Packet) { out = append(out, wtBuild(t, p)) }
	for _, v6 := range []bool{false, true} {
		fam, s, d, icmp, echo, errType := conntrack.IPv4, wtS4, wtD4, conntrack.ICMP, uint8(8), uint8(3)
		if v6 {
			fam, s, d, icmp, echo, errType = conntrack.IPv6, wtS6, wtD6, conntrack.ICMPv6, 128, 1
		}
		add(Packet{Family: fam, Proto: conntrack.TCP, Src: s, Dst: d, SrcPort: 4000, DstPort: 80, Flags: SYN, Seq: 1, Window: 9})
		add(Packet{Family: fam, Proto: conntrack.TCP, Src: s, Dst: d, SrcPort: 4000, DstPort: 80, Flags: ACK | PSH, Seq: 2, Ack: 3, PayloadLen: 33})
		add(Packet{Family: fam, Proto: conntrack.UDP, Src: s, Dst: d, SrcPort: 53, DstPort: 5353, PayloadLen: 12})
		add(Packet{Family: fam, Proto: conntrack.UDPLite, Src: s, Dst: d, SrcPort: 1, DstPort: 2, PayloadLen: 1})
		add(Packet{Family: fam, Proto: conntrack.SCTP, Src: s, Dst: d, SrcPort: 3, DstPort: 4, PayloadLen: 16})
		add(Packet{Family: fam, Proto: conntrack.DCCP, Src: s, Dst: d, SrcPort: 5, DstPort: 6, PayloadLen: 2})
		add(Packet{Family: fam, Proto: conntrack.GRE, Src: s, Dst: d, PayloadLen: 4})
		add(Packet{Family: fam, Proto: icmp, Src: s, Dst: d, ICMPType: echo, ICMPID: 99})
		add(Packet{Family: fam, Proto: icmp, Src: s, Dst: d, ICMPType: echo + 1, ICMPID: 99, PayloadLen: 56})
		for _, e := range []Embedded{
			{Proto: conntrack.TCP, Src: d, Dst: s, SrcPort: 80, DstPort: 4000},
			{Proto: conntrack.UDP, Src: d, Dst: s, SrcPort: 5353, DstPort: 53},
			{Proto: icmp, Src: d, Dst: s, ICMPType: echo, ICMPID: 98},
			{Proto: conntrack.GRE, Src: d, Dst: s},
		} {
			add(Packet{Family: fam, Proto: icmp, Src: s, Dst: d, ICMPType: errType, HasEmbedded: true, Embedded: e})
		}
	}
	return out
}

// TestDecodeIPTruncated cuts every packet at every length: each prefix
// either decodes to the same packet (a snap-length capture that kept the
// headers) or fails with ErrTruncated; nothing panics.
func TestDecodeIPTruncated(t *testing.T) {
	for _, b := range wtCorpus(t) {
		var full Packet
		if err := DecodeIP(b, &full); err != nil {
			t.Fatalf("% x: %v", b, err)
		}
		for n := range len(b) {
			var p Packet
			err := DecodeIP(b[:n], &p)
			if err == nil {
				if p != full {
					t.Errorf("% x cut to %d bytes decodes to %+v, want %+v", b, n, p, full)
				}
				continue
			}
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("% x cut to %d bytes: %v, want an ErrTruncated", b, n, err)
			}
		}
	}
}

// TestDecodeIPNoAllocs: decoding does not allocate.
func TestDecodeIPNoAllocs(t *testing.T) {
	pkts := wtCorpus(t)
	var p Packet
	allocs := testing.AllocsPerRun(100, func() {
		for _, b := range pkts {
			if err := DecodeIP(b, &p); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeIP allocates: %v allocations per run", allocs)
	}
}

func FuzzDecodeIP(f *testing.F) {
	for _, b := range wtCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if err := DecodeIP(b, &p); err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a *DecodeError", err)
			}
			return
		}
		out, err := AppendIP(nil, &p)
		if err != nil {
			if strings.Contains(err.Error(), "too long") || strings.Contains(err.Error(), "does not fit") {
				return // a length-0 (jumbo) packet larger than 64 KiB
			}
			t.Fatalf("AppendIP(%+v): %v", p, err)
		}
		var q Packet
		if err := DecodeIP(out, &q); err != nil {
			t.Fatalf("DecodeIP(AppendIP(%+v)) = % x: %v", p, out, err)
		}
		if q != p {
			t.Fatalf("round trip:\n got %+v\nwant %+v\n  in % x\n out % x", q, p, b, out)
		}
	})
}

func BenchmarkDecodeIP(b *testing.B) {
	for _, c := range []struct {
		name string
		p    Packet
	}{
		{"tcp4", Packet{Family: conntrack.IPv4, Proto: conntrack.TCP, Src: wtS4, Dst: wtD4, SrcPort: 1, DstPort: 2, Flags: ACK, PayloadLen: 1400}},
		{"tcp6", Packet{Family: conntrack.IPv6, Proto: conntrack.TCP, Src: wtS6, Dst: wtD6, SrcPort: 1, DstPort: 2, Flags: ACK, PayloadLen: 1400}},
		{"icmp4-error", Packet{Family: conntrack.IPv4, Proto: conntrack.ICMP, Src: wtS4, Dst: wtD4, ICMPType: 3, HasEmbedded: true,
			Embedded: Embedded{Proto: conntrack.UDP, Src: wtD4, Dst: wtS4, SrcPort: 1, DstPort: 2}}},
	} {
		raw := wtBuild(b, c.p)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var p Packet
			for b.Loop() {
				if err := DecodeIP(raw, &p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// wtLo is an AF_PACKET socket on the loopback device of the namespace it
// was opened in: it injects frames (they reach the stack as received
// packets, with no checksum offload, so the kernel verifies every
// checksum) and reads what the stack sends back.
type wtLo struct {
	fd, ifindex int
}

func wtHtons(v uint16) uint16 { return v<<8 | v>>8 }

func wtOpenLo() (*wtLo, error) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(wtHtons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	l := &wtLo{fd: fd, ifindex: lo.Index}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: wtHtons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
		l.close()
		return nil, err
	}
	// Each packet on lo passes the taps twice, going out and coming in;
	// keep the incoming copy, as libpcap does.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		l.close()
		return nil, err
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *wtLo) close() { unix.Close(l.fd) }

// inject sends an IP packet as an Ethernet frame received on lo.
func (l *wtLo) inject(pkt []byte) error {
	eth := uint16(unix.ETH_P_IP)
	if pkt[0]>>4 == 6 {
		eth = unix.ETH_P_IPV6
	}
	frame := append(make([]byte, 12, 14+len(pkt)), byte(eth>>8), byte(eth))
	frame = append(frame, pkt...)
	return unix.Sendto(l.fd, frame, 0, &unix.SockaddrLinklayer{Protocol: wtHtons(eth), Ifindex: l.ifindex})
}

// await reads packets until one decodes and satisfies match, for up to 5 s.
func (l *wtLo) await(what string, match func(raw []byte, p *Packet) bool) ([]byte, Packet, error) {
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(l.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, Packet{}, err
		}
		if sll, ok := from.(*unix.SockaddrLinklayer); ok && sll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n < 14 {
			continue
		}
		raw := buf[14:n]
		var p Packet
		if DecodeIP(raw, &p) == nil && match(raw, &p) {
			return append([]byte{}, raw...), p, nil
		}
	}
	return nil, Packet{}, fmt.Errorf("no %s seen within 5 s", what)
}

// wtSNMP reads one counter of /proc/net/snmp as the calling thread's
// network namespace sees it ("Udp", "InCsumErrors"); the groups of
// /proc/net/snmp6 ("Udp6", "Icmp6") too.
func wtSNMP(group, name string) (int, error) {
	if strings.HasSuffix(group, "6") {
		b, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == group+name {
				return strconv.Atoi(f[1])
			}
		}
		return 0, fmt.Errorf("no %s%s in /proc/net/snmp6", group, name)
	}
	b, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		hdr, val := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(hdr) == 0 || hdr[0] != group+":" || len(val) != len(hdr) {
			continue
		}
		for j, h := range hdr {
			if h == name {
				return strconv.Atoi(val[j])
			}
		}
	}
	return 0, fmt.Errorf("no %s %s in /proc/net/snmp", group, name)
}

// wtAwaitCounter waits (up to 5 s) for a /proc/net/snmp counter to pass from.
func wtAwaitCounter(group, name string, from int) error {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n, err := wtSNMP(group, name); err != nil || n > from {
			return err
		}
	}
	return fmt.Errorf("%s %s did not increase", group, name)
}

// TestWireKernel checks the codec against the kernel, in a network
// namespace of its own: packets built by AppendIP are injected on lo
// without checksum offload, so the kernel verifies every checksum and
// answers only the correct ones (a corrupted copy moves the InCsumErrors
// counters instead); the answers, built by the kernel, are decoded, and
// the ICMP ones, checksums and quoted packets included, must be the bytes
// AppendIP builds from the decoded fields.
func TestWireKernel(t *testing.T) {
	ns := nstest.New(t)
	var seeds [][]byte
	err := ns.Do(func() error {
		// Packets injected on lo take the input route lookup, which calls
		// a 127.0.0.0/8 destination martian unless route_localnet is on,
		// and a local source address martian unless accept_local is on
		// (this namespace's lo only).
		for _, s := range []string{"route_localnet", "accept_local"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/lo/"+s, []byte("1"), 0); err != nil {
				return err
			}
		}
		lo, err := wtOpenLo()
		if err != nil {
			return fmt.Errorf("AF_PACKET socket on lo: %w", err)
		}
		defer lo.close()
		for _, v6 := range []bool{false, true} {
			fam, ip, icmpProto, echo, echoReply := conntrack.IPv4, netip.MustParseAddr("127.0.0.1"), conntrack.ICMP, uint8(8), uint8(0)
			network, snmpTCP, snmpUDP, snmpICMP := "4", "Tcp", "Udp", "Icmp"
			if v6 {
				fam, ip, icmpProto, echo, echoReply = conntrack.IPv6, netip.MustParseAddr("::1"), conntrack.ICMPv6, 128, 129
				network, snmpUDP, snmpICMP = "6", "Udp6", "Icmp6"
			}
			name := func(s string) string { return s + " IPv" + network }

			// TCP: a SYN to a listener is answered with a SYN-ACK.
			ln, err := net.Listen("tcp"+network, net.JoinHostPort(ip.String(), "0"))
			if err != nil {
				return err
			}
			defer ln.Close()
			lport := uint16(ln.Addr().(*net.TCPAddr).Port)
			syn := Packet{Family: fam, Proto: conntrack.TCP, Src: ip, Dst: ip, SrcPort: 41000, DstPort: lport,
				Flags: SYN, Seq: 0x01020304, Window: 8192}
			raw, _ := AppendIP(nil, &syn)
			before, err := wtSNMP(snmpTCP, "InCsumErrors")
			if err != nil {
				return err
			}
			bad := append([]byte{}, raw...)
			bad[len(bad)-3] ^= 0x40 // the window: the checksum no longer matches
			if err := lo.inject(bad); err != nil {
				return err
			}
			if err := wtAwaitCounter(snmpTCP, "InCsumErrors", before); err != nil {
				return fmt.Errorf("%s: the kernel did not reject a TCP segment with a bad checksum: %w", name("tcp"), err)
			}
			if err := lo.inject(raw); err != nil {
				return err
			}
			seeds = append(seeds, raw)
			sa, p, err := lo.await(name("SYN-ACK"), func(_ []byte, p *Packet) bool {
				return p.Proto == conntrack.TCP && p.SrcPort == lport && p.DstPort == 41000
			})
			if err != nil {
				return fmt.Errorf("%s: %w (AppendIP's SYN: % x)", name("tcp"), err, raw)
			}
			seeds = append(seeds, sa)
			if p.Flags&(SYN|ACK|RST) != SYN|ACK || p.Ack != syn.Seq+1 || p.Src != ip || p.Dst != ip || p.Family != fam || p.PayloadLen != 0 {
				return fmt.Errorf("%s: the kernel's answer decodes as %+v, want a SYN-ACK acking %d", name("tcp"), p, syn.Seq+1)
			}

			// UDP: a datagram reaches a bound socket.
			uc, err := net.ListenPacket("udp"+network, net.JoinHostPort(ip.String(), "0"))
			if err != nil {
				return err
			}
			defer uc.Close()
			uport := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
			for _, n := range []int{0, 5} {
				dg := Packet{Family: fam, Proto: conntrack.UDP, Src: ip, Dst: ip, SrcPort: 41001, DstPort: uport, PayloadLen: n}
				raw, _ := AppendIP(nil, &dg)
				before, err := wtSNMP(snmpUDP, "InCsumErrors")
				if err != nil {
					return err
				}
				bad := append([]byte{}, raw...)
				bad[len(bad)-n-1] ^= 1
				if err := lo.inject(bad); err != nil {
					return err
				}
				if err := wtAwaitCounter(snmpUDP, "InCsumErrors", before); err != nil {
					return fmt.Errorf("%s: the kernel did not reject a datagram with a bad checksum: %w", name("udp"), err)
				}
				if err := lo.inject(raw); err != nil {
					return err
				}
				seeds = append(seeds, raw)
				_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, 100)
				m, from, err := uc.ReadFrom(got)
				if err != nil {
					return fmt.Errorf("%s: AppendIP's datagram % x was not delivered: %w", name("udp"), raw, err)
				}
				if m != n || from.(*net.UDPAddr).Port != 41001 {
					return fmt.Errorf("%s: received %d bytes from %v, want %d from port 41001", name("udp"), m, from, n)
				}
			}

			// ICMP echo: the kernel's reply is the bytes AppendIP builds.
			req := Packet{Family: fam, Proto: icmpProto, Src: ip, Dst: ip, ICMPType: echo, ICMPID: 0x4242}
			raw, _ = AppendIP(nil, &req)
			before, err = wtSNMP(snmpICMP, "InCsumErrors")
			if err != nil {
				return err
			}
			bad = append([]byte{}, raw...)
			bad[len(bad)-1] ^= 1
			if err := lo.inject(bad); err != nil {
				return err
			}
			if err := wtAwaitCounter(snmpICMP, "InCsumErrors", before); err != nil {
				return fmt.Errorf("%s: the kernel did not reject an echo request with a bad checksum: %w", name("icmp"), err)
			}
			if err := lo.inject(raw); err != nil {
				return err
			}
			seeds = append(seeds, raw)
			hl := 20
			if v6 {
				hl = 40
			}
			rep, p, err := lo.await(name("echo reply"), func(_ []byte, p *Packet) bool {
				return p.Proto == icmpProto && p.ICMPType == echoReply && p.ICMPID == 0x4242
			})
			if err != nil {
				return fmt.Errorf("%s: %w (AppendIP's request: % x)", name("icmp"), err, raw)
			}
			seeds = append(seeds, rep)
			if mine, err := AppendIP(nil, &p); err != nil || !bytes.Equal(mine[hl:], rep[hl:]) {
				return fmt.Errorf("%s: kernel's echo reply ICMP part % x, AppendIP of its decoding % x (%v)", name("icmp"), rep[hl:], mine[hl:], err)
			}

			// A datagram to a closed port: the kernel's port unreachable
			// quotes it, and equals AppendIP of its decoding from the
			// ICMP header on (the outer IP header has the kernel's ID and TOS).
			dg := Packet{Family: fam, Proto: conntrack.UDP, Src: ip, Dst: ip, SrcPort: 41002, DstPort: 9}
			raw, _ = AppendIP(nil, &dg)
			if err := lo.inject(raw); err != nil {
				return err
			}
			seeds = append(seeds, raw)
			unr, p, err := lo.await(name("port unreachable"), func(_ []byte, p *Packet) bool {
				return p.Proto == icmpProto && p.HasEmbedded && p.Embedded.DstPort == 9
			})
			if err != nil {
				return fmt.Errorf("%s: %w", name("udp to a closed port"), err)
			}
			seeds = append(seeds, unr)
			want := Embedded{Proto: conntrack.UDP, Src: ip, Dst: ip, SrcPort: 41002, DstPort: 9}
			if p.Embedded != want || p.PayloadLen != len(raw) {
				return fmt.Errorf("%s: port unreachable decodes as %+v, want embedded %+v and %d quoted bytes", name("icmp"), p, want, len(raw))
			}
			if mine, err := AppendIP(nil, &p); err != nil || !bytes.Equal(mine[hl:], unr[hl:]) {
				return fmt.Errorf("%s: kernel's port unreachable\n% x\nAppendIP of its decoding\n% x (%v)", name("icmp"), unr[hl:], mine[hl:], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("CTDOCTOR_WRITE_FUZZ_SEEDS") != "" {
		for i, b := range seeds {
			f := filepath.Join("testdata", "fuzz", "FuzzDecodeIP", fmt.Sprintf("kernel-%02d", i))
			if err := os.WriteFile(f, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
