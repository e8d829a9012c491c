package host

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

var testKey = []byte("ctdoctor anonymizer test key")

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// anonClass says what an anonymized address must look like.
func checkClass(t *testing.T, in, out netip.Addr) {
	t.Helper()
	if in.Is4() != out.Is4() || in.Is4In6() != out.Is4In6() || in.Is6() != out.Is6() {
		t.Fatalf("%v → %v: family changed", in, out)
	}
	if in.Zone() != out.Zone() {
		t.Fatalf("%v → %v: zone changed", in, out)
	}
	if in.IsLoopback() != out.IsLoopback() || in.IsPrivate() != out.IsPrivate() ||
		in.IsMulticast() != out.IsMulticast() || in.IsUnspecified() != out.IsUnspecified() ||
		in.IsLinkLocalUnicast() != out.IsLinkLocalUnicast() || in.IsGlobalUnicast() != out.IsGlobalUnicast() {
		t.Fatalf("%v → %v: class changed", in, out)
	}
	u := out.Unmap().WithZone("")
	switch {
	case in.IsLoopback() || in.IsUnspecified() || in.IsMulticast() || (in.Unmap().Is4() && in.IsLinkLocalUnicast()):
		if in != out {
			t.Fatalf("%v → %v: should be unchanged", in, out)
		}
	case in.Unmap().Is4() && in.IsPrivate():
		if !mustPrefix("10.0.0.0/8").Contains(u) && !mustPrefix("172.16.0.0/12").Contains(u) && !mustPrefix("192.168.0.0/16").Contains(u) {
			t.Fatalf("%v → %v: private IPv4 outside the private pools", in, out)
		}
	case in.Unmap().Is4():
		if !mustPrefix("198.18.0.0/15").Contains(u) && !mustPrefix("100.64.0.0/10").Contains(u) && !mustPrefix("240.0.0.0/4").Contains(u) {
			t.Fatalf("%v → %v: public IPv4 outside the public pools", in, out)
		}
	case in.IsLinkLocalUnicast():
		if !mustPrefix("fe80::/64").Contains(u) {
			t.Fatalf("%v → %v: not in fe80::/64", in, out)
		}
	case in.IsPrivate():
		if !mustPrefix("fd00::/8").Contains(u) {
			t.Fatalf("%v → %v: not in fd00::/8", in, out)
		}
	default:
		if !mustPrefix("2001:db8::/32").Contains(u) {
			t.Fatalf("%v → %v: not in 2001:db8::/32", in, out)
		}
	}
}

func TestAnonymizerAddrClasses(t *testing.T) {
	a := NewAnonymizer(testKey)
	for _, tc := range []struct {
		in   string
		pool string // "" = unchanged
	}{
		{"127.0.0.1", ""},
		{"127.3.4.5", ""},
		{"::1", ""},
		{"0.0.0.0", ""},
		{"::", ""},
		{"224.0.0.251", ""},
		{"255.255.255.255", ""},
		{"169.254.169.254", ""},
		{"ff02::fb", ""},
		{"10.1.2.3", "10.0.0.0/8"},
		{"172.16.5.4", "10.0.0.0/8"},
		{"192.168.1.1", "10.0.0.0/8"},
		{"8.8.8.8", "198.18.0.0/15"},
		{"100.64.1.1", "198.18.0.0/15"},
		{"198.18.0.1", "198.18.0.0/15"},
		{"fd12:3456::1", "fd00::/8"},
		{"fc00::1", "fd00::/8"},
		{"fe80::21a:2bff:fe3c:4d5e", "fe80::/64"},
		{"2a00:1450:4001::200e", "2001:db8::/32"},
		{"2001:db8::1", "2001:db8::/32"},
		{"::ffff:8.8.8.8", "::ffff:198.18.0.0/111"},
		{"::ffff:10.0.0.1", "::ffff:10.0.0.0/104"},
		{"::ffff:127.0.0.1", ""},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		in := netip.MustParseAddr(tc.in)
		out := a.Addr(in)
		checkClass(t, in, out)
		if tc.pool == "" {
			if out != in {
				t.Errorf("%v → %v, want unchanged", in, out)
			}
			continue
		}
		if out == in {
			t.Errorf("%v unchanged", in)
		}
		if !mustPrefix(tc.pool).Contains(out.WithZone("")) {
			t.Errorf("%v → %v, want in %s", in, out, tc.pool)
		}
		if again := a.Addr(in); again != out {
			t.Errorf("%v → %v then %v", in, out, again)
		}
	}
	if got := a.Addr(netip.Addr{}); got.IsValid() {
		t.Errorf("zero Addr → %v", got)
	}
	// The IPv4-mapped form follows the plain IPv4 one.
	v4 := a.Addr(netip.MustParseAddr("8.8.8.8"))
	mapped := a.Addr(netip.MustParseAddr("::ffff:8.8.8.8"))
	if mapped.Unmap() != v4 {
		t.Errorf("::ffff:8.8.8.8 → %v, 8.8.8.8 → %v", mapped, v4)
	}
}

