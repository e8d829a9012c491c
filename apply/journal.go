package apply

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/tune"
)

// JournalSchema is the version of the journal's JSON form.
const JournalSchema = "ctdoctor.journal/v1"

// DefaultStateDir is where journals live unless Options.StateDir says otherwise.
const DefaultStateDir = "/var/lib/ctdoctor"

// State is where an apply stands, as its journal records it.
type State string

// The states a journal records. An apply in StateApplying, StateReverting
// or StateRollingBack whose process is gone is shown as "interrupted".
const (
	StateApplying       State = "applying"        // changing the host; or interrupted
	StateApplied        State = "applied"         // every action done and verified
	StateConfirmed      State = "confirmed"       // applied and confirmed within the window
	StateReverting      State = "reverting"       // the confirm window ended: undoing
	StateReverted       State = "reverted"        // undone because it was not confirmed
	StateRollingBack    State = "rolling-back"    // ctdoctor rollback is undoing it
	StateRolledBack     State = "rolled-back"     // undone by ctdoctor rollback
	StateFailed         State = "failed"          // an action failed; see Journal.Error and UndoError
	StateRollbackFailed State = "rollback-failed" // an undo failed; ctdoctor rollback retries
)

// inProgress reports whether a journal in state s is being changed by a
// process (or was, when that process died).
func (s State) inProgress() bool {
	return s == StateApplying || s == StateReverting || s == StateRollingBack
}

// Action statuses in the journal.
const (
	ActPending = "pending" // not started
	ActStarted = "started" // the previous value is recorded; the change may or may not have happened
	ActDone    = "done"    // changed and verified
	ActSkipped = "skipped" // already at the proposed value: nothing changed, nothing to undo
	ActFailed  = "failed"  // the change failed (and may have partly happened; undo checks)
	ActUndone  = "undone"  // restored and verified
)

// Journal is the write-ahead record of one apply: the plan, the previous
// value of everything it changes (written and fsynced before the change),
// and the progress of every action. It is rewritten atomically (temporary
// file, fsync, rename, fsync of the directory) at every transition.
type Journal struct {
	Schema string `json:"schema"`
	ID     string `json:"id"`
	State  State  `json:"state"`
	// PlanID and PlanSHA256 identify the plan (its id and the hash of its
	// JSON); Summary is one line for ctdoctor history.
	PlanID     string `json:"plan_id"`
	PlanSHA256 string `json:"plan_sha256"`
	Summary    string `json:"summary"`
	// Root is the root directory global actions went through ("/" live).
	Root string `json:"root"`
	// NetNS is the namespace the per-namespace actions ran in.
	NetNS NetNSRef `json:"netns"`
	// BootID is the host's boot id when the apply ran: after a reboot the
	// runtime values (sysctls, module parameters, rules) are gone, and
	// rollback restores only files.
	BootID    string    `json:"boot_id,omitempty"`
	PID       int       `json:"pid"` // the process that applied
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// ConfirmBy is the end of the confirm window (apply --confirm-within):
	// unless the state is confirmed by then, the watchdog reverts.
	ConfirmBy *time.Time    `json:"confirm_by,omitempty"`
	Watchdog  *WatchdogInfo `json:"watchdog,omitempty"`
	Plan      *tune.Plan    `json:"plan"`
	// Actions are the plan's actions in order (step by step), with what
	// was recorded before each ran and how far it got.
	Actions []ActionRecord `json:"actions"`
	// Error is why the apply failed; UndoError why undoing did not finish.
	Error     string  `json:"error,omitempty"`
	UndoError string  `json:"undo_error,omitempty"`
	Events    []Event `json:"events"`
}

// NetNSRef names the namespace the per-namespace actions ran in.
type NetNSRef struct {
	Spec  string `json:"spec"`            // as the plan gave it ("init", a name, a path, a PID)
	Path  string `json:"path,omitempty"`  // the nsfs file entered with setns; "" through the root
	Inode uint64 `json:"inode,omitempty"` // to refuse a namespace that was replaced
}

// WatchdogInfo says what reverts the apply when it is not confirmed.
type WatchdogInfo struct {
	Kind string `json:"kind"`           // "process" (setsid re-exec) or "systemd" (transient unit)
	PID  int    `json:"pid,omitempty"`  // kind process
	Unit string `json:"unit,omitempty"` // kind systemd
	Log  string `json:"log,omitempty"`  // its output
}

// Event is one line of an apply's history.
type Event struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
}

