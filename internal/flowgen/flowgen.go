// Package flowgen writes synthetic connection-tracking tables: lines in the
// format `conntrack -R` (conntrack-tools' restore) loads, one entry each,
// the same lines for the same size and seed on every machine and Go
// version.
//
// The table looks like a busy web host's ([DefaultSpec]): mostly TCP, half
// of it TIME_WAIT, towards a few well-known ports; DNS over UDP, some of it
// unanswered; a little ICMP echo. A few client addresses send far more than
// the rest. Every timeout is an hour or more, so nothing expires while a
// test or a benchmark reads the table.
//
// Typical use, as root, in a namespace of one's own:
//
//	ip netns add ctbench && ip -n ctbench link set lo up
//	go run ./internal/flowgen/cmd/genflows 250000 > /tmp/flows.txt
//	ip netns exec ctbench conntrack -R /tmp/flows.txt
//	ip netns exec ctbench conntrack -C        # 250000
//	ip netns del ctbench
//
// A namespace counts its own entries but is limited by the global
// nf_conntrack_max, so n must stay below it.
package flowgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/netip"
	"os"
	"strconv"
)

// Weighted is a value drawn with probability Weight / (sum of weights).
type Weighted[T any] struct {
	Value  T
	Weight int
}

// Spec describes the mix of a synthetic table. Shares are probabilities
// per entry; the lines are drawn independently, so a table of n entries
// matches them within sampling error (about 1/sqrt(n)).
type Spec struct {
	// TCP and UDP are the shares of TCP and UDP entries; the rest
	// (1 - TCP - UDP) are ICMP echo entries.
	TCP, UDP float64
	// TCPStates are the TCP states and their weights.
	TCPStates []Weighted[string]
	// TCPPorts are the TCP destination ports and their weights.
	TCPPorts []Weighted[uint16]
	// UDPPort is the destination port of every UDP entry.
	UDPPort uint16
	// UDPUnreplied is the share of UDP entries that never saw a reply.
	UDPUnreplied float64
	// HeavySources client addresses, 10.1.0.1 to 10.1.0.HeavySources,
	// send HeavyShare of all entries between them; the other clients are
	// spread over 10.2.0.1–10.40.255.254, where two entries rarely share
	// an address.
	HeavySources int
	HeavyShare   float64
	// Servers is the number of destination addresses, 10.200.0.1 upwards.
	Servers int
	// MinTimeout is the smallest timeout in seconds; each entry's timeout
	// is uniform between MinTimeout and MaxTimeout, or, for ESTABLISHED
	// entries, MaxEstablished.
	MinTimeout, MaxTimeout, MaxEstablished int
}

// DefaultSpec is the mix [Write] produces:
//
//   - 80 % TCP: TIME_WAIT 50, ESTABLISHED 30, SYN_SENT 4, CLOSE_WAIT 4,
//     CLOSE 4, SYN_RECV 3, FIN_WAIT 3, LAST_ACK 2 (weights, out of 100);
//     destination ports 443 35, 80 30, 8080 20, 3306 5, 6379 5, 22 5.
//     Entries in ESTABLISHED and the closing states after it (FIN_WAIT,
//     CLOSE_WAIT, LAST_ACK, TIME_WAIT) are assured and replied, SYN_RECV
//     is replied, SYN_SENT and CLOSE are unreplied.
//   - 17 % UDP to port 53, 40 % of them unreplied, the others assured.
//   - 3 % ICMP echo requests (type 8 code 0), replied.
//   - 30 % of all entries come from 10 heavy clients (10.1.0.1–10.1.0.10),
//     the rest from random addresses in 10.2.0.0–10.40.255.255; every
//     entry goes to one of 4 servers, 10.200.0.1–10.200.0.4.
//   - Timeouts uniform in 3600–7200 s, 3600–432000 s for ESTABLISHED.
var DefaultSpec = Spec{
	TCP: 0.80, UDP: 0.17,
	TCPStates: []Weighted[string]{
		{"TIME_WAIT", 50}, {"ESTABLISHED", 30}, {"SYN_SENT", 4}, {"CLOSE_WAIT", 4},
		{"CLOSE", 4}, {"SYN_RECV", 3}, {"FIN_WAIT", 3}, {"LAST_ACK", 2},
	},
	TCPPorts:     []Weighted[uint16]{{443, 35}, {80, 30}, {8080, 20}, {3306, 5}, {6379, 5}, {22, 5}},
	UDPPort:      53,
	UDPUnreplied: 0.40,
	HeavySources: 10, HeavyShare: 0.30,
	Servers:    4,
	MinTimeout: 3600, MaxTimeout: 7200, MaxEstablished: 432000,
}

