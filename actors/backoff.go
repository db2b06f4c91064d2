package actors

import (
	"math/rand/v2"
	"time"
)

// Backoff is the schedule of restarts after a crash and of retries after a
// failed sync: Base, 2×Base, 4×Base … capped at Max, each spread by ±Jitter,
// and back to Base once the actor has been healthy for ResetAfter.
//
// protoactor's own ExponentialBackoffStrategy grows linearly, hence this one.
type Backoff struct {
	Base       time.Duration // first delay; 0 means 1s
	Max        time.Duration // cap; 0 means 60s
	Jitter     float64       // spread each way as a fraction; 0 means 0.1, negative means none
	ResetAfter time.Duration // healthy period that restarts the schedule; 0 means Max
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = time.Second
	}
	if b.Max <= 0 {
		b.Max = time.Minute
	}
	b.Max = max(b.Max, b.Base)
	switch {
	case b.Jitter == 0:
		b.Jitter = 0.1
	case b.Jitter < 0:
		b.Jitter = 0
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = b.Max
	}
	return b
}

// Delay returns the delay before attempt n (counting from 0); r in [0, 1)
// picks the point in the jitter range. It never exceeds Max.
func (b Backoff) Delay(n int, r float64) time.Duration {
	b = b.withDefaults()
	d := b.Base
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	d += time.Duration(float64(d) * b.Jitter * (2*r - 1))
	return min(d, b.Max)
}

// backoffState is one actor's position on a Backoff schedule.
type backoffState struct {
	attempt      int
	healthySince time.Time // when the last delay ended
}

// next returns the delay before the next attempt, going back to the start of
// the schedule when the actor has been healthy for ResetAfter since the last
// delay ended (a crash an hour after the previous one is a first crash).
func (s *backoffState) next(b Backoff, now time.Time, r float64) time.Duration {
	b = b.withDefaults()
	if s.attempt > 0 && now.Sub(s.healthySince) >= b.ResetAfter {
		s.attempt = 0
	}
	d := b.Delay(s.attempt, r)
	s.attempt++
	s.healthySince = now.Add(d)
	return d
}

func (s *backoffState) reset() { *s = backoffState{} }

// jitter spreads a timer period by ±10% so that repositories created
// together do not poll in lock-step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// spread is the first period of a timer (at start, or after a spec
// change): uniform over the last nine tenths of d, so that a controller
// starting with thousands of repositories spreads their first polls and
// drift checks over the interval instead of firing them together one
// interval later. The first tenth is left out: the startup sync has just
// fetched and checked.
func spread(d time.Duration, r float64) time.Duration {
	return time.Duration(float64(d) * (0.1 + 0.9*r))
}

// aligned stretches d so that the timer fires on a grid that every actor
// shares: the ticks due within one grain then fire on one wakeup of the
// runtime instead of one each. At 1,000 repositories polling every
// minute, a CPU profile put a quarter of the controller's idle CPU in the
// runtime's search for work after such wakeups. The grain is a
// sixteenth of d, at most a second, so short intervals keep their
// precision and the timers their jitter.
func aligned(now time.Time, d time.Duration) time.Duration {
	grain := min(time.Second, d/16)
	if grain <= 0 {
		return d
	}
	due := now.Add(d)
	if down := due.Truncate(grain); down.Before(due) {
		due = down.Add(grain)
	}
	return due.Sub(now)
}