// ActionRecord is one action of the plan in the journal.
type ActionRecord struct {
	Step   int    `json:"step"`   // index into Plan.Steps
	Action int    `json:"action"` // index into the step's Actions
	Kind   string `json:"kind"`
	Scope  string `json:"scope"`
	Path   string `json:"path,omitempty"`
	Status string `json:"status"`
	// Prev is what the path held before the action (recorded before it ran).
	Prev *Prev `json:"prev,omitempty"`
	// Wrote is the value read back after writing a sysctl or module
	// parameter: rollback restores Prev only while the path still holds it.
	Wrote string `json:"wrote,omitempty"`
	// Nft records what the nft batch added.
	Nft *NftRecord `json:"nft,omitempty"`
	// Iptables records whether the rule was there before.
	Iptables *IptablesRecord `json:"iptables,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// Prev is the previous state of a sysctl, module parameter or file.
type Prev struct {
	Value   string `json:"value,omitempty"`   // sysctl, module parameter: as read
	Absent  bool   `json:"absent,omitempty"`  // file: did not exist
	Content []byte `json:"content,omitempty"` // file: its bytes (base64 in JSON)
	Mode    uint32 `json:"mode,omitempty"`    // file: permission bits (with setuid/setgid/sticky)
	UID     int    `json:"uid,omitempty"`
	GID     int    `json:"gid,omitempty"`
	// CreatedDirs are parent directories the action created (outermost
	// first); undo removes them when empty.
	CreatedDirs []string `json:"created_dirs,omitempty"`
}

// NftRecord is what an nft batch added, learned from `nft --echo --handle`.
type NftRecord struct {
	// EchoFile is where nft writes its echo output: nft writes it itself,
	// so it is complete even when ctdoctor is killed while nft runs.
	EchoFile string `json:"echo_file"`
	// Before is `nft -j list ruleset` before the batch, to tell what
	// appeared when the echo output is missing.
	Before string `json:"before,omitempty"`
	// Objects are the tables, chains, rules, sets and elements the batch
	// created, in the order nft reported them.
	Objects []NftObject `json:"objects,omitempty"`
	// Echoed says Objects were read from a complete echo output.
	Echoed bool `json:"echoed,omitempty"`
}

// IptablesRecord is an iptables action's state.
type IptablesRecord struct {
	// PresentBefore says an identical rule already existed (iptables -C).
	PresentBefore bool `json:"present_before"`
}

// applyDir is the directory of one apply's journal.
func applyDir(stateDir, id string) string { return filepath.Join(stateDir, "applies", id) }

func journalPath(stateDir, id string) string {
	return filepath.Join(applyDir(stateDir, id), "journal.json")
}

// newID returns a sortable apply id: the UTC time and 4 random hex digits.
func newID(now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// validID accepts the ids newID makes (and nothing with a path separator).
func validID(id string) bool {
	if id == "" || len(id) > 64 || id[0] == '.' {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// ErrCorruptJournal is wrapped by the error for a journal that cannot be
// read: truncated, not JSON, another schema, or inconsistent with its plan.
var ErrCorruptJournal = errors.New("corrupt journal")

// readJournal reads and checks one journal.
func readJournal(stateDir, id string) (*Journal, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q is not an apply id (see ctdoctor history)", id)
	}
	p := journalPath(stateDir, id)
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no apply %s in %s (see ctdoctor history): %w", id, stateDir, os.ErrNotExist)
		}
		return nil, fmt.Errorf("read journal: %w", err)
	}
	j, err := decodeJournal(b)
	if err == nil && j.ID != id {
		err = fmt.Errorf("it names apply %q", j.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w: %v; nothing was changed — inspect it, move it out of %s, and undo by hand what its actions list if needed",
			p, ErrCorruptJournal, err, filepath.Dir(filepath.Dir(p)))
	}
	return j, nil
}

// decodeJournal parses a journal and checks that it is whole.
func decodeJournal(b []byte) (*Journal, error) {
	var j Journal
	if err := strictUnmarshal(b, &j); err != nil {
		return nil, err
	}
	if j.Schema != JournalSchema {
		return nil, fmt.Errorf("schema %q, want %q", j.Schema, JournalSchema)
	}
	switch j.State {
	case StateApplying, StateApplied, StateConfirmed, StateReverting, StateReverted,
		StateRollingBack, StateRolledBack, StateFailed, StateRollbackFailed:
	default:
		return nil, fmt.Errorf("unknown state %q", j.State)
	}
	if j.Plan == nil {
		return nil, errors.New("no plan")
	}
	for i, r := range j.Actions {
		if r.Step < 0 || r.Step >= len(j.Plan.Steps) || r.Action < 0 || r.Action >= len(j.Plan.Steps[r.Step].Actions) {
			return nil, fmt.Errorf("action %d points to step %d action %d, not in the plan", i, r.Step, r.Action)
		}
		switch r.Status {
		case ActPending, ActStarted, ActDone, ActSkipped, ActFailed, ActUndone:
		default:
			return nil, fmt.Errorf("action %d: unknown status %q", i, r.Status)
		}
		if (r.Status == ActStarted || r.Status == ActDone || r.Status == ActFailed) && r.Kind != tune.KindIptables && r.Kind != tune.KindNft && r.Prev == nil {
			return nil, fmt.Errorf("action %d is %s but has no recorded previous value", i, r.Status)
		}
		if r.Kind == tune.KindNft && r.Status != ActPending && r.Status != ActSkipped && r.Nft == nil {
			return nil, fmt.Errorf("action %d (nft) is %s but has no nft record", i, r.Status)
		}
	}
	return &j, nil
}

// strictUnmarshal decodes exactly one JSON value.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(v); err != nil {
		return jsonError(b, dec, err)
	}
	if dec.More() {
		return fmt.Errorf("extra data after the JSON value at byte %d", dec.InputOffset())
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("extra data after the JSON value at byte %d", dec.InputOffset())
	}
	return nil
}

// jsonError says where a JSON document broke, and calls a premature end
// what it usually is: a truncated file.
func jsonError(b []byte, dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF) && len(strings.TrimSpace(string(b))) == 0:
		return errors.New("empty file")
	case errors.Is(err, io.ErrUnexpectedEOF) || (errors.Is(err, io.EOF)):
		return fmt.Errorf("truncated: the JSON ends after %d bytes", len(b))
	case errors.As(err, &se):
		line := 1 + strings.Count(string(b[:min(int(se.Offset), len(b))]), "\n")
		return fmt.Errorf("not valid JSON at line %d (byte %d): %v", line, se.Offset, err)
	case errors.As(err, &te):
		return fmt.Errorf("field %q: %v", te.Field, err)
	}
	return err
}

// writeJournal rewrites j atomically and durably.
func writeJournal(stateDir string, j *Journal) error {
	j.UpdatedAt = time.Now().UTC()
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encode journal: %w", err)
	}
	b = append(b, '\n')
	if err := writeFileAtomic(journalPath(stateDir, j.ID), b, 0o600, -1, -1); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return nil
}

// event appends a line to j's history.
func (j *Journal) event(format string, args ...any) {
	j.Events = append(j.Events, Event{Time: time.Now().UTC(), Msg: fmt.Sprintf(format, args...)})
}

// listJournals returns the ids of every journal, oldest first.
func listJournals(stateDir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(stateDir, "applies"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list journals: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && validID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// ErrLocked is wrapped by the error when another ctdoctor apply or
// rollback holds the state directory's lock.
var ErrLocked = errors.New("another ctdoctor apply or rollback is running")

// lock is an flock on STATE/lock: exclusive for changes, shared for readers.
type lock struct{ f *os.File }

// lockState takes the state directory's lock, waiting up to wait. what
// (e.g. "apply 2026…") is written into the lock file for the next
// caller's message when the lock is exclusive.
func lockState(stateDir string, exclusive bool, wait time.Duration, what string) (*lock, error) {
	p := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		if time.Now().After(deadline) {
			holder, _ := os.ReadFile(p)
			f.Close()
			h := strings.TrimSpace(string(holder))
			if h == "" {
				h = "another process"
			}
			return nil, fmt.Errorf("%w (%s holds %s); wait for it, or see ctdoctor history", ErrLocked, h, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if exclusive {
		_ = f.Truncate(0)
		_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+": "+what+"\n"), 0)
	}
	return &lock{f: f}, nil
}

// tryShared takes a shared lock without waiting; ok is false when a
// change is running.
func tryShared(stateDir string) (l *lock, ok bool) {
	f, err := os.Open(filepath.Join(stateDir, "lock"))
	if err != nil {
		return nil, errors.Is(err, os.ErrNotExist)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return &lock{f: f}, true
}

func (l *lock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// ensureStateDir creates the state directory (0700) and its applies/.
func ensureStateDir(stateDir string) error {
	for _, d := range []string{stateDir, filepath.Join(stateDir, "applies")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("state directory: %w (it needs root, or pass --state-dir)", err)
			}
			return fmt.Errorf("state directory: %w", err)
		}
	}
	return nil
}
