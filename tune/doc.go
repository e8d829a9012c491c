// Package tune turns a diagnosis (an analyze.Report of a host.Snapshot)
// into a Plan: an ordered list of changes — table and hash sizing, per-state
// timeouts, other sysctls such as the local port range, NOTRACK rules with
// the accept rule for untracked packets first —
// each with the finding that motivates it, its scope, how it persists, its
// memory cost, the exact commands a person would run, and machine-executable
// actions that package apply carries out, verifies and undoes.
//
// A Plan's JSON form (schema ctdoctor.plan/v1) is a stable contract: add
// fields freely, never rename them without changing PlanSchema.
package tune