// Entry is one synthetic entry.
type Entry struct {
	Proto    string // "tcp", "udp" or "icmp"
	Src, Dst netip.Addr
	// SrcPort and DstPort are zero for ICMP.
	SrcPort, DstPort uint16
	// ICMPID is the echo identifier of an ICMP entry.
	ICMPID uint16
	// State is the TCP state ("" for UDP and ICMP).
	State string
	// Replied: the entry has seen a reply; Assured: and is assured.
	Replied, Assured bool
	// Timeout is the seconds left.
	Timeout int
}

// Status is the entry's `conntrack -u` status list.
func (e *Entry) Status() string {
	switch {
	case e.Assured:
		return "SEEN_REPLY,ASSURED"
	case e.Replied:
		return "SEEN_REPLY"
	}
	return "UNSET"
}

// AppendLine appends the entry as a `conntrack -R` line, newline included.
func (e *Entry) AppendLine(b []byte) []byte {
	b = append(b, "-I -t "...)
	b = strconv.AppendInt(b, int64(e.Timeout), 10)
	b = append(b, " -u "...)
	b = append(b, e.Status()...)
	b = append(b, " -s "...)
	b = e.Src.AppendTo(b)
	b = append(b, " -d "...)
	b = e.Dst.AppendTo(b)
	b = append(b, " -p "...)
	b = append(b, e.Proto...)
	if e.Proto == "icmp" {
		b = append(b, " --icmp-type 8 --icmp-code 0 --icmp-id "...)
		b = strconv.AppendUint(b, uint64(e.ICMPID), 10)
	} else {
		b = append(b, " --sport "...)
		b = strconv.AppendUint(b, uint64(e.SrcPort), 10)
		b = append(b, " --dport "...)
		b = strconv.AppendUint(b, uint64(e.DstPort), 10)
	}
	if e.State != "" {
		b = append(b, " --state "...)
		b = append(b, e.State...)
	}
	return append(b, '\n')
}

// rng is SplitMix64: small, fast, and fixed here, so a seed gives the
// same table whatever the Go version's math/rand does.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// intn returns a number in [0, n).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// between returns a number in [lo, hi].
func (r *rng) between(lo, hi int) int { return lo + r.intn(hi-lo+1) }

// float returns a number in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

func pick[T any](r *rng, items []Weighted[T], total int) T {
	x := r.intn(total)
	for _, it := range items {
		if x < it.Weight {
			return it.Value
		}
		x -= it.Weight
	}
	return items[len(items)-1].Value
}

func total[T any](items []Weighted[T]) int {
	t := 0
	for _, it := range items {
		t += it.Weight
	}
	return t
}

// Check reports what is wrong with a spec.
func (s *Spec) Check() error {
	switch {
	case s.TCP < 0 || s.UDP < 0 || s.TCP+s.UDP > 1:
		return fmt.Errorf("flowgen: shares TCP %v and UDP %v must be ≥ 0 and add up to at most 1", s.TCP, s.UDP)
	case s.TCP > 0 && (len(s.TCPStates) == 0 || total(s.TCPStates) <= 0 || len(s.TCPPorts) == 0 || total(s.TCPPorts) <= 0):
		return errors.New("flowgen: TCP entries need states and ports with positive weights")
	case s.HeavyShare < 0 || s.HeavyShare > 1 || (s.HeavyShare > 0 && (s.HeavySources < 1 || s.HeavySources > 254)):
		return fmt.Errorf("flowgen: %d heavy sources with share %v: want 1–254 sources and a share in [0, 1]", s.HeavySources, s.HeavyShare)
	case s.Servers < 1 || s.Servers > 254:
		return fmt.Errorf("flowgen: %d servers: want 1–254", s.Servers)
	case s.MinTimeout < 1 || s.MaxTimeout < s.MinTimeout || s.MaxEstablished < s.MinTimeout:
		return fmt.Errorf("flowgen: timeouts %d–%d (ESTABLISHED up to %d): want 1 ≤ min ≤ max", s.MinTimeout, s.MaxTimeout, s.MaxEstablished)
	}
	for _, w := range s.TCPStates {
		if w.Weight < 0 {
			return fmt.Errorf("flowgen: negative weight for state %s", w.Value)
		}
	}
	for _, w := range s.TCPPorts {
		if w.Weight < 0 {
			return fmt.Errorf("flowgen: negative weight for port %d", w.Value)
		}
	}
	return nil
}

