// Package analyze turns what was read from a host into a [Report]: one pass
// over the entries builds a [Breakdown] (protocols, TCP states, status
// flags, loopback, NAT, top sources, destinations and services, zones,
// marks and remaining lifetimes) in memory that does not grow with the
// table; the sizing arithmetic compares count, max, buckets and memory with
// the kernel's defaults for the host; and a catalogue of rules turns the
// numbers into [Finding]s with evidence, a plain explanation and fixes.
//
// A finding's fixes are advice in prose (comment lines); every change it
// proposes is data ([Change]: conntrack sysctls, the hash size, NOTRACK,
// any other sysctl), which the planner (package tune) turns into commands
// for the host's actual kernel, files, firewall and namespace. Package
// doctor puts those commands into the fixes: no command is written here.
package analyze
