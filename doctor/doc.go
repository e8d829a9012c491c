// Package doctor is ctdoctor's diagnosis pipeline as a library: it reads a
// host (the live one, a namespace of it, a root directory such as a fixture
// or a mounted image, a snapshot archive, a bare entry listing, or a host
// already read by the caller such as a simulated table), streams its
// entries once through an [analyze.Accumulator], takes the second counter
// sample for rates, and returns the [analyze.Report]. The CLI, the planner,
// an exporter and the simulator's --report all call [Diagnose] (or [Run]
// when they also need what was read).
//
// # Error contract
//
// Diagnose returns an error only when there is nothing to diagnose:
//
//   - the Input is inconsistent (two sources at once, a namespace for a
//     non-live source): the error wraps [ErrInput];
//   - the source cannot be opened: a missing or unreadable listing file,
//     a snapshot archive that is not one (or is unsafe to extract), a root
//     that is not a directory or holds no host (wrapping
//     [host.ErrNotHostRoot]), a namespace that does not exist;
//   - a listing (file or reader) with lines but not one conntrack entry
//     among them: the error wraps [conntrack.ErrNoEntries] and the first
//     line's *conntrack.LineError, with the listing's name;
//   - the context is cancelled: the error wraps ctx.Err().
//
// Every error is wrapped with the context it arose in; errors.Is and
// errors.As see through it. Everything else that cannot be read becomes a
// Warnings line of the report, which is still returned: counters without
// CAP_NET_ADMIN, the kernel log without CAP_SYSLOG, the entries when the
// listing is not permitted or not available, a listing cut short (the
// breakdown then covers the entries read before the cut). A host without
// connection tracking at all is not an error either: its report is the
// healthy verdict of [analyze.NoConntrack]. Neither is an empty listing:
// its verdict is [analyze.Unknown] ("nothing to diagnose"), since an empty
// table and a capture that failed look the same.
//
// The report's Listing (nil only for a host without connection tracking)
// says whether the entries were read and, when
// they were not (or not all of them), why: skipped on request, not
// permitted, no listing available, broke off, or an empty listing. Lines of
// a listing that are no entry are skipped, counted there, and named in the
// verdict.
//
// # Fixes
//
// A finding's fixes are prose from package analyze (comment lines) and its
// changes as data (analyze.Change). Diagnose plans them as [Plan] does
// (package tune, with the namespace's real firewall ruleset on the live
// host) and puts each step's title and exact commands into the fixes of
// the finding it comes from: every command a report prints is one the plan
// runs, with its namespace prefix. Options.NoPlan skips this for callers
// that do not show the fixes: no ruleset is read and nothing is written
// to a temporary directory.
//
// Diagnose writes nothing to stdout or stderr; progress goes to the
// optional Options.Progress callback.
package doctor
