// Package apply carries out a plan (tune.Plan, `ctdoctor plan -o json`)
// on a host, transactionally, and undoes it: `ctdoctor apply`,
// `ctdoctor rollback` and `ctdoctor history`.
//
// # Safety model
//
// Nothing changes before every check passes, and every change can be
// undone exactly:
//
//   - Check first. The plan's schema and actions are validated (an nft
//     script may only add; iptables commands come with their inverse); the
//     caller's capabilities are checked on a live host; the host must be
//     the one the plan was made for (hostname, boot id, root directory,
//     network namespace inode); each sysctl, module parameter and file must
//     still hold what the plan expected (a stale plan is refused whole,
//     naming every step that changed); nft scripts pass nft --check; a plan
//     with global steps needs Options.Global (--global).
//   - Show and ask. The diff (current → proposed, file line diffs, the nft
//     batch, the commands) is printed, and the operator is asked unless
//     Options.Yes; DryRun prints the exact operations and stops.
//   - One at a time. An exclusive flock on STATE/lock serialises applies,
//     rollbacks, confirmations and reverts. An apply refuses to start
//     while an earlier one is interrupted, failed with its undo incomplete,
//     or awaits confirmation.
//   - Write-ahead journal. STATE/applies/ID/journal.json holds the plan,
//     and before each action the previous value of the sysctl or module
//     parameter, the previous content, mode and owner of the file (or its
//     absence), the ruleset before the nft batch; it is rewritten
//     atomically and fsynced with its directory before the action runs.
//     An action then runs, is read back and verified, and is journaled as
//     done. A process killed at any point leaves the journal in state
//     "applying", which the next apply reports, pointing to rollback.
//   - Atomic changes. Files are replaced through a temporary file in the
//     same directory (write, fsync, rename, fsync the directory), keeping
//     the mode and owner of the file they replace. nft runs one batch
//     (all or nothing) with --echo --handle, writing its output straight
//     into the journal directory, so the handles of exactly what it added
//     are known even if ctdoctor dies meanwhile; undo deletes those
//     objects by handle (checking that their table is still the same one)
//     in one batch, and nothing the operator added since. iptables
//     commands run one by one with their inverse.
//   - The namespace. Per-namespace sysctls are written, and nft and
//     iptables run, from an OS thread switched into the plan's network
//     namespace with setns(2); global net sysctls from the initial one.
//     Options.Root sends the global actions to a fake root (tests never
//     write the host's own global settings).
//   - Undo on failure. When an action fails, the actions done so far are
//     undone in reverse and verified, and the error says what happened. An
//     undo stops at the first failure (so an UNTRACKED accept rule is
//     never removed while the NOTRACK rules after it remain); a value
//     changed by someone since the apply is left alone and reported.
//   - Confirm or revert. With Options.ConfirmWithin a detached watchdog
//     (`ctdoctor rollback --watchdog`, in a session of its own, or a
//     transient systemd unit where systemd runs) reverts at the deadline
//     unless the journal says confirmed (Confirm, from another shell, or
//     WaitConfirm's answer), and verifies. It is started before the first
//     change, so it also reverts an apply whose process died.
//   - Rollback. Rollback restores from the journal in reverse and
//     verifies; it is idempotent (an undone apply is "nothing to do") and
//     resumes an interrupted apply, rollback or revert. It refuses values
//     changed since the apply unless Options.Force, and refuses while a
//     later apply in effect changed the same path. After a reboot only
//     files are restored (runtime values are the boot's).
//
// Idempotence: applying a plan whose changes are all in place changes
// nothing and says so — a value already at its proposed value counts as
// done, and the nft and iptables actions of a plan that is applied and not
// rolled back count as done. A value that is neither what the plan
// expected nor what it proposes makes the plan stale.
//
// # Errors
//
// Errors wrap one of these, for errors.Is, with a message that says what
// to do; all but ErrFailed and ErrDrift-during-undo mean nothing changed:
//
//   - ErrBadPlan: malformed, truncated or incomplete plan JSON, another
//     schema, or an unsafe action.
//   - ErrWrongHost: the plan is for another host, boot, root or namespace.
//   - ErrStale: a value changed since the plan was made (every such step
//     is named).
//   - ErrScope: the plan has global steps and Options.Global is false.
//   - ErrPermission: a capability is missing (CAP_NET_ADMIN,
//     CAP_SYS_ADMIN, or uid 0 for root-owned files), named in the message.
//   - ErrLocked: another apply or rollback holds the lock.
//   - ErrPending: an earlier apply is interrupted, failed half-undone or
//     awaits confirmation.
//   - ErrCorruptJournal: a journal cannot be read (truncated, edited).
//   - ErrAborted: the operator answered no.
//   - ErrFailed: an action failed; the message says whether the undo
//     finished (the host is as before) or what is left for rollback.
//   - ErrDrift: rollback found values changed since the apply.
//   - ErrTooLate: Confirm of an apply already reverted.
package apply
