package watch

import (
	"fmt"
	"time"

	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

// Options tune a watch. The zero Options are the defaults.
type Options struct {
	// Interval is the time between refreshes: the counters and rates are
	// read and a new frame is made (default 1 s).
	Interval time.Duration
	// ListEvery is the time between full listings of the table in events
	// mode, each of which rebuilds the counts and makes a new diagnosis
	// (default 30 s). In polling mode every refresh lists the table, and
	// a diagnosis is made every ListEvery.
	ListEvery time.Duration
	// Polling lists the whole table at every refresh instead of following
	// the kernel's conntrack events.
	Polling bool
	// PollFor is how long a namespace whose events were lost (ENOBUFS) is
	// polled before events are tried again (default 60 s).
	PollFor time.Duration
	// TopK is the number of rows of the top sources, destinations and
	// services, besides "other" (default 10).
	TopK int
	// EventBuffer is the event socket's receive buffer in bytes (default
	// ctnetlink.DefaultEventBuffer); a burst larger than it loses events.
	EventBuffer int
	// GrowthWindow is the span of recent counts the growth rate (and
	// Frame.TimeToFull) is fitted over (default 30 s).
	GrowthWindow time.Duration
	// NoReport skips the diagnosis of each listing (Frame.Report stays nil).
	NoReport bool
	// NoKernelLog does not follow the kernel log (Frame.KernelLog stays
	// empty).
	NoKernelLog bool
	// MaxNetNS bounds the namespaces watched with all (default 256); the
	// others are left out.
	MaxNetNS int
	// Discover is the time between two searches for namespaces that came
	// (with all) or came back (a name given that was deleted) (default 5 s).
	Discover time.Duration
	// KeepGone is how long a namespace found with all stays listed, marked
	// Gone, after it was deleted (default 60 s). A namespace given by
	// name stays listed.
	KeepGone time.Duration
}

// Defaults.
const (
	DefaultInterval  = time.Second
	DefaultListEvery = 30 * time.Second
	DefaultPollFor   = 60 * time.Second
	DefaultTopK      = 10
)

// withDefaults fills the zero fields and checks the others.
func (o Options) withDefaults() (Options, error) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Interval", o.Interval}, {"ListEvery", o.ListEvery}, {"PollFor", o.PollFor}, {"GrowthWindow", o.GrowthWindow},
		{"Discover", o.Discover}, {"KeepGone", o.KeepGone}} {
		if d.v < 0 {
			return o, fmt.Errorf("watch: %s %v is negative", d.name, d.v)
		}
	}
	if o.TopK < 0 || o.EventBuffer < 0 || o.MaxNetNS < 0 {
		return o, fmt.Errorf("watch: TopK %d, EventBuffer %d, MaxNetNS %d: none may be negative", o.TopK, o.EventBuffer, o.MaxNetNS)
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Interval, DefaultInterval)
	def(&o.ListEvery, DefaultListEvery)
	def(&o.PollFor, DefaultPollFor)
	def(&o.GrowthWindow, 30*time.Second)
	def(&o.Discover, 5*time.Second)
	def(&o.KeepGone, 60*time.Second)
	if o.TopK == 0 {
		o.TopK = DefaultTopK
	}
	if o.EventBuffer == 0 {
		o.EventBuffer = ctnetlink.DefaultEventBuffer
	}
	if o.MaxNetNS == 0 {
		o.MaxNetNS = 256
	}
	return o, nil
}
