package ctnetlink

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

var be = binary.BigEndian

// nextAttr splits the first netlink attribute off b, with the NLA_F_NESTED
// and NLA_F_NET_BYTEORDER bits masked off its type.
func nextAttr(b []byte) (typ uint16, payload, rest []byte, err error) {
	if len(b) < nlaHdrLen {
		return 0, nil, nil, fmt.Errorf("%w: %d trailing bytes, too short for an attribute", errMalformed, len(b))
	}
	n := int(binary.NativeEndian.Uint16(b))
	if n < nlaHdrLen || n > len(b) {
		return 0, nil, nil, fmt.Errorf("%w: attribute length %d out of range 4..%d", errMalformed, n, len(b))
	}
	typ = binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
	next := (n + 3) &^ 3
	if next > len(b) {
		next = len(b)
	}
	return typ, b[nlaHdrLen:n], b[next:], nil
}

func attrLenError(what string, got, want int) error {
	return fmt.Errorf("%w: %s is %d bytes, want %d", errMalformed, what, got, want)
}

func u8(p []byte, what string) (uint8, error) {
	if len(p) != 1 {
		return 0, attrLenError(what, len(p), 1)
	}
	return p[0], nil
}

func u16(p []byte, what string) (uint16, error) {
	if len(p) != 2 {
		return 0, attrLenError(what, len(p), 2)
	}
	return be.Uint16(p), nil
}

func u32(p []byte, what string) (uint32, error) {
	if len(p) != 4 {
		return 0, attrLenError(what, len(p), 4)
	}
	return be.Uint32(p), nil
}

func u64(p []byte, what string) (uint64, error) {
	if len(p) != 8 {
		return 0, attrLenError(what, len(p), 8)
	}
	return be.Uint64(p), nil
}

// decoder turns ctnetlink messages into Flows without allocating.
type decoder struct {
	// secctx caches the last security context string, so a table whose
	// entries share a context costs one allocation, not one per entry.
	secctx string
	// now is the CLOCK_REALTIME second DeltaTime is computed against.
	now int64
}

// flow decodes the payload of an IPCTNL_MSG_CT_NEW message (nfgenmsg and
// attributes) into f, overwriting every field.
func (d *decoder) flow(f *conntrack.Flow, msg []byte) error {
	if len(msg) < nfgenHdrLen {
		return fmt.Errorf("%w: %d-byte conntrack message, too short for nfgenmsg", errMalformed, len(msg))
	}
	*f = conntrack.Flow{Family: conntrack.Family(msg[0])}
	b := msg[nfgenHdrLen:]
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case ctaTupleOrig:
			err = d.tuple(f, &f.Orig, &f.ZoneOrig, p)
		case ctaTupleReply:
			err = d.tuple(f, &f.Reply, &f.ZoneReply, p)
		case ctaStatus:
			var v uint32
			v, err = u32(p, "CTA_STATUS")
			f.Status = conntrack.Status(v)
		case ctaProtoinfo:
			err = d.protoinfo(f, p)
		case ctaTimeout:
			f.Timeout, err = u32(p, "CTA_TIMEOUT")
		case ctaMark:
			f.Mark, err = u32(p, "CTA_MARK")
		case ctaUse:
			f.Use, err = u32(p, "CTA_USE")
		case ctaID:
			f.ID, err = u32(p, "CTA_ID")
		case ctaZone:
			f.Zone, err = u16(p, "CTA_ZONE")
		case ctaCountersOrig:
			err = d.counters(&f.OrigCounters, p)
			f.HasCounters = true
		case ctaCountersReply:
			err = d.counters(&f.ReplyCounters, p)
			f.HasCounters = true
		case ctaTimestamp:
			err = d.timestamp(f, p)
		case ctaSecctx:
			err = d.secctxAttr(f, p)
		case ctaLabels:
			if len(p) > len(f.Labels) {
				return fmt.Errorf("%w: CTA_LABELS is %d bytes, at most %d expected", errMalformed, len(p), len(f.Labels))
			}
			copy(f.Labels[:], p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) tuple(f *conntrack.Flow, t *conntrack.Tuple, zone *uint16, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case ctaTupleIP:
			err = d.tupleIP(t, p)
		case ctaTupleProto:
			err = d.tupleProto(f, t, p)
		case ctaTupleZone:
			*zone, err = u16(p, "CTA_TUPLE_ZONE")
			f.HasDirZones = true
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) tupleIP(t *conntrack.Tuple, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case ctaIPv4Src, ctaIPv4Dst:
			if len(p) != 4 {
				return attrLenError("CTA_IP_V4 address", len(p), 4)
			}
			a := netip.AddrFrom4([4]byte(p))
			if typ == ctaIPv4Src {
				t.Src = a
			} else {
				t.Dst = a
			}
		case ctaIPv6Src, ctaIPv6Dst:
			if len(p) != 16 {
				return attrLenError("CTA_IP_V6 address", len(p), 16)
			}
			a := netip.AddrFrom16([16]byte(p))
			if typ == ctaIPv6Src {
				t.Src = a
			} else {
				t.Dst = a
			}
		}
	}
	return nil
}

