package apply

import (
	"time"
)

// Entry is one apply in History.
type Entry struct {
	ID string `json:"id"`
	// State is what ctdoctor history shows: applying, applied, confirmed,
	// reverted, rolled back, failed, rollback failed, interrupted (an
	// apply, revert or rollback whose process died), corrupt.
	State        string    `json:"state"`
	JournalState State     `json:"journal_state,omitempty"`
	Time         time.Time `json:"time"`
	Updated      time.Time `json:"updated"`
	PlanID       string    `json:"plan_id,omitempty"`
	Summary      string    `json:"summary,omitempty"`
	NetNS        string    `json:"netns,omitempty"`
	Root         string    `json:"root,omitempty"`
	// Changed counts actions done (or undone since); Skipped those that
	// were already at their value.
	Changed int `json:"changed"`
	Skipped int `json:"skipped"`
	// ConfirmBy is the end of the confirm window; AwaitingConfirmation
	// says it is applied and neither confirmed nor reverted yet, Overdue
	// that the window ended without the watchdog reverting it.
	ConfirmBy            *time.Time `json:"confirm_by,omitempty"`
	AwaitingConfirmation bool       `json:"awaiting_confirmation,omitempty"`
	Overdue              bool       `json:"overdue,omitempty"`
	Error                string     `json:"error,omitempty"`
	// Journal is the journal file.
	Journal string `json:"journal"`
}

// displayState names a journal state for people.
func displayState(s State, running bool) string {
	if s.inProgress() && !running {
		return "interrupted"
	}
	switch s {
	case StateRolledBack:
		return "rolled back"
	case StateRollingBack:
		return "rolling back"
	case StateRollbackFailed:
		return "rollback failed"
	}
	return string(s)
}

// History lists every apply recorded in stateDir, oldest first. A journal
// that cannot be read is listed with state "corrupt" and the reason.
func History(stateDir string) ([]Entry, error) {
	ids, err := listJournals(stateDir)
	if err != nil {
		return nil, err
	}
	lk, free := tryShared(stateDir)
	defer lk.release()
	out := make([]Entry, 0, len(ids))
	for _, id := range ids {
		e := Entry{ID: id, Journal: journalPath(stateDir, id)}
		j, err := readJournal(stateDir, id)
		if err != nil {
			e.State, e.Error = "corrupt", err.Error()
			out = append(out, e)
			continue
		}
		e.State = displayState(j.State, !free)
		e.JournalState = j.State
		e.Time, e.Updated = j.CreatedAt, j.UpdatedAt
		e.PlanID, e.Summary = j.PlanID, j.Summary
		e.NetNS, e.Root = j.NetNS.Spec, j.Root
		if e.NetNS == "" {
			e.NetNS = "init"
		}
		for _, r := range j.Actions {
			switch r.Status {
			case ActDone, ActUndone:
				e.Changed++
			case ActSkipped:
				e.Skipped++
			}
		}
		e.ConfirmBy = j.ConfirmBy
		if j.State == StateApplied && j.ConfirmBy != nil {
			e.AwaitingConfirmation = true
			e.Overdue = time.Since(*j.ConfirmBy) > 5*time.Second
		}
		e.Error = j.Error
		if j.UndoError != "" {
			if e.Error != "" {
				e.Error += "; "
			}
			e.Error += "undo: " + j.UndoError
		}
		out = append(out, e)
	}
	return out, nil
}
