package analyze

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// TestTopAddressesKeepTheLargest feeds addresses whose entry counts all
// differ (address i of 40 has i entries, IPv4 and IPv6 mixed), one entry
// per address per round so the counts grow side by side and the
// accumulator's maps hold them in no particular order: the top-N bound
// then sees large counts arrive after its list is full. The top sources
// (and, in a second table, the top destinations) must be exactly the N
// largest, largest first, whatever N is.
func TestTopAddressesKeepTheLargest(t *testing.T) {
	const addrs = 40
	addr := func(base byte, i int) netip.Addr {
		if i%3 == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: base, 15: byte(i)})
		}
		return netip.AddrFrom4([4]byte{10, base, 0, byte(i)})
	}
	flow := func(src, dst netip.Addr, port uint16) conntrack.Flow {
		fam := conntrack.IPv4
		if src.Is6() {
			fam = conntrack.IPv6
		}
		return conntrack.Flow{Family: fam, Proto: conntrack.UDP, Timeout: 30,
			Orig:  conntrack.Tuple{Src: src, Dst: dst, SrcPort: port, DstPort: 53},
			Reply: conntrack.Tuple{Src: dst, Dst: src, SrcPort: 53, DstPort: port}}
	}
	peer := func(a netip.Addr) netip.Addr { // a fixed peer of the same family
		if a.Is6() {
			return netip.MustParseAddr("2001:db8::ffff")
		}
		return netip.MustParseAddr("10.255.0.1")
	}
	var bySrc, byDst []conntrack.Flow
	for r := 1; r <= addrs; r++ {
		for i := r; i <= addrs; i++ { // address i gets an entry in rounds 1..i
			a := addr(1, i)
			bySrc = append(bySrc, flow(a, peer(a), uint16(1000+r)))
			byDst = append(byDst, flow(peer(a), a, uint16(1000+r)))
		}
	}
	// The oracle: the count of address i is i, by construction.
	ranked := func(n int) []AddrCount {
		var out []AddrCount
		for i := addrs; i >= 1 && len(out) < n; i-- {
			out = append(out, AddrCount{addr(1, i).String(), int64(i)})
		}
		return out
	}
	for _, n := range []int{1, 3, 10, 25, addrs, addrs + 5} {
		for _, c := range []struct {
			what  string
			flows []conntrack.Flow
			top   func(*Breakdown) []AddrCount
		}{
			{"sources", bySrc, func(b *Breakdown) []AddrCount { return b.TopSources }},
			{"destinations", byDst, func(b *Breakdown) []AddrCount { return b.TopDestinations }},
		} {
			acc := NewAccumulator()
			acc.TopN = n
			for i := range c.flows {
				acc.Add(&c.flows[i])
			}
			b := acc.Breakdown()
			// The fixed peers are on the other side of every entry: this
			// table holds only the 40 addresses.
			if got, want := c.top(&b), ranked(n); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("top %d %s:\n got %v\nwant %v", n, c.what, got, want)
			}
		}
	}
}
