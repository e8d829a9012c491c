package engine_test

import (
	"math"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// TestClockJump: a clock that jumps far ahead (a capture whose timestamps
// leap by decades — found by FuzzReplayPCAP — or a simulation told to skip
// years) expires every entry at once, as the kernel would after that long,
// instead of turning the expiry wheel one ~1 s tick at a time (3 billion
// turns for a century). Jumps up to the end of the clock's range neither
// hang nor panic, and the tracker keeps working after them.
func TestClockJump(t *testing.T) {
	for _, jump := range []time.Duration{
		40 * 24 * time.Hour,        // beyond the longest timeout (24.8 days)
		100 * 365 * 24 * time.Hour, // a century
		time.Duration(math.MaxInt64),
	} {
		done := make(chan string, 1)
		go func() {
			clock := &engine.VirtualClock{}
			tr, err := engine.New(engine.Config{Clock: clock, Seed: 1})
			if err != nil {
				done <- err.Error()
				return
			}
			syn := func(port uint16) engine.Packet {
				return engine.Packet{Family: conntrack.IPv4, Proto: conntrack.TCP,
					Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
					SrcPort: port, DstPort: 80, Flags: engine.SYN, Seq: 1, Window: 65535}
			}
			for i := range 100 {
				p := syn(uint16(1000 + i))
				tr.Process(&p)
				clock.Advance(10 * time.Millisecond)
			}
			if n := tr.Count(); n != 100 {
				done <- "before the jump: " + strconv.Itoa(n) + " entries, want 100"
				return
			}
			clock.Set(jump)
			if n := tr.Count(); n != 0 {
				done <- "after the jump: " + strconv.Itoa(n) + " entries, want 0"
				return
			}
			p := syn(2000)
			if v := tr.Process(&p); v.CtInfo != conntrack.CtNew || tr.Count() != 1 {
				done <- "after the jump a new connection gets " + v.CtInfo.String() + ", count " + strconv.Itoa(tr.Count())
				return
			}
			done <- ""
		}()
		select {
		case msg := <-done:
			if msg != "" {
				t.Errorf("jump %v: %s", jump, msg)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("jump %v: the tracker is still expiring entries after 20 s", jump)
		}
	}
}
