package actors

import (
	"strings"
	"time"

	"github.com/false-systems/alumiini/actors/view"
)

// View is st as JSON, with the restarts the supervisor's hooks counted.
func (st RepoStatus) View(restarts int) view.Repository {
	ns, name, _ := strings.Cut(st.Key, "/")
	v := view.Repository{Namespace: ns, Name: name, State: string(st.State), PendingFollowUp: st.Pending,
		Restarts: restarts, Syncs: st.Syncs, Generation: st.Generation, LastTrigger: string(st.LastTrigger),
		NextPoll: timeOrNil(st.NextPoll), NextDriftCheck: timeOrNil(st.NextDrift)}
	if st.LastError != nil {
		v.LastError = st.LastError.Error()
	}
	return v
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Round(time.Second)
	return &t
}
