// Package ctnetlink is a small, fast, streaming client for the kernel's
// conntrack netlink interface (ctnetlink, NETLINK_NETFILTER), built directly
// on golang.org/x/sys/unix.
//
// [Conn.Dump] streams the whole table of a network namespace to a callback
// as [conntrack.Flow] values without allocating per entry: the kernel's
// 32 KiB dump batches are received on one goroutine while the previous
// batch is decoded on the caller's, so decoding hides behind the kernel's
// own work. [Conn.Stats] returns the per-CPU counters `conntrack -S` shows
// and [Conn.Count] the entry count and global limit (`conntrack -C`).
// [OpenEvents] subscribes to the conntrack events (new, update, destroy:
// `conntrack -E`), read in batches by [Events.Read], which reports events
// the kernel dropped as [ErrEventsLost].
//
// A Conn is bound to the network namespace it was opened in. [Open] with a
// namespace path creates the socket on a dedicated, locked OS thread that
// has joined the namespace and is then discarded, so no goroutine of the
// caller ever runs in another namespace.
//
// Every operation needs CAP_NET_ADMIN in the namespace's user namespace;
// without it errors wrap [ErrPermission]. Where the kernel lacks ctnetlink
// they wrap [ErrUnsupported]. Receives time out after [DefaultTimeout]
// (see [Conn.SetTimeout]), so no call can hang.
package ctnetlink
