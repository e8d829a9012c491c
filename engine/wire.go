package engine

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// This file is the packet codec: DecodeIP turns raw IP packets (from a
// capture, a tun device, a raw socket) into Packets without allocating, and
// AppendIP crafts raw packets from Packets for tests and injection.
//
// Conventions shared by both directions:
//
//   - PayloadLen counts the bytes after the layer-4 header as the IP header
//     declares them (IPv4 total length, IPv6 payload length), so a capture cut
//     by its snap length still gives the right TCP data length. The layer-4
//     headers are: TCP its data offset, UDP and UDP-Lite 8 bytes, SCTP the
//     12-byte common header, DCCP its data offset, ICMP and ICMPv6 8 bytes
//     (for an ICMP error, PayloadLen is the size of the quoted packet); any
//     other protocol has no header and PayloadLen is the whole IP payload.
//   - ICMP fields are read for protocol 1 in IPv4 and 58 in IPv6; the other
//     combinations are treated as any other protocol.
//   - Checksums are neither verified nor required: captures of locally sent
//     packets hold partial checksums (offload), and conntrack's own check is
//     off for locally generated traffic.
//   - Packets the kernel finds malformed before tracking (a TCP data offset
//     or UDP length that does not fit, an IPv6 packet with no next header,
//     an ICMP error whose quote cannot be read) are errors too: the kernel
//     leaves them untracked, so they cannot change the table.
//   - Fragments: a first fragment decodes as the whole datagram would (the
//     layer-4 header is there; PayloadLen counts only the fragment's bytes).
//     A later fragment has no layer-4 header: DecodeIP returns an error
//     wrapping ErrFragment. The kernel reassembles before conntrack, so
//     skipping later fragments tracks each datagram once.

// ErrTruncated is wrapped by DecodeIP's errors when the packet ends before
// a header it needs does.
var ErrTruncated = errors.New("truncated packet")

// ErrFragment is wrapped by DecodeIP's error for a non-first fragment, which
// carries no layer-4 header.
var ErrFragment = errors.New("non-first fragment")

// DecodeError is the error DecodeIP returns: a fixed Reason fit for
// counting ("truncated IPv4 header", "unsupported IP version", …) and a
// Detail with the numbers ("12 of 20 bytes").
type DecodeError struct {
	Reason string
	Detail string
	Err    error // ErrTruncated, ErrFragment or nil
}

// Error returns "reason: detail".
func (e *DecodeError) Error() string {
	if e.Detail == "" {
		return e.Reason
	}
	return e.Reason + ": " + e.Detail
}

// Unwrap returns the sentinel the error wraps, if any.
func (e *DecodeError) Unwrap() error { return e.Err }

func wireProtoName(p conntrack.Proto) string {
	switch p {
	case conntrack.UDPLite:
		return "UDP-Lite"
	case conntrack.ICMPv6:
		return "ICMPv6"
	}
	return strings.ToUpper(p.String())
}

func wireTruncated(what string, have, need int) error {
	return &DecodeError{Reason: "truncated " + what,
		Detail: strconv.Itoa(have) + " of " + strconv.Itoa(need) + " bytes", Err: ErrTruncated}
}

func wireQuoteTruncated(p conntrack.Proto, have, need int) error {
	err := wireTruncated(wireProtoName(p)+" header", have, need).(*DecodeError)
	err.Reason = "ICMP error quote: " + err.Reason
	return err
}

func wireBad(reason, detail string) error { return &DecodeError{Reason: reason, Detail: detail} }

// wireNet is a decoded network header.
type wireNet struct {
	proto    uint8
	src, dst netip.Addr
	l4       []byte // the captured layer-4 bytes
	l4len    int    // the layer-4 length the IP header declares
}

