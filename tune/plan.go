package tune

import (
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// PlanSchema is the version string of a plan's JSON form (ctdoctor plan -o json),
// the contract `ctdoctor apply` takes.
const PlanSchema = "ctdoctor.plan/v1"

// Plan is an ordered list of changes to one host (one network namespace,
// plus global settings when the plan was made with them), each motivated by
// a finding, with everything needed to apply, verify and undo it.
type Plan struct {
	Schema    string    `json:"schema"`
	ID        string    `json:"id"`         // random, assigned when the plan is made
	CreatedAt time.Time `json:"created_at"` // when it was made
	Host      PlanHost  `json:"host"`
	// Global says whether steps with scope "global" are included (and so
	// will be applied); per-namespace plans list them apart otherwise.
	Global bool   `json:"global"`
	Steps  []Step `json:"steps"`
	// GlobalSteps are the steps for the whole host that a plan made
	// without Global lists apart and apply does not carry out (run them on
	// the host itself, or plan again with --global).
	GlobalSteps []Step `json:"global_steps,omitempty"`
	// Skipped are changes the planner considered and will not make, each
	// with the reason (NAT on the port, owned by kube-proxy, already done…).
	Skipped []Skipped `json:"skipped,omitempty"`
	// Prediction is the simulated effect of the plan, when it was run.
	Prediction *Prediction `json:"prediction,omitempty"`
}

// PlanHost identifies the host and namespace a plan was made for: apply
// refuses a plan whose host does not match.
type PlanHost struct {
	Hostname   string `json:"hostname"`
	BootID     string `json:"boot_id,omitempty"` // /proc/sys/kernel/random/boot_id
	Kernel     string `json:"kernel"`
	NetNS      string `json:"netns"`                 // "init", a /run/netns name, or a path
	NetNSInode uint64 `json:"netns_inode,omitempty"` // to catch a reused name
	Root       string `json:"root,omitempty"`        // the root directory read ("/" live)
}

// Scope says where a change takes effect.
const (
	ScopeGlobal = "global" // the whole host (init-netns-only sysctls, module parameters, /etc files)
	ScopeNetNS  = "netns"  // the plan's network namespace only (timeouts, its ruleset)
)

// Kinds of actions.
const (
	KindSysctl      = "sysctl"       // write a /proc/sys file
	KindModuleParam = "module-param" // write a /sys/module/*/parameters file
	KindFile        = "file"         // create or replace a file (atomically), or remove it
	KindNft         = "nft"          // run an nft -f script (one atomic batch)
	KindIptables    = "iptables"     // run iptables-style commands, each with its inverse
)

// Step is one change: what it is, why, and the actions that carry it out.
type Step struct {
	// Finding is the id of the finding that motivates the step, with the
	// evidence that made it fire.
	Finding  string         `json:"finding"`
	Evidence map[string]any `json:"evidence,omitempty"`
	Title    string         `json:"title"`  // one line: "raise nf_conntrack_max to 524288"
	Reason   string         `json:"reason"` // why this value
	Scope    string         `json:"scope"`  // ScopeGlobal or ScopeNetNS
	// Key, Current and Proposed describe the change for a reader
	// ("net.netfilter.nf_conntrack_max", "262144", "524288").
	Key      string `json:"key"`
	Current  string `json:"current"`
	Proposed string `json:"proposed"`
	// Notrack is the traffic a NOTRACK step exempts from tracking (nil for
	// other steps): what the prediction (Predict) simulates it by.
	Notrack *analyze.TrafficMatch `json:"notrack,omitempty"`
	// Persist says how the change survives a reboot ("/etc/sysctl.d/90-ctdoctor-conntrack.conf").
	Persist string `json:"persist,omitempty"`
	// CostBytes is the memory the change may cost at its new value (0 if none).
	CostBytes int64 `json:"cost_bytes,omitempty"`
	// Commands are the exact shell lines a person would run for this step,
	// in order, for the kernel and firewall actually present; they do the
	// same as Actions.
	Commands []string `json:"commands"`
	Actions  []Action `json:"actions"`
}

// Action is one machine-executable change. Paths are absolute on the host
// and read through the plan's root directory.
type Action struct {
	Kind string `json:"kind"`
	// Path of the sysctl, module parameter or file.
	Path string `json:"path,omitempty"`
	// Expect is the value (sysctl, module parameter) or content (file) the
	// path held when the plan was made: apply refuses a step whose current
	// value changed since. ExpectAbsent says the file did not exist.
	Expect       string `json:"expect,omitempty"`
	ExpectAbsent bool   `json:"expect_absent,omitempty"`
	// Value is the value to write (sysctl, module parameter) or the file's
	// new content; Remove removes the file instead.
	Value  string `json:"value,omitempty"`
	Mode   uint32 `json:"mode,omitempty"` // file mode, 0644 when zero
	Remove bool   `json:"remove,omitempty"`
	// Script is the nft -f input (KindNft): one batch, all or nothing.
	Script string `json:"script,omitempty"`
	// Argv and UndoArgv are one command and its inverse (KindIptables),
	// e.g. iptables -I INPUT 3 … and iptables -D INPUT ….
	Argv     []string `json:"argv,omitempty"`
	UndoArgv []string `json:"undo_argv,omitempty"`
}

// Skipped is a change the planner did not make, and why.
type Skipped struct {
	Finding string `json:"finding"`
	What    string `json:"what"`
	Reason  string `json:"reason"`
}

// Prediction is a plan's effect on the simulator: the same derived workload
// run with the current and with the proposed settings.
type Prediction struct {
	Scenario string          `json:"scenario"` // the derived scenario, as YAML
	Duration float64         `json:"duration_seconds"`
	Before   PredictionState `json:"before"`
	After    PredictionState `json:"after"`
	// Verdict says in one line what the change does on the simulator
	// ("the change prevents the drops: …").
	Verdict string `json:"verdict,omitempty"`
	// NotSimulated are the plan's live changes the prediction leaves out:
	// settings the simulator has no model for, and the global steps a
	// per-namespace plan does not apply. (Files change nothing until the
	// next boot and are not listed.)
	NotSimulated []string `json:"not_simulated,omitempty"`
}

// PredictionState is one side of a Prediction.
type PredictionState struct {
	PeakEntries int64   `json:"peak_entries"`
	Max         int64   `json:"max"`
	PeakUsage   float64 `json:"peak_usage"`
	Drops       uint64  `json:"drops"`
	EarlyDrops  uint64  `json:"early_drops"`
}
