package ctnetlink

// Values from the uapi headers linux/netfilter/nfnetlink.h and
// linux/netfilter/nfnetlink_conntrack.h (stable kernel ABI).
const (
	nfnlSubsysCTNetlink = 1 // NFNL_SUBSYS_CTNETLINK
	nfnetlinkV0         = 0 // NFNETLINK_V0

	// enum cntl_msg_types
	ipctnlMsgCtGet         = 1
	ipctnlMsgCtGetStatsCPU = 4
	ipctnlMsgCtGetStats    = 5

	nlaFNested    = 1 << 15 // NLA_F_NESTED
	nlaFNetByteOr = 1 << 14 // NLA_F_NET_BYTEORDER
	nlaTypeMask   = ^uint16(nlaFNested | nlaFNetByteOr)

	nlmsgHdrLen = 16 // sizeof(struct nlmsghdr)
	nfgenHdrLen = 4  // sizeof(struct nfgenmsg)
	nlaHdrLen   = 4  // sizeof(struct nlattr)

	nlmFDumpIntr = 0x10 // NLM_F_DUMP_INTR
)

// enum ctattr_type
const (
	ctaTupleOrig     = 1
	ctaTupleReply    = 2
	ctaStatus        = 3
	ctaProtoinfo     = 4
	ctaTimeout       = 7
	ctaMark          = 8
	ctaCountersOrig  = 9
	ctaCountersReply = 10
	ctaUse           = 11
	ctaID            = 12
	ctaZone          = 18
	ctaSecctx        = 19
	ctaTimestamp     = 20
	ctaLabels        = 22
)

// enum ctattr_tuple
const (
	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaTupleZone  = 3
)

// enum ctattr_ip
const (
	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4
)

// enum ctattr_l4proto
const (
	ctaProtoNum        = 1
	ctaProtoSrcPort    = 2
	ctaProtoDstPort    = 3
	ctaProtoICMPID     = 4
	ctaProtoICMPType   = 5
	ctaProtoICMPCode   = 6
	ctaProtoICMPv6ID   = 7
	ctaProtoICMPv6Type = 8
	ctaProtoICMPv6Code = 9
)

// enum ctattr_counters
const (
	ctaCountersPackets   = 1
	ctaCountersBytes     = 2
	ctaCounters32Packets = 3
	ctaCounters32Bytes   = 4
)

// enum ctattr_tstamp
const ctaTimestampStart = 1

// enum ctattr_protoinfo and the per-protocol state attributes, which are all
// attribute 1 in their nests (CTA_PROTOINFO_{TCP,DCCP,SCTP}_STATE).
const (
	ctaProtoinfoTCP   = 1
	ctaProtoinfoDCCP  = 2
	ctaProtoinfoSCTP  = 3
	ctaProtoinfoState = 1
)

// enum ctattr_secctx
const ctaSecctxName = 1

// enum ctattr_stats_global
const (
	ctaStatsGlobalEntries    = 1
	ctaStatsGlobalMaxEntries = 2
)