// DecodeIP decodes a raw IPv4 or IPv6 packet (the first nibble decides)
// into *p, which it resets first; it does not allocate unless it fails.
func DecodeIP(b []byte, p *Packet) error {
	*p = Packet{}
	if len(b) == 0 {
		return wireTruncated("IP header", 0, 20)
	}
	var n wireNet
	var err error
	switch v := b[0] >> 4; v {
	case 4:
		p.Family = conntrack.IPv4
		n, err = wireIPv4(b, false)
	case 6:
		p.Family = conntrack.IPv6
		n, err = wireIPv6(b, false)
	default:
		return wireBad("unsupported IP version", strconv.Itoa(int(v)))
	}
	if err != nil {
		return err
	}
	p.Proto = conntrack.Proto(n.proto)
	p.Src, p.Dst = n.src, n.dst
	return wireL4(p, n.l4, n.l4len)
}

// wireIPv4 decodes an IPv4 header. A quoted header (inside an ICMP error)
// is followed by whatever the error carried, whatever its length field says.
func wireIPv4(b []byte, quoted bool) (n wireNet, err error) {
	if len(b) < 20 {
		return n, wireTruncated("IPv4 header", len(b), 20)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return n, wireBad("bad IPv4 header length", strconv.Itoa(ihl)+" bytes")
	}
	if len(b) < ihl {
		return n, wireTruncated("IPv4 header", len(b), ihl)
	}
	if off := int(binary.BigEndian.Uint16(b[6:]) & 0x1fff); off != 0 {
		return n, &DecodeError{Reason: "IPv4 non-first fragment",
			Detail: "offset " + strconv.Itoa(off*8) + " bytes", Err: ErrFragment}
	}
	n.proto = b[9]
	n.src = netip.AddrFrom4([4]byte(b[12:16]))
	n.dst = netip.AddrFrom4([4]byte(b[16:20]))
	if quoted {
		n.l4 = b[ihl:]
		n.l4len = len(n.l4)
		return n, nil
	}
	total := int(binary.BigEndian.Uint16(b[2:]))
	if total == 0 {
		// Total length 0: a GSO super-packet larger than 64 KiB (IPv4
		// BIG TCP) as taps see it; the captured length is all there is.
		total = len(b)
	}
	if total < ihl {
		return n, wireBad("bad IPv4 total length",
			strconv.Itoa(total)+" bytes, shorter than its "+strconv.Itoa(ihl)+"-byte header")
	}
	n.l4len = total - ihl
	n.l4 = b[ihl:min(total, len(b))]
	return n, nil
}

// wireIPv6 decodes an IPv6 header and skips the extension headers
// (hop-by-hop, routing, destination options, fragment, authentication).
func wireIPv6(b []byte, quoted bool) (n wireNet, err error) {
	if len(b) < 40 {
		return n, wireTruncated("IPv6 header", len(b), 40)
	}
	n.src = netip.AddrFrom16([16]byte(b[8:24]))
	n.dst = netip.AddrFrom16([16]byte(b[24:40]))
	end := len(b) // end of the bytes that belong to this packet
	plen := len(b) - 40
	if !quoted {
		if l := int(binary.BigEndian.Uint16(b[4:])); l != 0 {
			// 0 is a jumbogram (or a BIG TCP super-packet): the captured
			// length is all there is.
			plen = l
			end = min(end, 40+plen)
		}
	}
	nh, off := b[6], 40
	for {
		var hl int
		switch nh {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if end-off < 2 {
				return n, wireTruncated("IPv6 extension header", end-off, 2)
			}
			hl = (int(b[off+1]) + 1) * 8
		case 51: // authentication header
			if end-off < 2 {
				return n, wireTruncated("IPv6 extension header", end-off, 2)
			}
			hl = (int(b[off+1]) + 2) * 4
		case 44: // fragment
			if end-off < 8 {
				return n, wireTruncated("IPv6 fragment header", end-off, 8)
			}
			if fo := int(binary.BigEndian.Uint16(b[off+2:]) &^ 7); fo != 0 {
				return n, &DecodeError{Reason: "IPv6 non-first fragment",
					Detail: "offset " + strconv.Itoa(fo) + " bytes", Err: ErrFragment}
			}
			hl = 8
		case 59:
			// No next header: the kernel finds no layer-4 protocol and
			// leaves the packet untracked (INVALID).
			return n, wireBad("IPv6 no next header", "next header 59 at byte "+strconv.Itoa(off))
		default:
			n.proto = nh
			n.l4 = b[off:end]
			n.l4len = plen - (off - 40)
			return n, nil
		}
		if !quoted && off-40+hl > plen {
			return n, wireBad("bad IPv6 extension header",
				"header at byte "+strconv.Itoa(off)+" ends past the "+strconv.Itoa(plen)+"-byte payload")
		}
		if end-off < hl {
			return n, wireTruncated("IPv6 extension header", end-off, hl)
		}
		nh = b[off]
		off += hl
	}
}

