package actors

import (
	"context"
	"sync"
)

// lane is the queue a sync waits in for a slot.
type lane int

const (
	laneTimer  lane = iota // poll, drift check, startup: housekeeping
	laneUrgent             // webhook, manual, spec change: someone waits for it
)

// laneOf puts the syncs a person or a push waits for ahead of the timers.
func laneOf(t Trigger) lane {
	if t.Urgent() {
		return laneUrgent
	}
	return laneTimer
}

// maxUrgentRun is how many urgent syncs in a row may take a slot while
// timer syncs wait; then one timer sync goes, so that housekeeping is
// slowed by a flood of pushes, never stopped.
const maxUrgentRun = 8

// ticket is one sync's place in the slot queue. Its fields are guarded by
// the scheduler's mutex; ready is closed when the slot is granted.
type ticket struct {
	lane    lane
	ready   chan struct{}
	asked   bool // ask was called: it is queued or granted
	queued  bool
	granted bool
}

// scheduler hands out the --max-concurrent-syncs slots: urgent syncs first,
// each lane first come first served. A scheduler with no limit grants at
// once. Once stopping is closed it grants no more slots.
type scheduler struct {
	limited  bool
	maxRun   int
	stopping <-chan struct{}

	mu            sync.Mutex
	free          int
	urgent, timer []*ticket
	run           int // urgent grants in a row while timer syncs waited
}

func newScheduler(slots, maxRun int, stopping <-chan struct{}) *scheduler {
	return &scheduler{limited: slots > 0, free: slots, maxRun: maxRun, stopping: stopping}
}

// newTicket is a sync's ticket for lane l, not in the queue yet: the
// repository actor holds it from the start of the sync, so that a push can
// promote it, and the sync asks with it once it has something to apply.
func newTicket(l lane) *ticket { return &ticket{lane: l, ready: make(chan struct{})} }

// enqueue is newTicket and ask at once.
func (s *scheduler) enqueue(l lane) *ticket {
	t := newTicket(l)
	s.ask(t)
	return t
}

// ask takes the ticket's place in its lane, granted at once if a slot is
// free and nobody waits. It never blocks.
func (s *scheduler) ask(t *ticket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.asked = true
	switch {
	case !s.limited:
		s.grant(t)
	case s.free > 0 && len(s.urgent)+len(s.timer) == 0:
		s.free--
		s.grant(t)
	default:
		t.queued = true
		s.push(t)
	}
}

// wait blocks until the ticket's slot is granted. It gives up, releasing a
// slot granted meanwhile exactly once, when ctx ends or shutdown begins.
func (s *scheduler) wait(ctx context.Context, t *ticket) error {
	select {
	case <-t.ready:
		// select picks at random among ready cases: check again.
		if err := s.abandoned(ctx); err != nil {
			s.release()
			return err
		}
		return nil
	case <-ctx.Done():
		return s.giveUp(t, ctx.Err())
	case <-s.stopping:
		return s.giveUp(t, errStopping)
	}
}

func (s *scheduler) abandoned(ctx context.Context) error {
	select {
	case <-s.stopping:
		return errStopping
	default:
		return ctx.Err()
	}
}

// giveUp leaves the queue, or hands back the slot granted in the meantime.
func (s *scheduler) giveUp(t *ticket, err error) error {
	s.mu.Lock()
	if t.granted {
		s.mu.Unlock()
		s.release()
		return err
	}
	s.remove(t)
	s.mu.Unlock()
	return err
}

// promote moves a ticket still queued in the timer lane to the end of the
// urgent lane: a push arrived for a repository whose poll is waiting. A
// ticket not asked yet will ask in the urgent lane.
func (s *scheduler) promote(t *ticket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.lane == laneUrgent || t.granted {
		return
	}
	if !t.asked {
		t.lane = laneUrgent
		return
	}
	s.remove(t)
	t.lane = laneUrgent
	t.queued = true
	s.push(t)
}

// release gives a slot back: to the next waiter, or to the free pool.
func (s *scheduler) release() {
	if !s.limited {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.next(); t != nil {
		s.grant(t)
		return
	}
	s.free++
}

// next pops the ticket that gets the next slot: urgent first, except that
// after maxRun urgent grants in a row one waiting timer sync goes. Nothing
// is granted once shutdown began.
func (s *scheduler) next() *ticket {
	select {
	case <-s.stopping:
		return nil
	default:
	}
	var t *ticket
	switch {
	case len(s.urgent) > 0 && (len(s.timer) == 0 || s.run < s.maxRun):
		t, s.urgent = s.urgent[0], s.urgent[1:]
		s.run++
		if len(s.timer) == 0 {
			s.run = 0
		}
	case len(s.timer) > 0:
		t, s.timer = s.timer[0], s.timer[1:]
		s.run = 0
	default:
		return nil
	}
	t.queued = false
	return t
}

func (s *scheduler) grant(t *ticket) {
	t.granted = true
	close(t.ready)
}

func (s *scheduler) push(t *ticket) {
	if t.lane == laneUrgent {
		s.urgent = append(s.urgent, t)
	} else {
		s.timer = append(s.timer, t)
	}
}

func (s *scheduler) remove(t *ticket) {
	if !t.queued {
		return
	}
	t.queued = false
	q := &s.timer
	if t.lane == laneUrgent {
		q = &s.urgent
	}
	for i, x := range *q {
		if x == t {
			*q = append((*q)[:i:i], (*q)[i+1:]...)
			return
		}
	}
}