func TestAnonymizerKeyed(t *testing.T) {
	addrs := []string{"8.8.8.8", "10.0.0.1", "2a00:1450:4001::200e", "fd00::5", "fe80::1"}
	a, b, c := NewAnonymizer(testKey), NewAnonymizer(testKey), NewAnonymizer([]byte("another key"))
	r1, r2 := NewAnonymizer(nil), NewAnonymizer(nil)
	diffKey, diffRand := 0, 0
	for _, s := range addrs {
		in := netip.MustParseAddr(s)
		if a.Addr(in) != b.Addr(in) {
			t.Errorf("same key, %v → %v and %v", in, a.Addr(in), b.Addr(in))
		}
		if a.Addr(in) != c.Addr(in) {
			diffKey++
		}
		if r1.Addr(in) != r2.Addr(in) {
			diffRand++
		}
	}
	if diffKey == 0 || diffRand == 0 {
		t.Errorf("mapping does not depend on the key (%d, %d of %d differ)", diffKey, diffRand, len(addrs))
	}
}

// TestAnonymizerInjective maps a large random set of addresses of every
// class and checks that no two inputs share an output, that every output
// keeps its class, and that the mapping is stable. The 200,000 public IPv4
// addresses overflow 198.18.0.0/15 into 100.64.0.0/10.
func TestAnonymizerInjective(t *testing.T) {
	a := NewAnonymizer(testKey)
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[netip.Addr]bool{}
	var inputs []netip.Addr
	add := func(in netip.Addr) {
		if !seen[in] {
			seen[in] = true
			inputs = append(inputs, in)
		}
	}
	for len(inputs) < 200000 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], rng.Uint32())
		if in := netip.AddrFrom4(b); !in.IsPrivate() && !keep4(in) {
			add(in)
		}
	}
	for range 60000 { // a dense private set: a fifth of 172.16.0.0/12, all of 192.168.0.0/16
		add(netip.AddrFrom4([4]byte{172, byte(16 + rng.IntN(16)), byte(rng.IntN(256)), byte(rng.IntN(256))}))
	}
	for i := range 65536 {
		add(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}))
	}
	for range 30000 {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:], rng.Uint64())
		binary.BigEndian.PutUint64(b[8:], rng.Uint64())
		switch rng.IntN(3) {
		case 0:
			b[0] = 0xfd
		case 1:
			b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7] = 0xfe, 0x80, 0, 0, 0, 0, 0, 0
		default:
			b[0] = 0x20 | b[0]&0x1f // 2000::/3
		}
		add(netip.AddrFrom16(b))
	}
	outs := make(map[netip.Addr]netip.Addr, len(inputs))
	for _, in := range inputs {
		out := a.Addr(in)
		if prev, dup := outs[out]; dup {
			t.Fatalf("%v and %v both map to %v", prev, in, out)
		}
		outs[out] = in
		checkClass(t, in, out)
	}
	for _, in := range inputs[:1000] {
		if outs[a.Addr(in)] != in {
			t.Fatalf("%v maps differently the second time", in)
		}
	}
	spilled := 0
	for out := range outs {
		if mustPrefix("100.64.0.0/10").Contains(out) {
			spilled++
		}
	}
	if spilled == 0 {
		t.Errorf("no output in the overflow pool 100.64.0.0/10: the test no longer exercises it")
	}
}