// wireICMPQuery reports whether an ICMP type carries an identifier
// (echo, timestamp, information, address mask; ICMPv6 echo, node information).
func wireICMPQuery(v6 bool, t uint8) bool {
	if v6 {
		return t == 128 || t == 129 || t == 139 || t == 140
	}
	return t == 0 || t == 8 || (t >= 13 && t <= 18)
}

// wireICMPError reports whether an ICMP type is an error that quotes the
// offending packet.
func wireICMPError(v6 bool, t uint8) bool {
	if v6 {
		return t >= 1 && t <= 4
	}
	return t == 3 || t == 4 || t == 5 || t == 11 || t == 12
}

// wireICMP reports whether the packet's ICMP fields are read (ICMP in IPv4,
// ICMPv6 in IPv6), and whether they are ICMPv6's.
func wireICMP(f conntrack.Family, proto conntrack.Proto) (icmp, v6 bool) {
	switch {
	case f == conntrack.IPv4 && proto == conntrack.ICMP:
		return true, false
	case f == conntrack.IPv6 && proto == conntrack.ICMPv6:
		return true, true
	}
	return false, false
}

// wireL4 decodes the layer-4 header: b are its captured bytes, l4len its
// length as the IP header declares it.
func wireL4(p *Packet, b []byte, l4len int) error {
	switch p.Proto {
	case conntrack.TCP:
		if len(b) < 20 {
			return wireTruncated("TCP header", len(b), 20)
		}
		doff := int(b[12]>>4) * 4
		if doff < 20 {
			return wireBad("bad TCP data offset", strconv.Itoa(doff)+" bytes")
		}
		if doff > l4len {
			return wireBad("bad TCP data offset",
				strconv.Itoa(doff)+"-byte header in a "+strconv.Itoa(l4len)+"-byte segment")
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:])
		p.DstPort = binary.BigEndian.Uint16(b[2:])
		p.Seq = binary.BigEndian.Uint32(b[4:])
		p.Ack = binary.BigEndian.Uint32(b[8:])
		p.Flags = TCPFlags(b[13])
		p.Window = binary.BigEndian.Uint16(b[14:])
		p.PayloadLen = l4len - doff
		return nil
	case conntrack.UDP, conntrack.UDPLite:
		if len(b) < 8 {
			return wireTruncated(wireProtoName(p.Proto)+" header", len(b), 8)
		}
		// The kernel calls a UDP length (UDP-Lite: checksum coverage, 0
		// meaning all) outside 8..the IP payload malformed, and INVALID.
		if ulen := int(binary.BigEndian.Uint16(b[4:])); (ulen != 0 || p.Proto == conntrack.UDP) && (ulen < 8 || ulen > l4len) {
			what := "bad UDP length"
			if p.Proto == conntrack.UDPLite {
				what = "bad UDP-Lite checksum coverage"
			}
			return wireBad(what, strconv.Itoa(ulen)+" bytes in a "+strconv.Itoa(l4len)+"-byte datagram")
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:])
		p.DstPort = binary.BigEndian.Uint16(b[2:])
		p.PayloadLen = l4len - 8
		return nil
	case conntrack.SCTP:
		if len(b) < 12 {
			return wireTruncated("SCTP header", len(b), 12)
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:])
		p.DstPort = binary.BigEndian.Uint16(b[2:])
		p.PayloadLen = l4len - 12
		return nil
	case conntrack.DCCP:
		if len(b) < 12 {
			return wireTruncated("DCCP header", len(b), 12)
		}
		doff := int(b[4]) * 4
		if doff < 12 || doff > l4len {
			return wireBad("bad DCCP data offset",
				strconv.Itoa(doff)+"-byte header in a "+strconv.Itoa(l4len)+"-byte packet")
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:])
		p.DstPort = binary.BigEndian.Uint16(b[2:])
		p.PayloadLen = l4len - doff
		return nil
	}
	icmp, v6 := wireICMP(p.Family, p.Proto)
	if !icmp {
		p.PayloadLen = l4len
		return nil
	}
	if len(b) < 8 {
		return wireTruncated(wireProtoName(p.Proto)+" header", len(b), 8)
	}
	p.ICMPType, p.ICMPCode = b[0], b[1]
	if wireICMPQuery(v6, p.ICMPType) {
		p.ICMPID = binary.BigEndian.Uint16(b[4:])
	}
	p.PayloadLen = l4len - 8
	if wireICMPError(v6, p.ICMPType) {
		if err := wireEmbedded(p, b[8:]); err != nil {
			return err
		}
		p.HasEmbedded = true
	}
	return nil
}