func (d *decoder) tupleProto(f *conntrack.Flow, t *conntrack.Tuple, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case ctaProtoNum:
			var v uint8
			v, err = u8(p, "CTA_PROTO_NUM")
			f.Proto = conntrack.Proto(v)
		case ctaProtoSrcPort:
			t.SrcPort, err = u16(p, "CTA_PROTO_SRC_PORT")
		case ctaProtoDstPort:
			t.DstPort, err = u16(p, "CTA_PROTO_DST_PORT")
		case ctaProtoICMPID, ctaProtoICMPv6ID:
			t.ICMPID, err = u16(p, "CTA_PROTO_ICMP_ID")
		case ctaProtoICMPType, ctaProtoICMPv6Type:
			t.ICMPType, err = u8(p, "CTA_PROTO_ICMP_TYPE")
		case ctaProtoICMPCode, ctaProtoICMPv6Code:
			t.ICMPCode, err = u8(p, "CTA_PROTO_ICMP_CODE")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) protoinfo(f *conntrack.Flow, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case ctaProtoinfoTCP, ctaProtoinfoDCCP, ctaProtoinfoSCTP:
			for len(p) > 0 {
				var st uint16
				var sp []byte
				st, sp, p, err = nextAttr(p)
				if err != nil {
					return err
				}
				if st == ctaProtoinfoState {
					if f.State, err = u8(sp, "CTA_PROTOINFO state"); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func (d *decoder) counters(c *conntrack.Counters, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		var v32 uint32
		switch typ {
		case ctaCountersPackets:
			c.Packets, err = u64(p, "CTA_COUNTERS_PACKETS")
		case ctaCountersBytes:
			c.Bytes, err = u64(p, "CTA_COUNTERS_BYTES")
		case ctaCounters32Packets:
			v32, err = u32(p, "CTA_COUNTERS32_PACKETS")
			c.Packets = uint64(v32)
		case ctaCounters32Bytes:
			v32, err = u32(p, "CTA_COUNTERS32_BYTES")
			c.Bytes = uint64(v32)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) timestamp(f *conntrack.Flow, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		if typ == ctaTimestampStart {
			start, err := u64(p, "CTA_TIMESTAMP_START")
			if err != nil {
				return err
			}
			f.HasDeltaTime = true
			if s := int64(start / 1e9); d.now > s {
				f.DeltaTime = uint64(d.now - s)
			}
		}
	}
	return nil
}

func (d *decoder) secctxAttr(f *conntrack.Flow, b []byte) error {
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		if typ == ctaSecctxName {
			for len(p) > 0 && p[len(p)-1] == 0 {
				p = p[:len(p)-1]
			}
			if string(p) != d.secctx { // no allocation for the comparison
				d.secctx = string(p)
			}
			f.SecCtx = d.secctx
		}
	}
	return nil
}

// statsCPUFields maps enum ctattr_stats_cpu to the shared counter names.
var statsCPUFields = [...]conntrack.StatField{
	1:  conntrack.StatSearched,
	2:  conntrack.StatFound,
	3:  conntrack.StatNew,
	4:  conntrack.StatInvalid,
	5:  conntrack.StatIgnore,
	6:  conntrack.StatDelete,
	7:  conntrack.StatDeleteList,
	8:  conntrack.StatInsert,
	9:  conntrack.StatInsertFailed,
	10: conntrack.StatDrop,
	11: conntrack.StatEarlyDrop,
	12: conntrack.StatError,
	13: conntrack.StatSearchRestart,
	14: conntrack.StatClashResolve,
	15: conntrack.StatChainTooLong,
}

// statsCPU decodes the payload of an IPCTNL_MSG_CT_GET_STATS_CPU message
// and returns the CPU number (nfgenmsg res_id).
func statsCPU(s *conntrack.Stats, msg []byte) (cpu int, err error) {
	if len(msg) < nfgenHdrLen {
		return 0, fmt.Errorf("%w: %d-byte stats message, too short for nfgenmsg", errMalformed, len(msg))
	}
	cpu = int(be.Uint16(msg[2:]))
	b := msg[nfgenHdrLen:]
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return 0, err
		}
		b = rest
		if int(typ) >= len(statsCPUFields) || typ == 0 {
			continue // a counter newer than this package
		}
		v, err := u32(p, "CTA_STATS counter")
		if err != nil {
			return 0, err
		}
		s.Set(statsCPUFields[typ], uint64(v))
	}
	return cpu, nil
}

// statsGlobal decodes the payload of an IPCTNL_MSG_CT_GET_STATS message.
func statsGlobal(msg []byte) (count, max int64, haveCount, haveMax bool, err error) {
	if len(msg) < nfgenHdrLen {
		return 0, 0, false, false, fmt.Errorf("%w: %d-byte stats message, too short for nfgenmsg", errMalformed, len(msg))
	}
	b := msg[nfgenHdrLen:]
	for len(b) > 0 {
		typ, p, rest, err := nextAttr(b)
		if err != nil {
			return 0, 0, false, false, err
		}
		b = rest
		switch typ {
		case ctaStatsGlobalEntries:
			v, err := u32(p, "CTA_STATS_GLOBAL_ENTRIES")
			if err != nil {
				return 0, 0, false, false, err
			}
			count, haveCount = int64(v), true
		case ctaStatsGlobalMaxEntries:
			v, err := u32(p, "CTA_STATS_GLOBAL_MAX_ENTRIES")
			if err != nil {
				return 0, 0, false, false, err
			}
			max, haveMax = int64(v), true
		}
	}
	return count, max, haveCount, haveMax, nil
}
