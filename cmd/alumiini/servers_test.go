package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A replica that does not lead has no actors to show: it says so with a
// 503, and still answers its version.
func TestActorViewOnAStandby(t *testing.T) {
	h := metricsHandler(prometheus.NewRegistry(), newActorView(), false)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/debug/repositories", http.StatusServiceUnavailable, "does not lead"},
		{"/debug/repositories/ns/name", http.StatusServiceUnavailable, "does not lead"},
		{"/debug/version", http.StatusOK, `"version":"dev"`},
		{"/debug/repositories/only-one-part", http.StatusNotFound, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("GET %s = %d %q, want %d with %q", tc.path, rec.Code, rec.Body.String(), tc.code, tc.body)
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
		h := metricsHandler(prometheus.NewRegistry(), newActorView(), tt.profiling)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/heap?gc=1", nil))
		if rec.Code != tt.want {
			t.Errorf("profiling=%v: GET /debug/pprof/heap = %d, want %d", tt.profiling, rec.Code, tt.want)
		}
	}
}