// TestAnonymizerExhaustedPools drives tiny pools to exhaustion: every
// output stays distinct while there is room, and nothing panics after.
func TestAnonymizerExhaustedPools(t *testing.T) {
	a := NewAnonymizer(testKey)
	a.pub4 = []pool4{{base: 0xc6120000, size: 8}, {base: 0x64400000, size: 8}}
	outs := map[netip.Addr]bool{}
	for i := range 16 {
		out := a.Addr(netip.AddrFrom4([4]byte{8, 8, 8, byte(i)}))
		if outs[out] {
			t.Fatalf("input %d: %v handed out twice", i, out)
		}
		outs[out] = true
	}
	if got := a.Addr(netip.MustParseAddr("9.9.9.9")); !got.Is4() {
		t.Fatalf("after exhaustion: %v", got)
	}
}

// TestAnonymizerFlow checks that the NAT and loopback classifications of
// flows, and every equality among a flow's four addresses, survive.
func TestAnonymizerFlow(t *testing.T) {
	lines := []string{
		// plain
		"ipv4     2 tcp      6 431999 ESTABLISHED src=192.168.1.10 dst=93.184.216.34 sport=51234 dport=443 src=93.184.216.34 dst=192.168.1.10 sport=443 dport=51234 [ASSURED] mark=0 zone=0 use=2",
		// SNAT (masquerade) on a gateway
		"ipv4     2 tcp      6 117 TIME_WAIT src=10.0.0.5 dst=93.184.216.34 sport=40000 dport=80 src=93.184.216.34 dst=203.0.113.7 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2",
		// DNAT to a local upstream
		"ipv4     2 tcp      6 60 SYN_SENT src=198.51.100.20 dst=203.0.113.7 sport=5555 dport=80 [UNREPLIED] src=10.0.0.8 dst=198.51.100.20 sport=8080 dport=5555 mark=0 zone=0 use=2",
		// loopback
		"ipv4     2 tcp      6 100 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=40000 dport=8080 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2",
		// IPv6
		"ipv6     10 udp      17 29 src=2a00:1450:4001:0000:0000:0000:0000:200e dst=fd00:0000:0000:0000:0000:0000:0000:0005 sport=53 dport=40000 src=fd00:0000:0000:0000:0000:0000:0000:0005 dst=2a00:1450:4001:0000:0000:0000:0000:200e sport=40000 dport=53 mark=0 zone=0 use=2",
		"ipv6     10 icmpv6   58 29 src=fe80:0000:0000:0000:021a:2bff:fe3c:4d5e dst=ff02:0000:0000:0000:0000:0000:0000:0001 type=128 code=0 id=1 [UNREPLIED] src=ff02:0000:0000:0000:0000:0000:0000:0001 dst=fe80:0000:0000:0000:021a:2bff:fe3c:4d5e type=129 code=0 id=1 mark=0 zone=0 use=2",
	}
	a := NewAnonymizer(testKey)
	for _, line := range lines {
		var f conntrack.Flow
		if err := conntrack.ParseLine([]byte(line), &f); err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		g := f
		a.Flow(&g)
		checkFlow(t, &f, &g)
		// The anonymized flow formats and parses back to itself.
		var back conntrack.Flow
		if err := conntrack.ParseLine(g.AppendProc(nil), &back); err != nil {
			t.Fatalf("reparse %q: %v", g.String(), err)
		}
		if back.String() != g.String() {
			t.Errorf("round trip:\n got %s\nwant %s", back.String(), g.String())
		}
	}
}

