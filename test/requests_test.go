package test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestNoRedundantRequests counts at the API server (its own
// apiserver_request_total), where a no-op apply is visible although it
// changes no resourceVersion: quiet polls write nothing, and a commit that
// changes 1 of 20 objects sends exactly one apply.
func TestNoRedundantRequests(t *testing.T) {
	ns := env.Namespace(t)
	repo := gitserver.New(t).CreateRepo(t, "apps")
	files := func(changed string) map[string]string {
		out := map[string]string{}
		for i := range 20 {
			name := fmt.Sprintf("cm-%02d", i)
			v := "1"
			if name == changed {
				v = "2"
			}
			out[name+".yaml"] = configMapYAML(name, ns, v)
		}
		return out
	}
	commit := repo.CommitStrings("first", files(""))
	ctrl := startController(t, "--watch-namespace", ns, "--webhook-secret-file", secretFile(t))
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1s", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, time.Minute)

	// The status write of the first sync may still be answered: start
	// counting once a poll found nothing new.
	waitUnchangedPolls(t, ctrl, 1)
	before := apiRequests(t)
	waitUnchangedPolls(t, ctrl, 3)
	if w := writes(before, apiRequests(t)); len(w) != 0 {
		t.Fatalf("three quiet polls made writes: %v", w)
	}

	before = apiRequests(t)
	commit = repo.CommitStrings("one of twenty", files("cm-07"))
	if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), commit); code != http.StatusAccepted {
		t.Fatalf("webhook reply %d %s", code, body)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, time.Minute)
	var got map[apiCall]float64
	testenv.Eventually(t, 10*time.Second, func() error {
		got = writes(before, apiRequests(t))
		if n := got[apiCall{verb: "APPLY", resource: "configmaps"}]; n != 1 {
			return fmt.Errorf("applies of ConfigMaps = %v, want 1 (all writes: %v)", n, got)
		}
		return nil
	})
	for call := range got {
		if call.resource == "configmaps" && call.verb != "APPLY" {
			t.Fatalf("a commit changing one ConfigMap also sent %v", got)
		}
	}
	if v, _ := configMapValue(ns, "cm-07"); v != "2" {
		t.Fatalf("cm-07 = %q, want 2", v)
	}
}

// waitUnchangedPolls waits for n more syncs that found nothing to do.
func waitUnchangedPolls(t *testing.T, ctrl *proc, n float64) {
	t.Helper()
	from := ctrl.metricValue(t, "alumiini_syncs_total", `result="unchanged"`)
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := ctrl.metricValue(t, "alumiini_syncs_total", `result="unchanged"`); got < from+n {
			return fmt.Errorf("%v unchanged syncs, want %v", got-from, n)
		}
		return nil
	})
}

// writes are the requests between two counts that could change something,
// except the Leases the control plane's own components renew.
func writes(before, after map[apiCall]float64) map[apiCall]float64 {
	out := map[apiCall]float64{}
	for _, call := range slices.Collect(maps.Keys(after)) {
		switch call.verb {
		case "GET", "LIST", "WATCH", "WATCHLIST", "CONNECT":
			continue
		}
		if call.resource == "leases" || call.resource == "tokenreviews" || call.resource == "subjectaccessreviews" {
			continue
		}
		if n := after[call] - before[call]; n > 0 {
			out[call] = n
		}
	}
	return out
}
