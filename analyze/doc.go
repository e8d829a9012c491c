// Package analyze turns what was read from a host into a [Report]: one pass
// over the entries builds a [Breakdown] (protocols, TCP states, status
// flags, loopback, NAT, top sources, destinations and services, zones,
// marks and remaining lifetimes) in memory that does not grow with the
// table; the sizing arithmetic compares count, max, buckets and memory with
// the kernel's defaults for the host; and a catalogue of rules turns the
// numbers into [Finding]s with evidence, a plain explanation and fixes.
package analyze
