package sim

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ctdoctor/ctdoctor/engine"
)

// ReplayOptions tune [ReplayPCAP].
type ReplayOptions struct {
	// Hook is where every packet enters the tracker. Use engine.Output for
	// a capture taken on the host that generated the traffic, loopback
	// captures included (the kernel tracks a locally generated packet once,
	// at OUTPUT, and the entry stays with it when it loops back in), and
	// engine.Prerouting (the zero value) for traffic the host received or
	// forwards.
	Hook engine.Hook
	// Iface is the packets' interface name (for NOTRACK rules); "" takes
	// the interface name a pcapng file records, if any.
	Iface string
	// Progress, when set, is called with the number of records read every
	// 10,000 records and once at the end.
	Progress func(packets int)
}

// ReplaySchema is the version string of the JSON a replay writes
// (simulate --pcap -o json): replay statistics and the final table's
// counts, or the replay statistics and ctdoctor's report of the table.
const ReplaySchema = "ctdoctor.replay/v1"

// ReplayStats summarise a replay.
type ReplayStats struct {
	Packets int `json:"packets"` // records read
	Decoded int `json:"decoded"` // records tracked (decoded as IP packets)
	Skipped int `json:"skipped"` // records not tracked: not IP, not decodable, later fragments
	// First and Last are the first and last records' capture times;
	// Duration is the time between them (in JSON, duration_seconds).
	First    time.Time     `json:"first"`
	Last     time.Time     `json:"last"`
	Duration time.Duration `json:"-"`
	// Verdicts counts the tracked packets by verdict: the ctinfo name
	// ("NEW", "ESTABLISHED,REPLY", "INVALID", …) or "DROP".
	Verdicts map[string]int `json:"verdicts"`
	// SkipReasons counts the skipped records by reason ("non-IP ethertype
	// 0x0806", "truncated TCP header", "IPv4 non-first fragment", …).
	SkipReasons map[string]int `json:"skip_reasons"`
}

// MarshalJSON writes the stats with snake_case keys, as the rest of the
// simulation JSON, and the duration in seconds.
func (s ReplayStats) MarshalJSON() ([]byte, error) {
	type plain ReplayStats
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{plain(s), s.Duration.Seconds()})
}

// pcap and pcapng magic numbers, as the first four bytes of a file.
var (
	magicPcap = [][4]byte{
		{0xd4, 0xc3, 0xb2, 0xa1}, {0xa1, 0xb2, 0xc3, 0xd4}, // microseconds, LE / BE
		{0x4d, 0x3c, 0xb2, 0xa1}, {0xa1, 0xb2, 0x3c, 0x4d}, // nanoseconds
	}
	magicPcapng = [4]byte{0x0a, 0x0d, 0x0d, 0x0a}
)

// Link types ReplayPCAP reads (LINKTYPE_* numbers of the pcap format).
const (
	linkNull      = 0   // BSD loopback: 4-byte address family, host byte order
	linkEthernet  = 1   // Ethernet, 802.1Q / 802.1ad tags included
	linkRawDLT12  = 12  // raw IP, as DLT_RAW on most systems
	linkRawDLT14  = 14  // raw IP, as DLT_RAW on OpenBSD
	linkRaw       = 101 // raw IP
	linkLoop      = 108 // OpenBSD loopback: 4-byte address family, network byte order
	linkLinuxSLL  = 113 // Linux cooked capture v1
	linkIPv4      = 228 // raw IPv4
	linkIPv6      = 229 // raw IPv6
	linkLinuxSLL2 = 276 // Linux cooked capture v2
)

func supportedLink(lt int) bool {
	switch lt {
	case linkNull, linkEthernet, linkRawDLT12, linkRawDLT14, linkRaw, linkLoop,
		linkLinuxSLL, linkIPv4, linkIPv6, linkLinuxSLL2:
		return true
	}
	return false
}

