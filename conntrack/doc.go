// Package conntrack is the vocabulary every part of ctdoctor shares: a
// tracked connection ([Flow]) with its two [Tuple]s, the layer-3 and layer-4
// protocol numbers, per-protocol states, [Status] bits and ctinfo values, and
// the text formats the kernel and conntrack-tools print for them.
//
// Three line formats are read by [ParseLine] and a [Reader]:
//
//   - /proc/net/nf_conntrack (and `conntrack -L -o extended`):
//     "ipv4     2 tcp      6 431999 ESTABLISHED src=… [ASSURED] mark=0 zone=0 use=2"
//   - `conntrack -L` (and the legacy /proc/net/ip_conntrack):
//     "tcp      6 431999 ESTABLISHED src=… [ASSURED] mark=0 use=1"
//   - `conntrack -R` / `conntrack -L -o save` commands:
//     "-I -t 431999 -u ASSURED -s 10.0.0.1 -d 10.0.0.2 -p tcp --sport 1 --dport 2 --state ESTABLISHED"
//
// A Flow formats back to the kernel's /proc line with [Flow.AppendProc].
package conntrack