// wireEmbedded decodes the packet an ICMP error quotes: its IP header and
// as much of its layer-4 header as the kernel reads (the ports: 4 bytes;
// ICMP: 8 bytes).
func wireEmbedded(p *Packet, b []byte) error {
	var n wireNet
	var err error
	if p.Family == conntrack.IPv4 {
		if len(b) > 0 && b[0]>>4 != 4 {
			return wireBad("bad ICMP error", "quotes an IP version "+strconv.Itoa(int(b[0]>>4))+" header")
		}
		n, err = wireIPv4(b, true)
	} else {
		if len(b) > 0 && b[0]>>4 != 6 {
			return wireBad("bad ICMPv6 error", "quotes an IP version "+strconv.Itoa(int(b[0]>>4))+" header")
		}
		n, err = wireIPv6(b, true)
	}
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			de.Reason = "ICMP error quote: " + de.Reason
		}
		return err
	}
	e := &p.Embedded
	e.Proto = conntrack.Proto(n.proto)
	e.Src, e.Dst = n.src, n.dst
	if e.Proto.HasPorts() {
		if len(n.l4) < 4 {
			return wireQuoteTruncated(e.Proto, len(n.l4), 4)
		}
		e.SrcPort = binary.BigEndian.Uint16(n.l4[0:])
		e.DstPort = binary.BigEndian.Uint16(n.l4[2:])
		return nil
	}
	if icmp, v6 := wireICMP(p.Family, e.Proto); icmp {
		if len(n.l4) < 8 {
			return wireQuoteTruncated(e.Proto, len(n.l4), 8)
		}
		e.ICMPType, e.ICMPCode = n.l4[0], n.l4[1]
		if wireICMPQuery(v6, e.ICMPType) {
			e.ICMPID = binary.BigEndian.Uint16(n.l4[4:])
		}
	}
	return nil
}

