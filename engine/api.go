package engine

import (
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Config configures a [Tracker].
type Config struct {
	// Settings override [DefaultSettings], keyed by sysctl name (any
	// spelling [CanonicalSetting] accepts).
	Settings map[string]int64
	// Seed keys the tuple hash; the same seed gives the same bucket layout,
	// chain-limit draws and so the same early drops. 0 picks a random key,
	// as the kernel does at boot.
	Seed uint64
	// Clock drives timeouts; nil means [RealClock].
	Clock Clock
	// NoTrack are raw-table rules evaluated before tracking, in order.
	NoTrack []NoTrackRule
	// CPUs is the number of per-CPU statistics lines (default 1); a packet's
	// CPU field picks the line.
	CPUs int
	// ChainLimit is the longest hash chain an insert may join. 0 draws it
	// per insert as the kernel does (50 + a random 0..29); -1 disables it.
	ChainLimit int
}

// Counts are the table's entries by protocol and state, kept up to date on
// every change (so reading them is cheap even with millions of entries).
type Counts struct {
	Total     int
	TCP       [conntrack.TCPStateCount]int // by TCP state
	UDP       int
	ICMP      int // ICMP and ICMPv6
	Other     int // generic (every other protocol)
	Assured   int
	Unreplied int
}

// compile-time check: a Tracker's Flows is a conntrack.Source.
var _ conntrack.Source = (*Tracker)(nil).Flows

// Now returns the tracker's clock reading.
func (t *Tracker) Now() time.Duration { return t.clock.Now() }
