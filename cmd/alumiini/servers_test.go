package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A replica that does not lead has no actors to show: it says so with a
// 503, and still answers its version. A cluster member before its actors
// run says that instead of pointing at a leader.
func TestActorViewOnAStandby(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		none := "does not lead"
		if cluster {
			none = "runs no actors yet"
		}
		h := metricsHandler(prometheus.NewRegistry(), newActorView(cluster), false)
		for _, tc := range []struct {
			path string
			code int
			body string
		}{
			{"/debug/repositories", http.StatusServiceUnavailable, none},
			{"/debug/repositories/ns/name", http.StatusServiceUnavailable, none},
			{"/debug/version", http.StatusOK, `"version":"dev"`},
			{"/debug/repositories/only-one-part", http.StatusNotFound, ""},
		} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("cluster=%v: GET %s = %d %q, want %d with %q", cluster, tc.path, rec.Code, rec.Body.String(), tc.code, tc.body)
			}
		}
	}
}

// TestProfilingOnlyWhenAskedFor: pprof exposes internals, so the metrics
// port serves it only with --profiling.
func TestProfilingOnlyWhenAskedFor(t *testing.T) {
	for _, tt := range []struct {
		profiling bool
		want      int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		h := metricsHandler(prometheus.NewRegistry(), newActorView(false), tt.profiling)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/heap?gc=1", nil))
		if rec.Code != tt.want {
			t.Errorf("profiling=%v: GET /debug/pprof/heap = %d, want %d", tt.profiling, rec.Code, tt.want)
		}
	}
}

// TestRestartCountsFollowLiveActors: a deleted repository's restart count
// is forgotten, so the view's memory follows the live actors, not every
// repository ever seen.
func TestRestartCountsFollowLiveActors(t *testing.T) {
	v := newActorView(false)
	v.restarted("ns/a")
	v.restarted("ns/a")
	v.restarted("ns/b")
	v.stopped("ns/a")
	if got := v.restarts; len(got) != 1 || got["ns/b"] != 1 {
		t.Fatalf("restart counts after ns/a stopped: %v, want only ns/b: 1", got)
	}
}