// AppendIP appends a raw packet built from p to b: an IPv4 header (ID 0,
// DF, TTL 64, header checksum) or an IPv6 header (hop limit 64), then the
// layer-4 header with a valid checksum and PayloadLen zero bytes. TCP has a
// 20-byte header; ICMP echo carries the ID and sequence 0; an ICMP error
// quotes Embedded as a packet built by AppendIP itself, cut to PayloadLen
// bytes (at least its IP header and 8 layer-4 bytes). DecodeIP of the
// result gives back every field DecodeIP sets.
func AppendIP(b []byte, p *Packet) ([]byte, error) {
	var hl int
	switch p.Family {
	case conntrack.IPv4:
		if !p.Src.Is4() || !p.Dst.Is4() {
			return b, errors.New("AppendIP: an IPv4 packet needs IPv4 addresses, have src " +
				p.Src.String() + " dst " + p.Dst.String())
		}
		hl = 20
	case conntrack.IPv6:
		if !p.Src.Is6() || !p.Dst.Is6() {
			return b, errors.New("AppendIP: an IPv6 packet needs IPv6 addresses, have src " +
				p.Src.String() + " dst " + p.Dst.String())
		}
		hl = 40
	default:
		return b, errors.New("AppendIP: unknown address family " + strconv.Itoa(int(p.Family)))
	}
	if p.PayloadLen < 0 {
		return b, errors.New("AppendIP: negative PayloadLen " + strconv.Itoa(p.PayloadLen))
	}
	if p.PayloadLen > 1<<16 {
		return b, errors.New("AppendIP: PayloadLen " + strconv.Itoa(p.PayloadLen) + " does not fit an IP packet")
	}
	start := len(b)
	b = append(b, make([]byte, hl)...)
	l4 := len(b)
	icmp, v6 := wireICMP(p.Family, p.Proto)
	switch {
	case p.Proto == conntrack.TCP:
		b = binary.BigEndian.AppendUint16(b, p.SrcPort)
		b = binary.BigEndian.AppendUint16(b, p.DstPort)
		b = binary.BigEndian.AppendUint32(b, p.Seq)
		b = binary.BigEndian.AppendUint32(b, p.Ack)
		b = append(b, 5<<4, byte(p.Flags))
		b = binary.BigEndian.AppendUint16(b, p.Window)
		b = append(b, 0, 0, 0, 0) // checksum, urgent pointer
	case p.Proto == conntrack.UDP || p.Proto == conntrack.UDPLite:
		b = binary.BigEndian.AppendUint16(b, p.SrcPort)
		b = binary.BigEndian.AppendUint16(b, p.DstPort)
		// UDP: the length; UDP-Lite: the checksum coverage, 0 = everything.
		b = append(b, 0, 0, 0, 0)
		if p.Proto == conntrack.UDP {
			binary.BigEndian.PutUint16(b[l4+4:], uint16(8+p.PayloadLen))
		}
	case p.Proto == conntrack.SCTP:
		b = binary.BigEndian.AppendUint16(b, p.SrcPort)
		b = binary.BigEndian.AppendUint16(b, p.DstPort)
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0) // verification tag, checksum
	case p.Proto == conntrack.DCCP:
		b = binary.BigEndian.AppendUint16(b, p.SrcPort)
		b = binary.BigEndian.AppendUint16(b, p.DstPort)
		// data offset 4 words, no CCVal, full coverage, checksum, then
		// type DATA (2) with extended sequence numbers (X=1), sequence 0.
		b = append(b, 4, 0, 0, 0, 2<<1|1, 0, 0, 0, 0, 0, 0, 0)
	case icmp:
		b = append(b, p.ICMPType, p.ICMPCode, 0, 0, 0, 0, 0, 0)
		if wireICMPQuery(v6, p.ICMPType) {
			binary.BigEndian.PutUint16(b[l4+4:], p.ICMPID)
		}
		if wireICMPError(v6, p.ICMPType) && p.HasEmbedded {
			var err error
			if b, err = wireAppendQuote(b, p, hl); err != nil {
				return b[:start], err
			}
		}
	}
	if pad := l4 + wireHeaderLen(p) + p.PayloadLen - len(b); pad > 0 {
		b = append(b, make([]byte, pad)...)
	}
	total := len(b) - start
	if (p.Family == conntrack.IPv4 && total > 0xffff) || (p.Family == conntrack.IPv6 && total-hl > 0xffff) {
		return b[:start], errors.New("AppendIP: packet too long: " + strconv.Itoa(total) + " bytes")
	}
	h := b[start:l4]
	if p.Family == conntrack.IPv4 {
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(total))
		h[6] = 0x40 // DF
		h[8] = 64
		h[9] = byte(p.Proto)
		a, d := p.Src.As4(), p.Dst.As4()
		copy(h[12:], a[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], wireChecksum(0, h))
	} else {
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(total-hl))
		h[6] = byte(p.Proto)
		h[7] = 64
		a, d := p.Src.As16(), p.Dst.As16()
		copy(h[8:], a[:])
		copy(h[24:], d[:])
	}
	seg := b[l4:]
	var csum int // offset of the layer-4 checksum, -1 for none
	switch {
	case p.Proto == conntrack.TCP:
		csum = 16
	case p.Proto == conntrack.UDP || p.Proto == conntrack.UDPLite:
		csum = 6
	case p.Proto == conntrack.DCCP:
		csum = 6
	case p.Proto == conntrack.SCTP:
		binary.LittleEndian.PutUint32(seg[8:], crc32.Checksum(seg, crc32.MakeTable(crc32.Castagnoli)))
		return b, nil
	case icmp:
		csum = 2
	default:
		return b, nil
	}
	var sum uint64
	if !(icmp && !v6) { // every checksum but ICMPv4's covers the pseudo-header
		sum = wireSum(wireSum(0, p.Src.AsSlice()), p.Dst.AsSlice())
		sum += uint64(p.Proto) + uint64(len(seg))
	}
	c := wireChecksum(sum, seg)
	if c == 0 && (p.Proto == conntrack.UDP || p.Proto == conntrack.UDPLite) {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(seg[csum:], c)
	return b, nil
}

