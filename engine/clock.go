package engine

import (
	"sync/atomic"
	"time"
)

// Clock tells the tracker the time, as a duration since an arbitrary,
// fixed start. Timeouts, the UDP stream rule and garbage collection run
// on it.
type Clock interface {
	Now() time.Duration
}

// VirtualClock is a clock that moves only when told to: simulations and
// pcap replays drive it from their own timeline. Safe for concurrent use.
// The zero value reads 0.
type VirtualClock struct{ ns atomic.Int64 }

// Now returns the clock's time.
func (c *VirtualClock) Now() time.Duration { return time.Duration(c.ns.Load()) }

// Set moves the clock to t. Moving it backwards is ignored.
func (c *VirtualClock) Set(t time.Duration) {
	for {
		old := c.ns.Load()
		if int64(t) <= old || c.ns.CompareAndSwap(old, int64(t)) {
			return
		}
	}
}

// Advance moves the clock forward by d.
func (c *VirtualClock) Advance(d time.Duration) {
	if d > 0 {
		c.ns.Add(int64(d))
	}
}

type realClock struct{ start time.Time }

func (c realClock) Now() time.Duration { return time.Since(c.start) }

// RealClock returns a clock that follows the machine's monotonic time.
func RealClock() Clock { return realClock{start: time.Now()} }
