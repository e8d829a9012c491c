package engine

import (
	"io"
	"sync"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// Tracker is a connection-tracking table with the kernel's semantics. Safe
// for concurrent use.
type Tracker struct {
	mu    sync.Mutex
	clock Clock
}

// New returns an empty tracker.
func New(cfg Config) (*Tracker, error) { panic("engine: not implemented yet") }

// Process tracks one packet and returns the verdict.
func (t *Tracker) Process(p *Packet) Verdict { panic("engine: not implemented yet") }

// Count returns the number of entries (the netns count).
func (t *Tracker) Count() int { panic("engine: not implemented yet") }

// Counts returns the entries by protocol and state.
func (t *Tracker) Counts() Counts { panic("engine: not implemented yet") }

// Settings returns every setting's current value.
func (t *Tracker) Settings() map[string]int64 { panic("engine: not implemented yet") }

// Set changes one setting at run time, as writing the sysctl would.
func (t *Tracker) Set(name string, v int64) error { panic("engine: not implemented yet") }

// Stats returns the per-CPU statistics counters.
func (t *Tracker) Stats() []conntrack.Stats { panic("engine: not implemented yet") }

// TotalStats returns the statistics summed over CPUs.
func (t *Tracker) TotalStats() conntrack.Stats { return conntrack.SumStats(t.Stats()) }

// Flows calls fn for every live entry; it is a [conntrack.Source].
func (t *Tracker) Flows(fn func(*conntrack.Flow) error) error { panic("engine: not implemented yet") }

// Lookup finds the entry the packet would match, without changing it, and
// fills f with it.
func (t *Tracker) Lookup(p *Packet, f *conntrack.Flow) (Direction, bool) {
	panic("engine: not implemented yet")
}

// Flush deletes every entry and returns how many there were.
func (t *Tracker) Flush() int { panic("engine: not implemented yet") }

// WriteProc writes the table as /proc/net/nf_conntrack would.
func (t *Tracker) WriteProc(w io.Writer) error { panic("engine: not implemented yet") }
