package actors

import (
	"reflect"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		b    Backoff
		n    int
		r    float64
		want time.Duration
	}{
		{"defaults start at 1s", Backoff{Jitter: -1}, 0, 0.5, s},
		{"doubles", Backoff{Jitter: -1}, 1, 0.5, 2 * s},
		{"doubles again", Backoff{Jitter: -1}, 2, 0.5, 4 * s},
		{"keeps doubling", Backoff{Jitter: -1}, 5, 0.5, 32 * s},
		{"capped at 60s by default", Backoff{Jitter: -1}, 6, 0.5, 60 * s},
		{"stays capped, no overflow", Backoff{Jitter: -1}, 500, 0.5, 60 * s},
		{"custom base and cap", Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond, Jitter: -1}, 3, 0.5, 50 * time.Millisecond},
		{"jitter lower bound is -10%", Backoff{}, 2, 0, 3600 * time.Millisecond},
		{"jitter upper bound is +10%", Backoff{}, 2, 1, 4400 * time.Millisecond},
		{"custom jitter", Backoff{Jitter: 0.5}, 1, 0, s},
		{"jitter never exceeds the cap", Backoff{}, 10, 1, 60 * s},
		{"jitter may go below the cap", Backoff{}, 10, 0, 54 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.n, tt.r); got != tt.want {
				t.Fatalf("Delay(%d, %v) = %v, want %v", tt.n, tt.r, got, tt.want)
			}
		})
	}
}

func TestBackoffStateGrowsThenResetsWhenHealthy(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 8 * time.Second, Jitter: -1, ResetAfter: 30 * time.Second}
	var st backoffState
	now := time.Unix(0, 0)
	var got []time.Duration
	for range 6 {
		d := st.next(b, now, 0.5)
		got = append(got, d)
		now = now.Add(d + time.Second) // crash again one second after each restart
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays = %v, want %v seconds", got, want)
		}
	}

	now = now.Add(29 * time.Second) // healthy for 30s since the last delay ended
	if d := st.next(b, now, 0.5); d != time.Second {
		t.Fatalf("after a healthy period the delay is %v, want the base 1s", d)
	}
	if d := st.next(b, now.Add(2*time.Second), 0.5); d != 2*time.Second {
		t.Fatalf("second crash after reset waits %v, want 2s", d)
	}
	st.reset()
	if d := st.next(b, now, 0.5); d != time.Second {
		t.Fatalf("after reset() the delay is %v, want 1s", d)
	}
}

func TestJitterBounds(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Minute); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("jitter(1m) = %v, outside ±10%%", d)
		}
	}
}

