package actors

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// granted reports whether the ticket's slot was handed over, without waiting.
func granted(t *ticket) bool {
	select {
	case <-t.ready:
		return true
	default:
		return false
	}
}

// grantOrder releases one slot at a time and returns the names of the
// tickets in the order they were granted; each granted ticket keeps its
// slot until the next release.
func grantOrder(t *testing.T, s *scheduler, tickets map[string]*ticket) []string {
	t.Helper()
	var order []string
	for range tickets {
		s.release()
		var got []string
		for name, tk := range tickets {
			if granted(tk) && !slices.Contains(order, name) {
				got = append(got, name)
			}
		}
		if len(got) != 1 {
			t.Fatalf("one release granted %v, want exactly one ticket", got)
		}
		order = append(order, got[0])
	}
	return order
}

func TestSchedulerUrgentBeforeTimerFIFOWithinLane(t *testing.T) {
	s := newScheduler(1, 8, make(chan struct{}))
	holder := s.enqueue(laneTimer)
	if !granted(holder) {
		t.Fatal("a free slot was not granted at once")
	}
	tickets := map[string]*ticket{
		"poll1": s.enqueue(laneTimer),
		"poll2": s.enqueue(laneTimer),
		"hook1": s.enqueue(laneUrgent),
		"hook2": s.enqueue(laneUrgent),
	}
	for name, tk := range tickets {
		if granted(tk) {
			t.Fatalf("%s granted while the only slot is held", name)
		}
	}
	got := grantOrder(t, s, tickets)
	want := []string{"hook1", "hook2", "poll1", "poll2"}
	if !slices.Equal(got, want) {
		t.Fatalf("grant order %v, want %v", got, want)
	}
}

// TestSchedulerTimerNotStarved: after maxRun urgent grants in a row while
// timer work waits, one timer sync gets the slot.
func TestSchedulerTimerNotStarved(t *testing.T) {
	s := newScheduler(1, 2, make(chan struct{}))
	s.enqueue(laneUrgent) // holds the slot
	tickets := map[string]*ticket{"poll": s.enqueue(laneTimer)}
	for _, name := range []string{"u1", "u2", "u3", "u4", "u5"} {
		tickets[name] = s.enqueue(laneUrgent)
	}
	got := grantOrder(t, s, tickets)
	want := []string{"u1", "u2", "poll", "u3", "u4", "u5"}
	if !slices.Equal(got, want) {
		t.Fatalf("grant order %v, want %v", got, want)
	}
}

func TestSchedulerPromoteMovesQueuedTimerTicket(t *testing.T) {
	s := newScheduler(1, 8, make(chan struct{}))
	s.enqueue(laneTimer)
	tickets := map[string]*ticket{
		"poll1": s.enqueue(laneTimer),
		"hook":  s.enqueue(laneUrgent),
		"poll2": s.enqueue(laneTimer),
	}
	s.promote(tickets["poll2"])
	s.promote(tickets["poll2"]) // twice: still one place in the queue
	got := grantOrder(t, s, tickets)
	want := []string{"hook", "poll2", "poll1"}
	if !slices.Equal(got, want) {
		t.Fatalf("grant order %v, want %v", got, want)
	}
}

// TestSchedulerCancelWhileQueued: a waiter whose context ends leaves the
// queue; if its slot was granted in the same instant, it hands it back
// exactly once.
func TestSchedulerCancelWhileQueued(t *testing.T) {
	for _, grantFirst := range []bool{false, true} {
		s := newScheduler(1, 8, make(chan struct{}))
		s.enqueue(laneTimer) // holds the slot
		gone := s.enqueue(laneUrgent)
		after := s.enqueue(laneTimer)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if grantFirst {
			s.release() // grants gone, whose context has ended
		}
		if err := s.wait(ctx, gone); !errors.Is(err, context.Canceled) {
			t.Fatalf("grantFirst=%v: wait = %v, want context.Canceled", grantFirst, err)
		}
		if !grantFirst {
			s.release()
		}
		if !granted(after) {
			t.Fatalf("grantFirst=%v: the slot did not pass to the next waiter", grantFirst)
		}
		if s.free != 0 || len(s.urgent)+len(s.timer) != 0 {
			t.Fatalf("grantFirst=%v: free=%d queued=%d, want 0 and 0 (a slot released twice or lost)",
				grantFirst, s.free, len(s.urgent)+len(s.timer))
		}
		if err := s.wait(context.Background(), after); err != nil {
			t.Fatal(err)
		}
		s.release()
		if s.free != 1 {
			t.Fatalf("grantFirst=%v: free=%d after every release, want 1", grantFirst, s.free)
		}
	}
}

func TestSchedulerShutdownStartsNoQueuedSync(t *testing.T) {
	stopping := make(chan struct{})
	s := newScheduler(1, 8, stopping)
	s.enqueue(laneTimer) // holds the slot
	queued := s.enqueue(laneUrgent)
	close(stopping)
	s.release()
	if granted(queued) {
		t.Fatal("a queued sync was granted a slot after shutdown began")
	}
	if err := s.wait(context.Background(), queued); !errors.Is(err, errStopping) {
		t.Fatalf("wait = %v, want errStopping", err)
	}
	late := s.enqueue(laneUrgent) // a free slot, but shutting down
	if err := s.wait(context.Background(), late); !errors.Is(err, errStopping) {
		t.Fatalf("wait of a ticket enqueued after shutdown = %v, want errStopping", err)
	}
	if s.free != 1 {
		t.Fatalf("free=%d, want 1", s.free)
	}
}

func TestSchedulerUnlimitedGrantsAtOnce(t *testing.T) {
	s := newScheduler(0, 8, make(chan struct{}))
	for i := 0; i < 3; i++ {
		if err := s.wait(context.Background(), s.enqueue(laneTimer)); err != nil {
			t.Fatal(err)
		}
	}
}
