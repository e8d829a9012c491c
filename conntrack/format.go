package conntrack

import (
	"net/netip"
	"strconv"
)

func appendPadded(b []byte, s string, w int) []byte {
	b = append(b, s...)
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return b
}

func appendAddr(b []byte, a netip.Addr, proc bool) []byte {
	if !a.IsValid() {
		return append(b, "0.0.0.0"...)
	}
	if proc && a.Is6() && !a.Is4In6() {
		// The kernel prints IPv6 addresses in full: 0000:0000:…:0001.
		const hex = "0123456789abcdef"
		s := a.As16()
		for i := 0; i < 16; i += 2 {
			if i > 0 {
				b = append(b, ':')
			}
			b = append(b, hex[s[i]>>4], hex[s[i]&15], hex[s[i+1]>>4], hex[s[i+1]&15])
		}
		return b
	}
	return a.AppendTo(b)
}

func (f *Flow) appendTuple(b []byte, t *Tuple, proc bool) []byte {
	b = append(b, "src="...)
	b = appendAddr(b, t.Src, proc)
	b = append(b, " dst="...)
	b = appendAddr(b, t.Dst, proc)
	b = append(b, ' ')
	switch {
	case f.Proto.HasPorts():
		b = append(b, "sport="...)
		b = strconv.AppendUint(b, uint64(t.SrcPort), 10)
		b = append(b, " dport="...)
		b = strconv.AppendUint(b, uint64(t.DstPort), 10)
		b = append(b, ' ')
	case f.Proto.IsICMP():
		b = append(b, "type="...)
		b = strconv.AppendUint(b, uint64(t.ICMPType), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(t.ICMPCode), 10)
		b = append(b, " id="...)
		b = strconv.AppendUint(b, uint64(t.ICMPID), 10)
		b = append(b, ' ')
	case f.Proto == GRE:
		b = append(b, "srckey=0x"...)
		b = strconv.AppendUint(b, uint64(t.SrcPort), 16)
		b = append(b, " dstkey=0x"...)
		b = strconv.AppendUint(b, uint64(t.DstPort), 16)
		b = append(b, ' ')
	}
	return b
}

func appendCounters(b []byte, c Counters) []byte {
	b = append(b, "packets="...)
	b = strconv.AppendUint(b, c.Packets, 10)
	b = append(b, " bytes="...)
	b = strconv.AppendUint(b, c.Bytes, 10)
	return append(b, ' ')
}

// AppendProc appends the entry as the kernel prints it in
// /proc/net/nf_conntrack, including the trailing newline.
func (f *Flow) AppendProc(b []byte) []byte {
	b = appendPadded(b, f.Family.String(), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(f.Family), 10)
	b = append(b, ' ')
	return f.appendBody(b, true)
}

// AppendConntrack appends the entry as `conntrack -L` prints it, including
// the trailing newline.
func (f *Flow) AppendConntrack(b []byte) []byte { return f.appendBody(b, false) }

func (f *Flow) appendBody(b []byte, proc bool) []byte {
	b = appendPadded(b, f.Proto.String(), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(f.Proto), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(f.Timeout), 10)
	b = append(b, ' ')
	if name := f.StateName(); name != "" {
		b = append(b, name...)
		b = append(b, ' ')
	}
	b = f.appendTuple(b, &f.Orig, proc)
	if f.HasDirZones && f.ZoneOrig != 0 {
		b = append(b, "zone-orig="...)
		b = strconv.AppendUint(b, uint64(f.ZoneOrig), 10)
		b = append(b, ' ')
	}
	if f.HasCounters {
		b = appendCounters(b, f.OrigCounters)
	}
	if f.Status&StatusSeenReply == 0 {
		b = append(b, "[UNREPLIED] "...)
	}
	b = f.appendTuple(b, &f.Reply, proc)
	if f.HasDirZones && f.ZoneReply != 0 {
		b = append(b, "zone-reply="...)
		b = strconv.AppendUint(b, uint64(f.ZoneReply), 10)
		b = append(b, ' ')
	}
	if f.HasCounters {
		b = appendCounters(b, f.ReplyCounters)
	}
	switch {
	case f.Status&StatusHWOffload != 0:
		b = append(b, "[HW_OFFLOAD] "...)
	case f.Status&StatusOffload != 0:
		b = append(b, "[OFFLOAD] "...)
	case f.Status&StatusAssured != 0:
		b = append(b, "[ASSURED] "...)
	}
	b = append(b, "mark="...)
	b = strconv.AppendUint(b, uint64(f.Mark), 10)
	b = append(b, ' ')
	if f.SecCtx != "" {
		b = append(b, "secctx="...)
		b = append(b, f.SecCtx...)
		b = append(b, ' ')
	}
	if proc || f.Zone != 0 {
		b = append(b, "zone="...)
		b = strconv.AppendUint(b, uint64(f.Zone), 10)
		b = append(b, ' ')
	}
	if f.HasDeltaTime {
		b = append(b, "delta-time="...)
		b = strconv.AppendUint(b, f.DeltaTime, 10)
		b = append(b, ' ')
	}
	b = append(b, "use="...)
	b = strconv.AppendUint(b, uint64(f.Use), 10)
	return append(b, '\n')
}

// String returns the entry in /proc format, without the newline.
func (f *Flow) String() string {
	b := f.AppendProc(nil)
	return string(b[:len(b)-1])
}