// packetSource is what ReplayPCAP needs of a pcap or pcapng reader.
type packetSource interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ReplayPCAP reads a capture (pcap or pcapng, optionally gzip-compressed;
// the magic number decides) and tracks its packets with t in order. Before
// each record it moves clock to the record's capture time, the first record
// being at the clock's reading when the replay starts; a clock never moves
// back, so records out of time order are tracked at the latest time seen.
//
// Link types: Ethernet (with 802.1Q/802.1ad VLAN tags), raw IP (101, and
// the DLT_RAW values 12 and 14; 228, 229), Linux cooked captures SLL (113)
// and SLL2 (276), BSD loopback (0, 108). Another link type is an error.
// Records that are not IPv4/IPv6 or do not decode (see [engine.DecodeIP];
// later fragments are skipped, as the kernel reassembles before tracking)
// are counted in Skipped and SkipReasons. A file cut in the middle of a
// record ends the replay with the statistics so far and an error saying so.
// A nil clock is left alone.
func ReplayPCAP(r io.Reader, t *engine.Tracker, clock *engine.VirtualClock, opt ReplayOptions) (ReplayStats, error) {
	st := ReplayStats{Verdicts: map[string]int{}, SkipReasons: map[string]int{}}
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(4)
	if len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, zerr := gzip.NewReader(br)
		if zerr != nil {
			return st, fmt.Errorf("reading gzip-compressed capture: %w", zerr)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 1<<16)
		magic, err = br.Peek(4)
	}
	if err != nil {
		if len(magic) == 0 && err == io.EOF {
			return st, errors.New("not a pcap or pcapng file: the input is empty")
		}
		return st, fmt.Errorf("not a pcap or pcapng file: %d-byte input: %w", len(magic), err)
	}

	var src packetSource
	var ng *pcapgo.NgReader
	var pcapLink int // the link type of a pcap file
	format := "pcap"
	switch m := [4]byte(magic); {
	case m == magicPcapng:
		format = "pcapng"
		ng, err = pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return st, fmt.Errorf("reading pcapng section header: %w", err)
		}
		src = ng
	case m == magicPcap[0] || m == magicPcap[1] || m == magicPcap[2] || m == magicPcap[3]:
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return st, fmt.Errorf("reading pcap file header: %w", err)
		}
		if pcapLink = int(pr.LinkType()); !supportedLink(pcapLink) {
			return st, unsupportedLink(pcapLink)
		}
		src = pr
	default:
		return st, fmt.Errorf("not a pcap or pcapng file: magic number % x", magic)
	}

	// Interface names and link types of a pcapng file, by interface index.
	type ngIface struct {
		link int
		name string
	}
	var ngIfaces []ngIface
	linkOf := func(ci *gopacket.CaptureInfo) (int, string, error) {
		if ng == nil {
			return pcapLink, opt.Iface, nil
		}
		i := ci.InterfaceIndex
		for len(ngIfaces) <= i {
			in, err := ng.Interface(len(ngIfaces))
			if err != nil {
				return 0, "", err
			}
			ngIfaces = append(ngIfaces, ngIface{link: int(in.LinkType), name: in.Name})
		}
		name := opt.Iface
		if name == "" {
			name = ngIfaces[i].name
		}
		return ngIfaces[i].link, name, nil
	}

	var start time.Duration
	if clock != nil {
		start = clock.Now()
	}
	var p engine.Packet
	for {
		data, ci, err := src.ZeroCopyReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			replayFinish(&st, opt)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return st, fmt.Errorf("%s file truncated: %d packets read, then the file ends in the middle of a record: %w",
					format, st.Packets, err)
			}
			return st, fmt.Errorf("reading %s record %d: %w", format, st.Packets+1, err)
		}
		st.Packets++
		if st.Packets == 1 {
			st.First = ci.Timestamp
		}
		st.Last = ci.Timestamp
		if clock != nil {
			clock.Set(start + ci.Timestamp.Sub(st.First))
		}
		if opt.Progress != nil && st.Packets%10000 == 0 {
			opt.Progress(st.Packets)
		}
		lt, iface, err := linkOf(&ci)
		if err != nil {
			replayFinish(&st, opt)
			return st, fmt.Errorf("reading %s record %d: %w", format, st.Packets, err)
		}
		ip, reason := stripLink(lt, data)
		if reason == "" {
			if err := engine.DecodeIP(ip, &p); err != nil {
				var de *engine.DecodeError
				if errors.As(err, &de) {
					reason = de.Reason
				} else {
					reason = err.Error()
				}
			}
		}
		if reason != "" {
			if !supportedLink(lt) {
				replayFinish(&st, opt)
				return st, fmt.Errorf("%s record %d: %w", format, st.Packets, unsupportedLink(lt))
			}
			st.Skipped++
			st.SkipReasons[reason]++
			continue
		}
		p.Hook, p.Iface = opt.Hook, iface
		v := t.Process(&p)
		st.Decoded++
		if v.Drop {
			st.Verdicts["DROP"]++
		} else {
			st.Verdicts[v.CtInfo.String()]++
		}
	}
	replayFinish(&st, opt)
	return st, nil
}

