package sim

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// CompareSchema is the version string of the JSON comparison (v2: the
// runs are [Schema] v2 results; the diff counts drops of every cause).
const CompareSchema = "ctdoctor.simulation-compare/v2"

// Comparison is one scenario run twice with the same seed: with the current
// settings and with proposed changes.
type Comparison struct {
	Changes  map[string]int64 // the proposed settings (canonical names)
	Current  *Result
	Proposed *Result
}

// Compare pairs two runs of a scenario; changes are the settings that
// differ in the proposed one.
func Compare(current, proposed *Result, changes map[string]int64) *Comparison {
	return &Comparison{Changes: changes, Current: current, Proposed: proposed}
}

// ProposedText lists the changes as name=value, sorted.
func (c *Comparison) ProposedText() string {
	keys := slices.Sorted(maps.Keys(c.Changes))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.Changes[k]))
	}
	return strings.Join(parts, ",")
}

// Diff is what changes between the two runs.
type Diff struct {
	Verdict string `json:"verdict"`
	// Peak, Steady, Drop, EarlyDrop, InsertFailed, DroppedPackets and
	// Failed are proposed − current.
	Peak           int   `json:"peak"`
	Steady         int   `json:"steady"`
	Drop           int64 `json:"drop"`
	EarlyDrop      int64 `json:"early_drop"`
	InsertFailed   int64 `json:"insert_failed"`
	DroppedPackets int64 `json:"dropped_packets"`
	Failed         int64 `json:"failed_connections"`
	// FirstDrop* are the two runs' first-drop times (null: never).
	FirstDropCurrent  *float64 `json:"first_drop_current_seconds"`
	FirstDropProposed *float64 `json:"first_drop_proposed_seconds"`
}

// Diff returns the differences between the runs.
func (c *Comparison) Diff() Diff {
	a, b := c.Current, c.Proposed
	d := Diff{Peak: b.Peak - a.Peak, Steady: b.Steady.Total - a.Steady.Total,
		Drop: int64(b.Drop) - int64(a.Drop), EarlyDrop: int64(b.EarlyDrop) - int64(a.EarlyDrop),
		InsertFailed:   int64(b.InsertFailed) - int64(a.InsertFailed),
		DroppedPackets: int64(b.DroppedPackets) - int64(a.DroppedPackets),
		Failed:         int64(b.Failed) - int64(a.Failed)}
	d.FirstDropCurrent, d.FirstDropProposed = optSeconds(a.FirstDrop), optSeconds(b.FirstDrop)
	switch {
	case a.Dropped() && !b.Dropped():
		of := "the max"
		if b.Max != a.Max {
			of = "the new max"
		}
		d.Verdict = fmt.Sprintf("the change prevents the drops: %s → 0 packets dropped, peak %s → %s (%s of %s)",
			Thousands(int64(a.DroppedPackets)), Thousands(int64(a.Peak)), Thousands(int64(b.Peak)), percent(float64(b.Peak)/float64(max(b.Max, 1))), of)
	case a.Dropped() && b.Dropped():
		when := "at the same time"
		switch {
		case b.FirstDrop > a.FirstDrop:
			when = fmt.Sprintf("%s later (%s instead of %s)", (b.FirstDrop - a.FirstDrop).Round(1e9), clockTime(b.FirstDrop), clockTime(a.FirstDrop))
		case b.FirstDrop < a.FirstDrop:
			when = fmt.Sprintf("%s earlier (%s instead of %s)", (a.FirstDrop - b.FirstDrop).Round(1e9), clockTime(b.FirstDrop), clockTime(a.FirstDrop))
		}
		still := "still full"
		if b.Cause() == CauseChainTooLong {
			still = "still dropping (hash chains too long)"
		}
		d.Verdict = fmt.Sprintf("%s: drops start %s; %s → %s packets dropped", still, when, Thousands(int64(a.DroppedPackets)), Thousands(int64(b.DroppedPackets)))
	case !a.Dropped() && b.Dropped():
		what := "makes the table fill"
		if b.Cause() == CauseChainTooLong {
			what = "makes hash chains too long"
		}
		d.Verdict = fmt.Sprintf("the change %s: drops start at %s (%s packets)", what, clockTime(b.FirstDrop), Thousands(int64(b.DroppedPackets)))
	default:
		neither := "neither run fills the table"
		if a.Full() || b.Full() {
			neither = "neither run drops packets"
		}
		d.Verdict = fmt.Sprintf("%s: peak %s (%s) → %s (%s)", neither, Thousands(int64(a.Peak)),
			percent(float64(a.Peak)/float64(max(a.Max, 1))), Thousands(int64(b.Peak)), percent(float64(b.Peak)/float64(max(b.Max, 1))))
	}
	return d
}

// MarshalJSON writes the comparison (schema [CompareSchema]).
func (c *Comparison) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Schema   string           `json:"schema"`
		Changes  map[string]int64 `json:"changes"`
		Diff     Diff             `json:"diff"`
		Current  *Result          `json:"current"`
		Proposed *Result          `json:"proposed"`
	}{CompareSchema, c.Changes, c.Diff(), c.Current, c.Proposed})
}