func TestSyncRequestMerge(t *testing.T) {
	tests := []struct {
		name       string
		pending, n SyncRequest
		want       SyncRequest
	}{
		{"webhook beats poll", SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerWebhook, Commit: "a"}, SyncRequest{Trigger: TriggerWebhook, Commit: "a"}},
		{"poll keeps webhook and its commit", SyncRequest{Trigger: TriggerWebhook, Commit: "a"}, SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerWebhook, Commit: "a"}},
		{"later webhook commit wins", SyncRequest{Trigger: TriggerWebhook, Commit: "a"}, SyncRequest{Trigger: TriggerWebhook, Commit: "b"}, SyncRequest{Trigger: TriggerWebhook, Commit: "b"}},
		{"manual beats spec", SyncRequest{Trigger: TriggerSpec}, SyncRequest{Trigger: TriggerManual, RequestedAt: "t"}, SyncRequest{Trigger: TriggerManual, RequestedAt: "t"}},
		{"webhook keeps requestedAt", SyncRequest{Trigger: TriggerManual, RequestedAt: "t"}, SyncRequest{Trigger: TriggerWebhook, Commit: "c"}, SyncRequest{Trigger: TriggerWebhook, Commit: "c", RequestedAt: "t"}},
		{"reconcile beats startup", SyncRequest{Trigger: TriggerStartup}, SyncRequest{Trigger: TriggerReconcile}, SyncRequest{Trigger: TriggerReconcile}},
		{"startup loses to poll", SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerStartup}, SyncRequest{Trigger: TriggerPoll}},
		{"reconcile beats poll", SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerReconcile}, SyncRequest{Trigger: TriggerReconcile}},
		{"poll keeps reconcile", SyncRequest{Trigger: TriggerReconcile}, SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerReconcile}},
		{"reconcile beats a dependency", SyncRequest{Trigger: TriggerDependency}, SyncRequest{Trigger: TriggerReconcile}, SyncRequest{Trigger: TriggerReconcile}},
		{"webhook carries the drift check", SyncRequest{Trigger: TriggerReconcile}, SyncRequest{Trigger: TriggerWebhook, Commit: "a"}, SyncRequest{Trigger: TriggerWebhook, Commit: "a", Drift: true}},
		{"spec carries a later drift check", SyncRequest{Trigger: TriggerSpec}, SyncRequest{Trigger: TriggerReconcile}, SyncRequest{Trigger: TriggerSpec, Drift: true}},
		{"the carried check stays", SyncRequest{Trigger: TriggerSpec, Drift: true}, SyncRequest{Trigger: TriggerWebhook, Commit: "b"}, SyncRequest{Trigger: TriggerWebhook, Commit: "b", Drift: true}},
		{"a retried request keeps its check", SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerWebhook, Commit: "d", Retry: true, Drift: true}, SyncRequest{Trigger: TriggerWebhook, Commit: "d", Drift: true}},
		{"no check, none carried", SyncRequest{Trigger: TriggerPoll}, SyncRequest{Trigger: TriggerWebhook, Commit: "c"}, SyncRequest{Trigger: TriggerWebhook, Commit: "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.pending.merge(tt.n); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("merge = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The first timers of many repositories fall evenly over the last nine
// tenths of the interval: no burst one interval after a start.
func TestSpreadCoversTheInterval(t *testing.T) {
	const interval = 10 * time.Minute
	if lo, hi := spread(interval, 0), spread(interval, 1); lo != time.Minute || hi != interval {
		t.Fatalf("spread bounds %v..%v, want 1m..10m", lo, hi)
	}
	// Ten buckets of 54s over [1m, 10m]: 1,000 evenly spaced draws put 100
	// in each, where jitter (±10% around 10m) would put them all in the last.
	buckets := make([]int, 10)
	for i := range 1000 {
		d := spread(interval, (float64(i)+0.5)/1000)
		buckets[int((d-time.Minute)*10/(interval-time.Minute))]++
	}
	for i, n := range buckets {
		if n != 100 {
			t.Fatalf("bucket %d holds %d first timers, want 100: %v", i, n, buckets)
		}
	}
}

// Aligned timers fire on a grid shared by every actor, never early and
// at most one grain late.
func TestAlignedTimersShareAGrid(t *testing.T) {
	now := time.Date(2026, 12, 6, 9, 0, 0, 123456789, time.UTC)
	tests := []struct {
		d, grain time.Duration
	}{
		{time.Minute, time.Second},
		{10 * time.Minute, time.Second},
		{8 * time.Second, 500 * time.Millisecond},
		{54321 * time.Millisecond, time.Second},
		{20 * time.Millisecond, 1250 * time.Microsecond},
	}
	for _, tt := range tests {
		got := aligned(now, tt.d)
		if due := now.Add(got); got < tt.d || got >= tt.d+tt.grain || !due.Equal(due.Truncate(tt.grain)) {
			t.Errorf("aligned(%v) = %v: due %v, want on the %v grid within one grain", tt.d, got, due, tt.grain)
		}
	}
	if got := aligned(now, 0); got != 0 {
		t.Errorf("aligned(0) = %v, want 0", got)
	}
}
