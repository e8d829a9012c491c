package conntrack

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Format is a text format of conntrack entries.
type Format uint8

// Text formats.
const (
	FormatUnknown Format = iota
	// FormatProc is /proc/net/nf_conntrack and `conntrack -L -o extended`:
	// lines start with the layer-3 name and number.
	FormatProc
	// FormatConntrack is `conntrack -L` and the legacy /proc/net/ip_conntrack:
	// lines start with the layer-4 name and number.
	FormatConntrack
	// FormatSave is `conntrack -L -o save` and the `conntrack -R` input: one
	// `-I …` command line per entry.
	FormatSave
)

// String names the format as the --from help does.
func (f Format) String() string {
	switch f {
	case FormatProc:
		return "proc"
	case FormatConntrack:
		return "conntrack"
	case FormatSave:
		return "save"
	}
	return "unknown"
}

// ErrUnknownFormat is returned for a line in none of the known formats.
var ErrUnknownFormat = errors.New("not a conntrack entry in /proc, `conntrack -L` or `conntrack -R` format")

// DetectFormat says which format a line is in, from its first fields alone.
func DetectFormat(line []byte) Format {
	tok, rest := nextField(line)
	switch {
	case len(tok) == 0:
		return FormatUnknown
	case tok[0] == '-':
		return FormatSave
	case string(tok) == "ipv4" || string(tok) == "ipv6" || string(tok) == "unknown":
		return FormatProc
	}
	// "<l4name> <l4num> …"
	if num, _ := nextField(rest); len(num) > 0 && isDigits(num) {
		if _, ok := ProtoByName(string(tok)); ok || string(tok) == "unknown" {
			return FormatConntrack
		}
	}
	return FormatUnknown
}

// ParseLine parses one entry in any known format into f (which is reset first).
func ParseLine(line []byte, f *Flow) error {
	switch DetectFormat(line) {
	case FormatProc:
		return parseListLine(line, f, true)
	case FormatConntrack:
		return parseListLine(line, f, false)
	case FormatSave:
		return parseSaveLine(line, f)
	}
	return ErrUnknownFormat
}

func nextField(b []byte) (tok, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return b[i:j], b[j:]
}

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseUint(b []byte, bits int) (uint64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, fmt.Errorf("bad number %q", b)
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad number %q", b)
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, fmt.Errorf("number out of range %q", b)
		}
		n = n*10 + d
	}
	if bits < 64 && n >= 1<<bits {
		return 0, fmt.Errorf("number out of range %q", b)
	}
	return n, nil
}

func parseHexOrDec(b []byte, bits int) (uint64, error) {
	if len(b) > 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X') {
		n, err := strconv.ParseUint(string(b[2:]), 16, bits)
		if err != nil {
			return 0, fmt.Errorf("bad hex number %q", b)
		}
		return n, nil
	}
	return parseUint(b, bits)
}

// parseAddr parses an IPv4 address without allocating, falling back to netip for IPv6.
func parseAddr(b []byte) (netip.Addr, error) {
	if bytes.IndexByte(b, ':') >= 0 {
		a, err := netip.ParseAddr(string(b))
		if err != nil || a.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("bad address %q", b)
		}
		return a, nil
	}
	var ip [4]byte
	n, acc, digits := 0, 0, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			acc = acc*10 + int(c-'0')
			digits++
			if acc > 255 || digits > 3 {
				return netip.Addr{}, fmt.Errorf("bad address %q", b)
			}
		case c == '.' && digits > 0 && n < 3:
			ip[n] = byte(acc)
			n++
			acc, digits = 0, 0
		default:
			return netip.Addr{}, fmt.Errorf("bad address %q", b)
		}
	}
	if n != 3 || digits == 0 {
		return netip.Addr{}, fmt.Errorf("bad address %q", b)
	}
	ip[3] = byte(acc)
	return netip.AddrFrom4(ip), nil
}