// wireHeaderLen is the size of the layer-4 header AppendIP writes.
func wireHeaderLen(p *Packet) int {
	switch p.Proto {
	case conntrack.TCP:
		return 20
	case conntrack.UDP, conntrack.UDPLite:
		return 8
	case conntrack.SCTP:
		return 12
	case conntrack.DCCP:
		return 16
	}
	if icmp, _ := wireICMP(p.Family, p.Proto); icmp {
		return 8
	}
	return 0
}

// wireAppendQuote appends the packet an ICMP error quotes: Embedded built
// as a packet of its own, cut (or zero-padded) to PayloadLen bytes, and to
// no less than its IP header and 8 bytes of layer 4.
func wireAppendQuote(b []byte, p *Packet, hl int) ([]byte, error) {
	e := &p.Embedded
	in := Packet{Family: p.Family, Proto: e.Proto, Src: e.Src, Dst: e.Dst,
		SrcPort: e.SrcPort, DstPort: e.DstPort,
		ICMPType: e.ICMPType, ICMPCode: e.ICMPCode, ICMPID: e.ICMPID}
	at := len(b)
	b, err := AppendIP(b, &in)
	if err != nil {
		return b, errors.New("AppendIP: ICMP error's quoted packet: " + err.Error())
	}
	want := p.PayloadLen
	if need := hl + wireQuoteNeed(&in); want < need {
		want = hl + 8
	}
	if have := len(b) - at; have < want {
		b = append(b, make([]byte, want-have)...)
	}
	return b[:at+want], nil
}

// wireQuoteNeed is how many layer-4 bytes DecodeIP needs in a quoted packet.
func wireQuoteNeed(p *Packet) int {
	if p.Proto.HasPorts() {
		return 4
	}
	if icmp, _ := wireICMP(p.Family, p.Proto); icmp {
		return 8
	}
	return 0
}

// wireSum adds b, as big-endian 16-bit words, to a one's-complement sum.
func wireSum(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// wireChecksum folds sum plus b into the Internet checksum (RFC 1071).
func wireChecksum(sum uint64, b []byte) uint16 {
	sum = wireSum(sum, b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
