package host

import "time"

// Label says whose events these are, for a person: the namespace's name,
// "gone; number since reused by NAME" for an earlier namespace with the
// same inode number, or "" when unknown.
func (n NetNSCount) Label() string {
	switch {
	case n.Gone && n.ReusedBy != "":
		return "gone; number since reused by " + n.ReusedBy
	case n.Gone:
		return "gone"
	}
	return n.Name
}

// NetNSEvents is what a kernel log summary says about one namespace.
type NetNSEvents struct {
	// Own counts the events that are this namespace's: those naming its
	// inode since it was created and, on kernels that name the other
	// namespaces in the message, the initial namespace's unnamed ones.
	Own int
	// Unnamed counts the events that name no namespace on a log where no
	// event names one (older kernels): anyone's, this namespace's included.
	Unnamed int
	// Before counts the events of this inode number from before this
	// namespace was created: an earlier, gone namespace's.
	Before int
	// Other counts the other namespaces' events.
	Other int
	// First and Last span the Own and Unnamed events (zero if unknown).
	First, Last time.Time
}

// EventsOf sorts the summary's events by whether they are ns's. Besides
// the Gone entries the parser splits off, an entry of ns's inode whose
// events all precede ns.Created (a summary that was not split, e.g. from
// an older snapshot) counts as Before.
func (l LogSummary) EventsOf(ns NetNS) NetNSEvents {
	var e NetNSEvents
	named := 0
	for _, n := range l.ByNetNS {
		named += n.Count
		switch {
		case ns.Inode == 0 || n.Inode != ns.Inode:
			e.Other += n.Count
		case n.Gone || (!ns.Created.IsZero() && !n.Last.IsZero() && n.Last.Before(ns.Created)):
			e.Before += n.Count
		default:
			e.Own += n.Count
			span(&e.First, &e.Last, n.First)
			span(&e.First, &e.Last, n.Last)
		}
	}
	unnamed := l.TableFullEvents - named
	if unnamed <= 0 {
		return e
	}
	first, last := l.NoNetNSFirst, l.NoNetNSLast
	if l.NoNetNS == 0 {
		first, last = l.First, l.Last // a summary from before NoNetNS: the whole log's span
	}
	switch {
	case named > 0 && ns.Init:
		// This kernel names the other namespaces: the unnamed events are
		// the initial namespace's.
		e.Own += unnamed
	case named > 0:
		e.Other += unnamed
		return e
	default:
		e.Unnamed += unnamed
	}
	span(&e.First, &e.Last, first)
	span(&e.First, &e.Last, last)
	return e
}
