// Package view is the JSON shape of a repository actor's state: what the
// controller's /debug/repositories endpoints answer and what
// `kubectl alumiini status` reads. It is its own package, free of the
// actor engine, so the CLI shares the type without linking the controller.
package view

import "time"

// Repository is one repository actor's state as JSON.
type Repository struct {
	Namespace       string     `json:"namespace"`
	Name            string     `json:"name"`
	State           string     `json:"state"`
	PendingFollowUp bool       `json:"pendingFollowUp"`
	Restarts        int        `json:"restarts"`
	Syncs           int        `json:"syncs"`
	Generation      int64      `json:"generation"`
	LastTrigger     string     `json:"lastTrigger,omitempty"`
	LastError       string     `json:"lastError,omitempty"`
	NextPoll        *time.Time `json:"nextPoll,omitempty"`
	NextDriftCheck  *time.Time `json:"nextDriftCheck,omitempty"`
}