// key identifies an entry's original tuple; two entries never share one
// (the kernel would refuse the second).
type key struct {
	proto            byte
	src, dst         netip.Addr
	sport, dport, id uint16
}

// maxEntries bounds n: distinct tuples are drawn at random, and the
// kernel's limit is far below this anyway.
const maxEntries = 1 << 24

// Each calls fn with n distinct entries drawn for seed, in order.
func (s *Spec) Each(n int, seed uint64, fn func(*Entry) error) error {
	if n < 0 || n > maxEntries {
		return fmt.Errorf("flowgen: %d entries: want 0–%d", n, maxEntries)
	}
	if err := s.Check(); err != nil {
		return err
	}
	r := &rng{s: seed}
	stTotal, portTotal := total(s.TCPStates), total(s.TCPPorts)
	used := make(map[key]struct{}, n)
	var e Entry
	for made := 0; made < n; {
		e = Entry{}
		p := r.float()
		if r.float() < s.HeavyShare {
			e.Src = netip.AddrFrom4([4]byte{10, 1, 0, byte(r.between(1, s.HeavySources))})
		} else {
			e.Src = netip.AddrFrom4([4]byte{10, byte(r.between(2, 40)), byte(r.intn(256)), byte(r.between(1, 254))})
		}
		e.Dst = netip.AddrFrom4([4]byte{10, 200, 0, byte(r.between(1, s.Servers))})
		e.Timeout = r.between(s.MinTimeout, s.MaxTimeout)
		k := key{src: e.Src, dst: e.Dst}
		switch {
		case p < s.TCP:
			e.Proto, k.proto = "tcp", 6
			e.SrcPort = uint16(r.between(1024, 65535))
			e.DstPort = pick(r, s.TCPPorts, portTotal)
			e.State = pick(r, s.TCPStates, stTotal)
			switch e.State {
			case "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT":
				e.Replied, e.Assured = true, true
			case "SYN_RECV":
				e.Replied = true
			}
			if e.State == "ESTABLISHED" {
				e.Timeout = r.between(s.MinTimeout, s.MaxEstablished)
			}
		case p < s.TCP+s.UDP:
			e.Proto, k.proto = "udp", 17
			e.SrcPort = uint16(r.between(1024, 65535))
			e.DstPort = s.UDPPort
			if r.float() >= s.UDPUnreplied {
				e.Replied, e.Assured = true, true
			}
		default:
			e.Proto, k.proto = "icmp", 1
			e.ICMPID = uint16(r.between(1, 65535))
			e.Replied = true
		}
		k.sport, k.dport, k.id = e.SrcPort, e.DstPort, e.ICMPID
		if _, dup := used[k]; dup {
			continue // draw again: the kernel holds one entry per tuple
		}
		used[k] = struct{}{}
		if err := fn(&e); err != nil {
			return err
		}
		made++
	}
	return nil
}

// Write writes n entries of the spec, drawn for seed, to w.
func (s *Spec) Write(w io.Writer, n int, seed uint64) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	err := s.Each(n, seed, func(e *Entry) error {
		line = e.AppendLine(line[:0])
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// Write writes n entries of [DefaultSpec], drawn for seed, to w.
func Write(w io.Writer, n int, seed uint64) error { return DefaultSpec.Write(w, n, seed) }

// WriteFile writes n entries of [DefaultSpec], drawn for seed, to a new
// file at path (for `conntrack -R path`).
func WriteFile(path string, n int, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("flowgen: %w", err)
	}
	if err := Write(f, n, seed); err != nil {
		f.Close()
		return fmt.Errorf("flowgen: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("flowgen: write %s: %w", path, err)
	}
	return nil
}