func replayFinish(st *ReplayStats, opt ReplayOptions) {
	st.Duration = st.Last.Sub(st.First)
	if opt.Progress != nil {
		opt.Progress(st.Packets)
	}
}

func unsupportedLink(lt int) error {
	return fmt.Errorf("unsupported link type %d: ReplayPCAP reads Ethernet (1), raw IP (101, 12, 14, 228, 229), "+
		"Linux cooked SLL (113) and SLL2 (276), and BSD loopback (0, 108) captures", lt)
}

// stripLink returns the IP packet inside a link-layer frame, or why there
// is none. An unsupported link type gives the reason "unsupported link type".
func stripLink(lt int, b []byte) (ip []byte, reason string) {
	switch lt {
	case linkRaw, linkRawDLT12, linkRawDLT14, linkIPv4, linkIPv6:
		return b, ""
	case linkEthernet:
		if len(b) < 14 {
			return nil, "truncated Ethernet header"
		}
		return etherPayload(binary.BigEndian.Uint16(b[12:]), b[14:])
	case linkLinuxSLL:
		if len(b) < 16 {
			return nil, "truncated Linux cooked (SLL) header"
		}
		if hatype := binary.BigEndian.Uint16(b[2:]); hatype == 824 { // ARPHRD_NETLINK
			return nil, "netlink message"
		}
		return etherPayload(binary.BigEndian.Uint16(b[14:]), b[16:])
	case linkLinuxSLL2:
		if len(b) < 20 {
			return nil, "truncated Linux cooked (SLL2) header"
		}
		if hatype := binary.BigEndian.Uint16(b[8:]); hatype == 824 {
			return nil, "netlink message"
		}
		return etherPayload(binary.BigEndian.Uint16(b[0:]), b[20:])
	case linkNull, linkLoop:
		if len(b) < 4 {
			return nil, "truncated loopback header"
		}
		fam := binary.BigEndian.Uint32(b)
		if lt == linkNull && fam > 0xffff {
			fam = binary.LittleEndian.Uint32(b) // written in the capturing host's byte order
		}
		switch fam {
		case 2: // AF_INET everywhere
		case 10, 24, 28, 30: // AF_INET6: Linux, NetBSD/OpenBSD, FreeBSD, Darwin
		default:
			return nil, "loopback address family " + strconv.Itoa(int(fam))
		}
		return b[4:], ""
	}
	return nil, "unsupported link type"
}

// etherPayload skips VLAN tags and returns the IP packet of an Ethernet
// type / payload pair.
func etherPayload(et uint16, b []byte) ([]byte, string) {
	for et == 0x8100 || et == 0x88a8 || et == 0x9100 {
		if len(b) < 4 {
			return nil, "truncated VLAN tag"
		}
		et, b = binary.BigEndian.Uint16(b[2:]), b[4:]
	}
	switch et {
	case 0x0800, 0x86dd:
		return b, ""
	}
	if et <= 1500 {
		return nil, "802.3 frame (not IP)"
	}
	return nil, fmt.Sprintf("non-IP ethertype 0x%04x", et)
}
