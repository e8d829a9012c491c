// Package host reads what ctdoctor needs to know about a host's connection
// tracking through a root directory: "/" for the live host, or the
// directory a snapshot was extracted to. It reads the conntrack sysctls
// (and the legacy ip_conntrack paths), the hashsize module parameter, kernel
// version, CPUs, memory, the nf_conntrack slab object size, the TCP sysctls
// that interact with conntrack, per-CPU statistics by header name, and the
// kernel log's "table full" events; it discovers network namespaces and
// saves and loads snapshot archives.
//
// Everything that can be missing is optional: a reader records what it
// could not read in [Snapshot.Warnings] and carries on, so a partial report
// is still possible on odd kernels and without privileges.
package host
