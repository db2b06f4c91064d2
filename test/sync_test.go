package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// cdeventsReceiver records the CloudEvents the controller sends.
type cdeventsReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []receivedEvent
}

type receivedEvent struct {
	ceType, ceSource string
	body             map[string]any
}

func newReceiver(t *testing.T) *cdeventsReceiver {
	r := &cdeventsReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.events = append(r.events, receivedEvent{ceType: req.Header.Get("Ce-Type"), ceSource: req.Header.Get("Ce-Source"), body: body})
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *cdeventsReceiver) list() []receivedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedEvent(nil), r.events...)
}

// phaseRecorder watches a GitRepository and records every phase it shows.
func phaseRecorder(t *testing.T, ns, name string) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Watch(ctx,
		metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var phases []string
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			p, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			mu.Lock()
			if len(phases) == 0 || phases[len(phases)-1] != p {
				phases = append(phases, p)
			}
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), phases...)
	}
}

// TestSyncLifecycle follows one repository through the whole pipeline:
// first sync, a broken manifest, the fix, and quiet polls, checking status,
// cluster, CDEvents and metrics (issue 7).
func TestSyncLifecycle(t *testing.T) {
	ns := env.Namespace(t)
	git := gitserver.New(t)
	repo := git.CreateRepo(t, "apps")
	first := repo.CommitStrings("first", map[string]string{
		"deploy/a.yaml": configMapYAML("a", ns, "1"),
		"deploy/b.yaml": configMapYAML("b", ns, "1"),
	})
	recv := newReceiver(t)
	ctrl := startController(t, "--cdevents-sink", recv.srv.URL, "--watch-namespace", ns)
	ctrl.waitReady(t)
	phases := phaseRecorder(t, ns, "apps")
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "path": "deploy", "interval": "1s", "reconcileInterval": "1h"})

	synced := waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)
	if synced.Status.LastSyncedCommit != first || synced.Status.LastSyncTime == nil || synced.Status.ObservedGeneration != synced.Generation {
		t.Fatalf("synced status incomplete: %+v", synced.Status)
	}
	if v, _ := configMapValue(ns, "a"); v != "1" {
		t.Fatalf("ConfigMap a = %q after the first sync", v)
	}
	if len(synced.Status.Inventory) != 2 {
		t.Fatalf("inventory = %+v, want a and b", synced.Status.Inventory)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		got := strings.Join(phases(), ",")
		if !strings.Contains(got, "Pending,Syncing,Synced") {
			return fmt.Errorf("phases seen %q, want Pending → Syncing → Synced", got)
		}
		return nil
	})

	// A broken manifest: the good new object still applies, the status
	// names the file, nothing is pruned.
	broken := repo.CommitStrings("broken", map[string]string{
		"deploy/c.yaml":      configMapYAML("c", ns, "1"),
		"deploy/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [this is not: valid\n",
		"deploy/b.yaml":      "",
	})
	failed := waitPhase(t, ns, "apps", v1alpha1.PhaseFailed, broken, 60*time.Second)
	if !strings.Contains(failed.Status.Message, "broken.yaml") {
		t.Fatalf("failure message does not name the file: %q", failed.Status.Message)
	}
	if v, _ := configMapValue(ns, "c"); v != "1" {
		t.Fatal("the good object of the broken commit was not applied")
	}
	if v, _ := configMapValue(ns, "b"); v != "1" {
		t.Fatal("an object was pruned in a sync whose manifests failed to parse")
	}

	// The fix returns to Synced and prunes b.
	fixed := repo.CommitStrings("fix", map[string]string{"deploy/broken.yaml": ""})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, fixed, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if v, _ := configMapValue(ns, "b"); v != "" {
			return fmt.Errorf("b still exists after the fix")
		}
		return nil
	})

	// Quiet polls: no status write, no apply.
	before := getRepo(t, ns, "apps").ResourceVersion
	_, cmBefore := configMapValue(ns, "a")
	polls := ctrl.metricValue(t, "alumiini_syncs_total", `result="unchanged"`)
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := ctrl.metricValue(t, "alumiini_syncs_total", `result="unchanged"`); n < polls+3 {
			return fmt.Errorf("%v unchanged syncs so far, want %v", n, polls+3)
		}
		return nil
	})
	if after := getRepo(t, ns, "apps").ResourceVersion; after != before {
		t.Fatalf("quiet polls wrote the status: resourceVersion %s → %s", before, after)
	}
	if _, cmAfter := configMapValue(ns, "a"); cmAfter != cmBefore {
		t.Fatalf("quiet polls re-applied ConfigMap a: resourceVersion %s → %s", cmBefore, cmAfter)
	}

	// Metrics reflect the syncs that happened.
	if n := ctrl.metricValue(t, "alumiini_syncs_total", `result="success"`); n < 2 {
		t.Fatalf("alumiini_syncs_total{result=success} = %v, want ≥ 2", n)
	}
	if n := ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`); n < 1 {
		t.Fatalf("alumiini_syncs_total{result=failure} = %v, want ≥ 1", n)
	}
	if n := ctrl.metricValue(t, "alumiini_repository_actors"); n != 1 {
		t.Fatalf("alumiini_repository_actors = %v, want 1", n)
	}
	if n := ctrl.metricValue(t, "alumiini_objects_applied_total"); n < 3 {
		t.Fatalf("alumiini_objects_applied_total = %v, want ≥ 3", n)
	}

	checkCDEvents(t, recv, ns, first)
	waitEventReason(t, ns, "apps", "Synced")
	waitEventReason(t, ns, "apps", "SyncFailed")
}

// checkCDEvents checks that the first sync's events arrived in order, each
// shaped as a CDEvent (context and subject with the required fields).
func checkCDEvents(t *testing.T, recv *cdeventsReceiver, ns, commit string) {
	t.Helper()
	var types []string
	testenv.Eventually(t, 10*time.Second, func() error {
		types = types[:0]
		for _, ev := range recv.list() {
			types = append(types, ev.ceType)
		}
		if len(types) < 3 {
			return fmt.Errorf("received %v", types)
		}
		return nil
	})
	want := []string{"dev.cdeventsx.alumiini-repository.fetched.", "dev.cdevents.pipelinerun.started.", "dev.cdevents.pipelinerun.finished."}
	for i, prefix := range want {
		if !strings.HasPrefix(types[i], prefix) {
			t.Fatalf("event %d is %q, want %s*; all: %v", i, types[i], prefix, types)
		}
	}
	for _, ev := range recv.list() {
		ctx, _ := ev.body["context"].(map[string]any)
		subject, _ := ev.body["subject"].(map[string]any)
		for _, k := range []string{"version", "id", "source", "type", "timestamp"} {
			if ctx[k] == nil || ctx[k] == "" {
				t.Fatalf("event %s: context.%s missing: %v", ev.ceType, k, ev.body)
			}
		}
		if ctx["type"] != ev.ceType {
			t.Fatalf("ce-type %q differs from context.type %v", ev.ceType, ctx["type"])
		}
		if subject["id"] == nil || subject["content"] == nil {
			t.Fatalf("event %s: subject.id or subject.content missing: %v", ev.ceType, ev.body)
		}
	}
	first, _ := json.Marshal(recv.list()[0].body)
	if !strings.Contains(string(first), commit) || !strings.Contains(string(first), ns) {
		t.Fatalf("fetched event does not carry the commit and repository: %s", first)
	}
}

// eventReasons lists the reasons of the Kubernetes Events on a
// GitRepository.
func eventReasons(t *testing.T, ns, name string) []string {
	t.Helper()
	list, err := env.Kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + name + ",involvedObject.kind=GitRepository"})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range list.Items {
		reasons = append(reasons, e.Reason)
	}
	return reasons
}

func waitEventReason(t *testing.T, ns, name, reason string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		got := eventReasons(t, ns, name)
		for _, r := range got {
			if r == reason {
				return nil
			}
		}
		return fmt.Errorf("events %v, want one with reason %s", got, reason)
	})
}

// TestDriftIsDetectedAndCorrected: a kubectl-edit-style change and a
// deleted object are put back by the periodic drift check, with an Event
// and CDEvents; in Detect mode they are only reported.
func TestDriftIsDetectedAndCorrected(t *testing.T) {
	ns := env.Namespace(t)
	git := gitserver.New(t)
	repo := git.CreateRepo(t, "apps")
	first := repo.CommitStrings("first", map[string]string{
		"a.yaml": configMapYAML("a", ns, "1"), "b.yaml": configMapYAML("b", ns, "1"),
	})
	recv := newReceiver(t)
	ctrl := startController(t, "--cdevents-sink", recv.srv.URL, "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1s"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)
	waitEventReason(t, ns, "apps", "Synced")

	cm, err := env.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["value"] = "edited by hand"
	if _, err := env.Kube.CoreV1().ConfigMaps(ns).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := env.Kube.CoreV1().ConfigMaps(ns).Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		a, _ := configMapValue(ns, "a")
		b, _ := configMapValue(ns, "b")
		if a != "1" || b != "1" {
			return fmt.Errorf("a=%q b=%q, want both back at 1", a, b)
		}
		return nil
	})
	waitEventReason(t, ns, "apps", "DriftCorrected")
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, ev := range recv.list() {
			if strings.HasPrefix(ev.ceType, "dev.cdeventsx.alumiini-drift.corrected.") {
				return nil
			}
		}
		return fmt.Errorf("no drift corrected CDEvent yet")
	})
	// Counted when a check concludes, after its applies: the objects can
	// be back before the second of two checks that restored them counts.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := ctrl.metricValue(t, "alumiini_drift_corrected_total"); n < 2 {
			return fmt.Errorf("alumiini_drift_corrected_total = %v, want ≥ 2", n)
		}
		return nil
	})

	// Detect mode reports and leaves the change.
	patch := []byte(`{"spec":{"drift":"Detect"}}`)
	if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Patch(context.Background(), "apps",
		"application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if r := getRepo(t, ns, "apps"); r.Status.ObservedGeneration != r.Generation {
			return fmt.Errorf("spec change not observed yet")
		}
		return nil
	})
	cm, _ = env.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), "a", metav1.GetOptions{})
	cm.Data["value"] = "edited again"
	if _, err := env.Kube.CoreV1().ConfigMaps(ns).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, c := range getRepo(t, ns, "apps").Status.Conditions {
			if c.Type == v1alpha1.ConditionDrifted && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "ConfigMap "+ns+"/a") {
				return nil
			}
		}
		return fmt.Errorf("no Drifted=True condition naming ConfigMap a")
	})
	if v, _ := configMapValue(ns, "a"); v != "edited again" {
		t.Fatalf("Detect mode changed the object: a = %q", v)
	}
	waitEventReason(t, ns, "apps", "DriftDetected")
}
