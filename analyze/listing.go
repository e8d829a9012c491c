package analyze

import "github.com/ctdoctor/ctdoctor/conntrack"

// Unknown is the verdict level of a report that had nothing to diagnose:
// an empty listing, where an empty table and a capture that failed look
// the same.
const Unknown = "unknown"

// Why the table's entries were not listed, or not all of them (Listing.Reason).
const (
	// ListingSkipped: not asked for (ctdoctor --no-entries).
	ListingSkipped = "skipped"
	// ListingPermission: not permitted; listing needs root (CAP_NET_ADMIN
	// for the netlink dump, root for /proc/net/nf_conntrack).
	ListingPermission = "permission"
	// ListingUnavailable: there is no listing to read: no
	// /proc/net/nf_conntrack and no netlink dump (a kernel built without
	// CONFIG_NF_CONNTRACK_PROCFS read offline, a snapshot taken without its
	// entries).
	ListingUnavailable = "unavailable"
	// ListingFailed: the listing broke off; the breakdown covers the
	// entries read before it.
	ListingFailed = "failed"
	// ListingEmpty: a text listing (ctdoctor --from) held no entries and
	// nothing says the table was empty: it may be a capture that failed.
	ListingEmpty = "empty"
)

// Listing says whether the table's entries were read and, when they were
// not (or not all of them), why: so that "no entries" is never mistaken
// for an empty table.
type Listing struct {
	// Read is true when the entries were listed (Breakdown counts them),
	// also when the listing broke off (Reason "failed") or was empty.
	Read bool `json:"read"`
	// Reason is one of the Listing* reasons, "" for a complete listing.
	// Detail is set with every Reason.
	Reason string `json:"reason,omitempty"`
	// Detail says it in a sentence, for people.
	Detail string `json:"detail,omitempty"`
	// Text is what the reader made of a text listing (ctdoctor --from):
	// lines read, entries, lines skipped as no entry.
	Text *conntrack.ReadStats `json:"text,omitempty"`
}