// parseListLine parses the /proc and `conntrack -L` formats; withL3 says
// whether the line starts with the layer-3 name and number.
func parseListLine(line []byte, f *Flow, withL3 bool) error {
	*f = Flow{Status: StatusConfirmed | StatusSeenReply}
	rest := line
	var tok []byte
	if withL3 {
		tok, rest = nextField(rest) // l3 name
		_ = tok
		tok, rest = nextField(rest)
		n, err := parseUint(tok, 8)
		if err != nil {
			return fmt.Errorf("layer-3 number: %w", err)
		}
		f.Family = Family(n)
	}
	tok, rest = nextField(rest) // l4 name
	if len(tok) == 0 {
		return errors.New("missing protocol")
	}
	tok, rest = nextField(rest)
	n, err := parseUint(tok, 8)
	if err != nil {
		return fmt.Errorf("protocol number: %w", err)
	}
	f.Proto = Proto(n)
	// Timeout: present unless the entry has a fixed/no timer.
	tok, rest2 := nextField(rest)
	if isDigits(tok) {
		t, err := parseUint(tok, 32)
		if err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		f.Timeout = uint32(t)
		rest = rest2
	}
	// State name for TCP/SCTP/DCCP.
	if names := stateNames(f.Proto); names != nil {
		tok, rest2 = nextField(rest)
		if len(tok) > 0 && bytes.IndexByte(tok, '=') < 0 && tok[0] != '[' {
			found := false
			for i, nm := range names {
				if nm == string(tok) {
					f.State = uint8(i)
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("unknown %s state %q", f.Proto, tok)
			}
			rest = rest2
		}
	}
	haveUse := false
	dir := 0 // 0 = original, 1 = reply
	var seen [2]uint16
	const (
		sSrc = 1 << iota
		sDst
		sSport
		sDport
		sType
		sCode
		sID
	)
	tup := &f.Orig
	counters := &f.OrigCounters
	for {
		tok, rest = nextField(rest)
		if len(tok) == 0 {
			break
		}
		if tok[0] == '[' {
			switch string(tok) {
			case "[UNREPLIED]":
				f.Status &^= StatusSeenReply
			case "[ASSURED]":
				f.Status |= StatusAssured
			case "[OFFLOAD]":
				f.Status |= StatusOffload
			case "[HW_OFFLOAD]":
				f.Status |= StatusHWOffload
			default:
				// [start=…] [stop=…] from -o ktimestamp and other annotations: ignore.
			}
			continue
		}
		eq := bytes.IndexByte(tok, '=')
		if eq <= 0 {
			return fmt.Errorf("unexpected field %q", tok)
		}
		key, val := tok[:eq], tok[eq+1:]
		var bit uint16
		switch string(key) {
		case "src":
			bit = sSrc
		case "dst":
			bit = sDst
		case "sport", "srckey":
			bit = sSport
		case "dport", "dstkey":
			bit = sDport
		case "type":
			bit = sType
		case "code":
			bit = sCode
		case "id":
			if f.Proto.IsICMP() && seen[1]&sID == 0 {
				bit = sID
			} else {
				v, err := parseUint(val, 32)
				if err != nil {
					return fmt.Errorf("id: %w", err)
				}
				f.ID = uint32(v)
				continue
			}
		}
		if bit != 0 {
			if seen[dir]&bit != 0 {
				if dir == 1 {
					return fmt.Errorf("field %q repeated", key)
				}
				dir = 1
				tup = &f.Reply
				counters = &f.ReplyCounters
			}
			seen[dir] |= bit
			switch bit {
			case sSrc, sDst:
				a, err := parseAddr(val)
				if err != nil {
					return err
				}
				if bit == sSrc {
					tup.Src = a
				} else {
					tup.Dst = a
				}
			case sSport, sDport:
				v, err := parseHexOrDec(val, 16)
				if err != nil {
					return fmt.Errorf("%s: %w", key, err)
				}
				if !f.Proto.HasPorts() && f.Proto != GRE {
					continue // the kernel prints no ports for this protocol
				}
				if bit == sSport {
					tup.SrcPort = uint16(v)
				} else {
					tup.DstPort = uint16(v)
				}
			case sType, sCode:
				v, err := parseUint(val, 8)
				if err != nil {
					return fmt.Errorf("%s: %w", key, err)
				}
				if !f.Proto.IsICMP() {
					continue
				}
				if bit == sType {
					tup.ICMPType = uint8(v)
				} else {
					tup.ICMPCode = uint8(v)
				}
			case sID:
				v, err := parseUint(val, 16)
				if err != nil {
					return fmt.Errorf("id: %w", err)
				}
				tup.ICMPID = uint16(v)
			}
			continue
		}
		switch string(key) {
		case "packets", "bytes":
			v, err := parseUint(val, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if key[0] == 'p' {
				counters.Packets = v
			} else {
				counters.Bytes = v
			}
			f.HasCounters = true
		case "mark":
			v, err := parseUint(val, 32)
			if err != nil {
				return fmt.Errorf("mark: %w", err)
			}
			f.Mark = uint32(v)
		case "zone":
			v, err := parseUint(val, 16)
			if err != nil {
				return fmt.Errorf("zone: %w", err)
			}
			f.Zone = uint16(v)
		case "zone-orig", "zone-reply":
			v, err := parseUint(val, 16)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if key[5] == 'o' {
				f.ZoneOrig = uint16(v)
			} else {
				f.ZoneReply = uint16(v)
			}
			f.HasDirZones = true
		case "use":
			v, err := parseUint(val, 32)
			if err != nil {
				return fmt.Errorf("use: %w", err)
			}
			f.Use = uint32(v)
			haveUse = true
		case "delta-time":
			v, err := parseUint(val, 64)
			if err != nil {
				return fmt.Errorf("delta-time: %w", err)
			}
			f.DeltaTime = v
			f.HasDeltaTime = true
		case "secctx":
			f.SecCtx = string(val)
		case "labels", "helper", "timeout", "portid", "secmark":
			// printed by some conntrack-tools versions and kernels; not used
		default:
			return fmt.Errorf("unknown field %q", key)
		}
	}
	if seen[0]&(sSrc|sDst) != sSrc|sDst {
		return errors.New("truncated entry: original tuple incomplete")
	}
	if dir != 1 || seen[1]&(sSrc|sDst) != sSrc|sDst {
		return errors.New("truncated entry: reply tuple missing")
	}
	if f.Proto.HasPorts() && (seen[0]&(sSport|sDport) != sSport|sDport || seen[1]&(sSport|sDport) != sSport|sDport) {
		return errors.New("truncated entry: ports missing")
	}
	// The kernel and conntrack-tools end every line with use=N: a line
	// without it was cut short.
	if !haveUse {
		return errors.New("truncated entry: no use= field at the end")
	}
	if f.Family == 0 {
		if f.Orig.Src.Is4() {
			f.Family = IPv4
		} else {
			f.Family = IPv6
		}
	}
	if f.NAT() {
		if f.Reply.Src != f.Orig.Dst || (f.Proto.HasPorts() && f.Reply.SrcPort != f.Orig.DstPort) {
			f.Status |= StatusDstNAT | StatusDstNATDone
		}
		if f.Reply.Dst != f.Orig.Src || (f.Proto.HasPorts() && f.Reply.DstPort != f.Orig.SrcPort) {
			f.Status |= StatusSrcNAT | StatusSrcNATDone
		}
	}
	return nil
}

// parseSaveLine parses one `conntrack -R` / `-o save` command line.
func parseSaveLine(line []byte, f *Flow) error {
	*f = Flow{Status: StatusConfirmed}
	rest := line
	var tok []byte
	var haveReplySrc, haveReplyDst, haveReplySport, haveReplyDport, haveProto, haveSrc, haveDst bool
	val := func(name []byte) ([]byte, error) {
		var v []byte
		v, rest = nextField(rest)
		if len(v) == 0 {
			return nil, fmt.Errorf("option %s needs a value", name)
		}
		return v, nil
	}
	for {
		tok, rest = nextField(rest)
		if len(tok) == 0 {
			break
		}
		switch string(tok) {
		case "-I", "-A", "--create", "--add":
			continue
		}
		v, err := val(tok)
		if err != nil {
			return err
		}
		switch string(tok) {
		case "-t", "--timeout":
			n, err := parseUint(v, 32)
			if err != nil {
				return fmt.Errorf("timeout: %w", err)
			}
			f.Timeout = uint32(n)
		case "-u", "--status":
			for _, name := range bytes.Split(v, []byte(",")) {
				b, ok := StatusByName(string(name))
				if !ok {
					return fmt.Errorf("unknown status %q", name)
				}
				f.Status |= b
			}
		case "-s", "--src", "--orig-src", "-d", "--dst", "--orig-dst", "-r", "--reply-src", "-q", "--reply-dst":
			a, err := parseAddr(v)
			if err != nil {
				return err
			}
			switch string(tok) {
			case "-s", "--src", "--orig-src":
				f.Orig.Src, haveSrc = a, true
			case "-d", "--dst", "--orig-dst":
				f.Orig.Dst, haveDst = a, true
			case "-r", "--reply-src":
				f.Reply.Src, haveReplySrc = a, true
			default:
				f.Reply.Dst, haveReplyDst = a, true
			}
		case "-p", "--proto", "--protonum":
			if p, ok := ProtoByName(string(v)); ok {
				f.Proto = p
			} else if n, err := parseUint(v, 8); err == nil {
				f.Proto = Proto(n)
			} else {
				return fmt.Errorf("unknown protocol %q", v)
			}
			haveProto = true
		case "--sport", "--orig-port-src", "--dport", "--orig-port-dst", "--reply-port-src", "--reply-port-dst":
			n, err := parseUint(v, 16)
			if err != nil {
				return fmt.Errorf("%s: %w", tok, err)
			}
			switch string(tok) {
			case "--sport", "--orig-port-src":
				f.Orig.SrcPort = uint16(n)
			case "--dport", "--orig-port-dst":
				f.Orig.DstPort = uint16(n)
			case "--reply-port-src":
				f.Reply.SrcPort, haveReplySport = uint16(n), true
			default:
				f.Reply.DstPort, haveReplyDport = uint16(n), true
			}
		case "--state":
			names := stateNames(f.Proto)
			found := false
			for i, nm := range names {
				if nm == string(v) {
					f.State, found = uint8(i), true
				}
			}
			if !found {
				return fmt.Errorf("unknown state %q", v)
			}
		case "--icmp-type", "--icmp-code", "--icmp-id", "--icmpv6-type", "--icmpv6-code", "--icmpv6-id":
			bits := 8
			if bytes.HasSuffix(tok, []byte("-id")) {
				bits = 16
			}
			n, err := parseUint(v, bits)
			if err != nil {
				return fmt.Errorf("%s: %w", tok, err)
			}
			switch {
			case bytes.HasSuffix(tok, []byte("-type")):
				f.Orig.ICMPType = uint8(n)
			case bytes.HasSuffix(tok, []byte("-code")):
				f.Orig.ICMPCode = uint8(n)
			default:
				f.Orig.ICMPID = uint16(n)
			}
		case "-m", "--mark":
			n, err := parseHexOrDec(v, 32)
			if err != nil {
				return fmt.Errorf("mark: %w", err)
			}
			f.Mark = uint32(n)
		case "-w", "--zone":
			n, err := parseUint(v, 16)
			if err != nil {
				return fmt.Errorf("zone: %w", err)
			}
			f.Zone = uint16(n)
		case "-f", "--family":
			switch string(v) {
			case "ipv4":
				f.Family = IPv4
			case "ipv6":
				f.Family = IPv6
			default:
				return fmt.Errorf("unknown family %q", v)
			}
		default:
			return fmt.Errorf("unknown option %q", tok)
		}
	}
	if !haveSrc || !haveDst || !haveProto {
		return errors.New("entry needs -s, -d and -p")
	}
	if !haveReplySrc {
		f.Reply.Src = f.Orig.Dst
	}
	if !haveReplyDst {
		f.Reply.Dst = f.Orig.Src
	}
	if !haveReplySport {
		f.Reply.SrcPort = f.Orig.DstPort
	}
	if !haveReplyDport {
		f.Reply.DstPort = f.Orig.SrcPort
	}
	if f.Proto.IsICMP() {
		f.Reply.ICMPID = f.Orig.ICMPID
		f.Reply.ICMPType = ICMPReplyType(f.Proto, f.Orig.ICMPType)
		f.Reply.ICMPCode = f.Orig.ICMPCode
	}
	if f.Family == 0 {
		if f.Orig.Src.Is4() {
			f.Family = IPv4
		} else {
			f.Family = IPv6
		}
	}
	// Keep only what the protocol's tuple has, as the kernel does.
	for _, t := range []*Tuple{&f.Orig, &f.Reply} {
		if !f.Proto.HasPorts() && f.Proto != GRE {
			t.SrcPort, t.DstPort = 0, 0
		}
		if !f.Proto.IsICMP() {
			t.ICMPType, t.ICMPCode, t.ICMPID = 0, 0, 0
		}
	}
	return nil
}

// ICMPReplyType returns the reply type of an ICMP/ICMPv6 request type
// (echo 8↔0, timestamp 13↔14, info 15↔16, address mask 17↔18; ICMPv6 echo
// 128↔129, node information 139↔140), or the type itself when it has none.
func ICMPReplyType(p Proto, t uint8) uint8 {
	tab := &icmp4Pair
	if p == ICMPv6 {
		tab = &icmp6Pair
	}
	if v := tab[t]; v != 0 {
		return v - 1
	}
	return t
}

// The ICMP query/reply type pairs, stored +1 so 0 means unpaired.
var (
	icmp4Pair = [256]uint8{8: 0 + 1, 13: 14 + 1, 15: 16 + 1, 17: 18 + 1, 0: 8 + 1, 14: 13 + 1, 16: 15 + 1, 18: 17 + 1}
	icmp6Pair = [256]uint8{128: 129 + 1, 139: 140 + 1, 129: 128 + 1, 140: 139 + 1}
)