func checkFlow(t *testing.T, f, g *conntrack.Flow) {
	t.Helper()
	if f.NAT() != g.NAT() || f.Loopback() != g.Loopback() {
		t.Errorf("NAT %v→%v loopback %v→%v:\n%s\n%s", f.NAT(), g.NAT(), f.Loopback(), g.Loopback(), f, g)
	}
	before := []netip.Addr{f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst}
	after := []netip.Addr{g.Orig.Src, g.Orig.Dst, g.Reply.Src, g.Reply.Dst}
	for i := range before {
		for j := range before {
			if (before[i] == before[j]) != (after[i] == after[j]) {
				t.Errorf("address %d = address %d changed:\n%s\n%s", i, j, f, g)
			}
		}
	}
	if f.Orig.SrcPort != g.Orig.SrcPort || f.Reply.DstPort != g.Reply.DstPort {
		t.Errorf("ports changed:\n%s\n%s", f, g)
	}
}

// TestAnonymizerFlowProperty checks random flows drawn from a small set of
// addresses, so that equalities (NAT or not) are frequent.
func TestAnonymizerFlowProperty(t *testing.T) {
	pool := []netip.Addr{}
	for _, s := range []string{"127.0.0.1", "10.0.0.1", "10.0.0.2", "192.168.0.1", "8.8.8.8", "203.0.113.7", "1.1.1.1", "100.64.0.1"} {
		pool = append(pool, netip.MustParseAddr(s))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	a := NewAnonymizer(nil)
	for range 20000 {
		pick := func() netip.Addr { return pool[rng.IntN(len(pool))] }
		f := conntrack.Flow{Family: conntrack.Family(2), Proto: conntrack.Proto(6), Status: conntrack.StatusSeenReply}
		f.Orig = conntrack.Tuple{Src: pick(), Dst: pick(), SrcPort: uint16(rng.IntN(65536)), DstPort: 80}
		f.Reply = conntrack.Tuple{Src: f.Orig.Dst, Dst: f.Orig.Src, SrcPort: 80, DstPort: f.Orig.SrcPort}
		if rng.IntN(2) == 0 {
			f.Reply.Dst = pick()
		}
		if rng.IntN(2) == 0 {
			f.Reply.Src = pick()
		}
		g := f
		a.Flow(&g)
		checkFlow(t, &f, &g)
	}
}

func TestAnonymizerHostname(t *testing.T) {
	a := NewAnonymizer(testKey)
	h := a.Hostname("web-01.prod.example.com")
	if !regexp.MustCompile(`^host-[0-9a-f]{8}$`).MatchString(h) {
		t.Errorf("Hostname → %q", h)
	}
	if a.Hostname("WEB-01.prod.example.com") != h {
		t.Errorf("hostname not case-insensitive")
	}
	if a.Hostname("web-02") == h {
		t.Errorf("two hostnames map to %q", h)
	}
	if a.Hostname("") != "" {
		t.Errorf("empty hostname changed")
	}
}

func TestAnonymizerText(t *testing.T) {
	a := NewAnonymizer(testKey)
	m := func(s string) string { return a.Addr(netip.MustParseAddr(s)).String() }
	mx := func(s string) string { return a.Addr(netip.MustParseAddr(s)).StringExpanded() }
	masked := func(s string, bits int) string {
		p, _ := a.Addr(netip.MustParseAddr(s)).Prefix(bits)
		return p.String()
	}
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"Linux version 6.18.44-fc-v669 (gcc 14.2.1)", "Linux version 6.18.44-fc-v669 (gcc 14.2.1)"},
		{"Linux 6.18.44", "Linux 6.18.44"},
		{"08:54:58", "08:54:58"},
		{"[ 1234.567890] nf_conntrack: nf_conntrack: table full, dropping packet",
			"[ 1234.567890] nf_conntrack: nf_conntrack: table full, dropping packet"},
		{"2025-01-02T08:54:58.123456+00:00 kernel: x", "2025-01-02T08:54:58.123456+00:00 kernel: x"},
		{"12:34:56.789 1.2.3.4.5 v1.2.3.4 300.1.1.1 010.0.0.1 1.2.3.4a 1.2.3", "12:34:56.789 1.2.3.4.5 v1.2.3.4 300.1.1.1 010.0.0.1 1.2.3.4a 1.2.3"},
		{"IN=eth0 OUT= MAC=00:16:3e:aa:bb:cc:00:16:3e:dd:ee:ff:08:00 SRC=203.0.113.9 DST=10.0.0.5 LEN=60",
			"IN=eth0 OUT= MAC=00:16:3e:aa:bb:cc:00:16:3e:dd:ee:ff:08:00 SRC=" + m("203.0.113.9") + " DST=" + m("10.0.0.5") + " LEN=60"},
		{"mac 00:11:22:33:44:55 counters [0:0] std::string", "mac 00:11:22:33:44:55 counters [0:0] std::string"},
		{"connect to 8.8.8.8:53 failed", "connect to " + m("8.8.8.8") + ":53 failed"},
		{"peer [2a00:1450:4001::200e]:443", "peer [" + m("2a00:1450:4001::200e") + "]:443"},
		{"the server is 8.8.4.4.", "the server is " + m("8.8.4.4") + "."},
		{"lo 127.0.0.1 ::1 0.0.0.0 :: 224.0.0.1", "lo 127.0.0.1 ::1 0.0.0.0 :: 224.0.0.1"},
		{"ip saddr 10.0.0.0/8 notrack", "ip saddr 10.0.0.0/8 notrack"},
		{"ip6 saddr fe80::/10 accept; ip saddr 0.0.0.0/0", "ip6 saddr fe80::/10 accept; ip saddr 0.0.0.0/0"},
		{"-A INPUT -s 203.0.113.0/24 -j ACCEPT", "-A INPUT -s " + masked("203.0.113.0", 24) + " -j ACCEPT"},
		{"-s 10.20.30.0/24", "-s " + masked("10.20.30.0", 24)},
		{"ip6 saddr 2a00:1450:4001::/48", "ip6 saddr " + masked("2a00:1450:4001::", 48)},
		{"dst 8.8.8.8/999", "dst " + m("8.8.8.8") + "/999"},
		{"src=2001:0db8:0000:0000:0000:0000:0000:0001 x", "src=" + mx("2001:db8::1") + " x"},
		{"fe80::1%eth0 up", m("fe80::1") + "%eth0 up"},
		{"::ffff:8.8.8.8", m("::ffff:8.8.8.8")},
		{"a 2001:db8::1: b", "a " + m("2001:db8::1") + ": b"},
		{"multi\n1.1.1.1\n1.1.1.1", "multi\n" + m("1.1.1.1") + "\n" + m("1.1.1.1")},
	} {
		if got := a.Text(tc.in); got != tc.want {
			t.Errorf("Text(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
	if !strings.HasPrefix(m("8.8.8.8"), "198.1") {
		t.Errorf("8.8.8.8 → %s", m("8.8.8.8"))
	}
}

func FuzzAnonymizerText(f *testing.F) {
	for _, s := range []string{"SRC=1.2.3.4 DST=fe80::1%eth0", "2001:0db8:0000:0000:0000:0000:0000:0001/64", "6.18.44 08:54:58", "1.2.3.4:80/24", "::ffff:1.2.3.4."} {
		f.Add(s)
	}
	a := NewAnonymizer(testKey)
	f.Fuzz(func(t *testing.T, s string) {
		out := a.Text(s)
		if !strings.ContainsAny(s, ".:") && out != s {
			t.Fatalf("Text(%q) = %q: changed text without an address", s, out)
		}
	})
}
