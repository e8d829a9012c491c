package analyze

import "fmt"

func ruleInsertFailed(c *ruleContext) *Finding {
	s := c.r.Stats
	if !s.Available || (s.InsertFailed == 0 && s.ClashResolve == 0) {
		return nil
	}
	sev := Info
	ifRate, haveRate := rate(c.r, "insert_failed")
	if s.InsertFailed > 0 {
		sev = Warning
	}
	summary := fmt.Sprintf("%d insert_failed, %d clashes resolved: connection races at confirm time (typical of SNAT/DNS in containers), not a full table", s.InsertFailed, s.ClashResolve)
	ev := map[string]any{"insert_failed": s.InsertFailed, "clash_resolve": s.ClashResolve, "drop": s.Drop, "nat_entries": c.r.Breakdown.NAT}
	if haveRate {
		ev["insert_failed_per_second"] = round3(ifRate)
	}
	return &Finding{ID: "insert-failed-races", Severity: sev, Summary: summary, Evidence: ev,
		Explanation: "insert_failed is NOT the table-full counter (that is `drop`). It counts packets whose new entry could not be " +
			"inserted when the first packet left the host: usually two connections that ended up with the same tuple at the same " +
			"time — SNAT/MASQUERADE picking the same source port for two containers, or parallel DNS queries over UDP from one socket " +
			"(A and AAAA). The second packet is dropped and the application waits for a retry (the well-known 5-second DNS delay " +
			"on Kubernetes). clash_resolve counts the races the kernel resolved without a drop. Raising nf_conntrack_max does not help.",
		Fixes: []string{
			"# make SNAT pick fully random source ports: iptables -t nat -A POSTROUTING -o UPLINK -j MASQUERADE --random-fully (nft: masquerade random,fully-random), with UPLINK the interface the traffic leaves by",
			"# DNS in containers: 'options single-request-reopen' (glibc) or use TCP / a node-local DNS cache",
			"# a kernel ≥ 5.x resolves more UDP clashes by itself (clash_resolve)",
		}}
}

func ruleChainTooLong(c *ruleContext) *Finding {
	s := c.r.Stats
	if !s.Available || s.ChainTooLong == 0 {
		return nil
	}
	t := c.r.Table
	fixes := []string{c.bucketsNote()}
	if fixes[0] == "" {
		fixes = []string{"# the hash already has a bucket per allowed entry: chains this long mean colliding tuples, a hash-flooding attack (or an unkeyed hash on a very old kernel)",
			"# find the sources that fill the table (top sources above) and drop or rate-limit them at the edge"}
	}
	return &Finding{ID: "chain-too-long", Severity: Warning,
		Summary:  fmt.Sprintf("%d inserts refused because a hash chain was too long", s.ChainTooLong),
		Evidence: map[string]any{"chaintoolong": s.ChainTooLong, "insert_failed": s.InsertFailed, "buckets": t.Buckets, "count": t.Count},
		Explanation: "The kernel refuses to add an entry to a hash bucket whose chain is already longer than a random limit " +
			"(about 50–80 entries) and drops the packet. With a keyed hash this only happens when the table has far too few " +
			"buckets for its entries, or when someone crafts colliding tuples (a hash-flooding attack).",
		Fixes: fixes, ChangesAt: len(fixes), Changes: c.sizingChanges(false)}
}

func ruleHashChainsLong(c *ruleContext) *Finding {
	t := c.r.Table
	if t.Buckets <= 0 || t.Count < 0 {
		return nil
	}
	// Each entry is hashed twice (original and reply), so the average
	// chain holds 2 × count / buckets nodes.
	chain := 2 * float64(t.Count) / float64(t.Buckets)
	if chain < 4 {
		return nil
	}
	sev := Info
	if chain >= 8 {
		sev = Warning
	}
	fix := c.bucketsNote()
	if fix == "" {
		return nil // more buckets than the proposal: nothing to change
	}
	return &Finding{ID: "hash-chains-long", Severity: sev,
		Summary:  fmt.Sprintf("hash chains average %.1f nodes (%d entries in %d buckets): every packet's lookup walks them", chain, t.Count, t.Buckets),
		Evidence: map[string]any{"count": t.Count, "buckets": t.Buckets, "entries_per_bucket": round3(t.EntriesPerBucket), "avg_chain_nodes": round3(chain), "search_restart": c.r.Stats.SearchRestart},
		Explanation: "Entries live in a hash table of `buckets` chains, and every entry is hashed twice (once per direction). " +
			"Each packet's lookup walks one chain, so long chains cost CPU on every packet. The older advice of keeping the " +
			"count under 2/3 of the buckets aims at the same thing; since 5.15 the kernel's own default is one bucket per entry.",
		Fixes: []string{fix}, ChangesAt: 1, Changes: c.sizingChanges(false)}
}

func ruleMaxBucketsRatio(c *ruleContext) *Finding {
	t := c.r.Table
	if t.Buckets <= 0 || t.Max <= 0 {
		return nil
	}
	ratio := float64(t.Max) / float64(t.Buckets)
	if ratio <= 1.0001 {
		return nil
	}
	sev := Info
	if ratio >= 4 {
		sev = Warning
	}
	fix := c.bucketsNote()
	if fix == "" {
		return nil
	}
	reason := "a limit raised without the hash size (or the hash size given at boot, which makes max 8 × buckets)"
	switch {
	case c.snap.Settings.Legacy:
		reason = "the ip_conntrack default (max = 8 × buckets)"
	case !c.kv.AtLeast(5, 15) && c.kv.Known():
		reason = "the pre-5.15 default (max = 4 × buckets), or a limit raised without the hash size"
	}
	return &Finding{ID: "max-buckets-ratio", Severity: sev,
		Summary: fmt.Sprintf("max is %.0f× the bucket count (%d / %d): a full table has chains of ~%.0f nodes", ratio, t.Max, t.Buckets, 2*ratio),
		Evidence: map[string]any{"max": t.Max, "buckets": t.Buckets, "ratio": round3(ratio), "kernel": c.snap.Kernel,
			"default_buckets": t.DefaultBuckets, "default_max": t.DefaultMax},
		Explanation: "This is " + reason + ". Since Linux 5.15 the kernel sizes the hash with one bucket per allowed entry, " +
			"so a full table keeps chains at about 2 nodes. A higher ratio saves 8 bytes per bucket but makes every lookup " +
			"walk longer chains when the table fills up. The common advice 'hashsize = max / 4' (or max / 8) dates from kernels " +
			"that sized the table that way; it is not a requirement.",
		Fixes: []string{fix}, ChangesAt: 1, Changes: c.sizingChanges(false)}
}

func ruleStatsUnavailable(c *ruleContext) *Finding {
	if c.r.Stats.Available || c.snap.Source == "file" {
		return nil // a bare listing has no counters by nature
	}
	return &Finding{ID: "stats-unavailable", Severity: Info,
		Summary:  "conntrack counters (drop, early_drop, insert_failed…) could not be read",
		Evidence: map[string]any{"proc_stats": c.snap.Settings.ProcStats},
		Explanation: "The per-CPU counters live in /proc/net/stat/nf_conntrack, which kernels built without " +
			"CONFIG_NF_CONNTRACK_PROCFS (Ubuntu and others) do not have; ctdoctor then asks over netlink, which needs " +
			"CAP_NET_ADMIN. Without them the diagnosis cannot tell drops from SNAT races.",
		Fixes: []string{"# run ctdoctor as root (CAP_NET_ADMIN) to read the counters over netlink", "# or read the same counters by hand: conntrack -S"}}
}
