package clustertest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/test/testenv"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
`

func TestDriftDetectAndCorrect(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	objs := load(t, map[string]string{
		"edited.yaml":    configMap("edited", "git"),
		"deleted.yaml":   configMap("deleted", "git"),
		"annotated.yaml": configMap("annotated", "git"),
		"web.yaml":       deployment,
	})
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), objs, opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("apply: %v %v", err, res.Failed)
	}
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes

	// kubectl edit: change a field git sets, in two objects; delete one;
	// add an annotation git does not set (not drift).
	cms := env.Kube.CoreV1().ConfigMaps(ns)
	edit := metav1.UpdateOptions{FieldManager: "kubectl-edit"}
	cm, _ := getCM(t, ns, "edited")
	cm.Data["key"] = "hand-edited"
	if _, err := cms.Update(ctx(t), cm, edit); err != nil {
		t.Fatal(err)
	}
	dep, err := env.Kube.AppsV1().Deployments(ns).Get(ctx(t), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	five := int32(5)
	dep.Spec.Replicas = &five
	if _, err := env.Kube.AppsV1().Deployments(ns).Update(ctx(t), dep, edit); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx(t), "deleted", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cm, _ = getCM(t, ns, "annotated")
	cm.Annotations = map[string]string{"team": "payments"}
	if _, err := cms.Update(ctx(t), cm, edit); err != nil {
		t.Fatal(err)
	}

	if got, err := a.Drift(ctx(t), objs, opts, v1alpha1.DriftIgnore); err != nil || len(got.Drifted)+len(got.Missing) > 0 {
		t.Errorf("Ignore: %+v, %v; want nothing checked", got, err)
	}

	got, err := a.Drift(ctx(t), objs, opts, v1alpha1.DriftDetect)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, got.Failed)
	wantNames(t, "detect: drifted", got.Drifted, "ConfigMap/edited", "Deployment/web")
	wantNames(t, "detect: missing", got.Missing, "ConfigMap/deleted")
	wantNames(t, "detect: corrected", got.Corrected)
	if cm, err := getCM(t, ns, "edited"); err != nil || cm.Data["key"] != "hand-edited" {
		t.Errorf("after Detect: %v %v; want the edit left alone", cm.Data, err)
	}

	got, err = a.Drift(ctx(t), objs, opts, v1alpha1.DriftCorrect)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, got.Failed)
	wantNames(t, "correct: corrected", got.Corrected, "ConfigMap/edited", "ConfigMap/deleted", "Deployment/web")
	for _, name := range []string{"edited", "deleted"} {
		if cm, err := getCM(t, ns, name); err != nil || cm.Data["key"] != "git" {
			t.Errorf("after Correct %s: %v %v; want git's data back", name, cm, err)
		}
	}
	if dep, err := env.Kube.AppsV1().Deployments(ns).Get(ctx(t), "web", metav1.GetOptions{}); err != nil || *dep.Spec.Replicas != 2 {
		t.Errorf("after Correct web: %v; want 2 replicas back", err)
	}
	if cm, _ := getCM(t, ns, "annotated"); cm.Annotations["team"] != "payments" {
		t.Errorf("annotations %v: the other manager's annotation was removed", cm.Annotations)
	}

	got, err = a.Drift(ctx(t), objs, opts, v1alpha1.DriftDetect)
	if err != nil || len(got.Drifted)+len(got.Missing)+len(got.Failed) > 0 {
		t.Errorf("after Correct: %+v, %v; want no drift", got, err)
	}
}

func secret(name, password string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s}\ndata: {password: %s, user: %s}\n",
		name, base64.StdEncoding.EncodeToString([]byte(password)), base64.StdEncoding.EncodeToString([]byte("admin")))
}

func TestDryRun(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), load(t, map[string]string{
		"a.yaml": configMap("a", "v1"), "b.yaml": configMap("b", "v1"), "same.yaml": configMap("same", "v1"),
		"s.yaml": secret("s", "old-password-1234"),
	}), opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("apply: %v %v", err, res.Failed)
	}
	opts.Inventory = res.Inventory

	diffs, err := a.DryRun(ctx(t), load(t, map[string]string{
		"a.yaml": configMap("a", "v2"), "c.yaml": configMap("c", "v1"), "same.yaml": configMap("same", "v1"),
		"s.yaml": secret("s", "new-password-5678"),
	}), opts)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]k8s.Diff{}
	for _, d := range diffs {
		if d.Err != nil {
			t.Errorf("%s: %v", d.Ref.Name, d.Err)
		}
		got[d.Ref.Name] = d
	}
	for name, action := range map[string]string{"a": "update", "b": "prune", "c": "create", "same": "unchanged", "s": "update"} {
		if got[name].Action != action {
			t.Errorf("%s: action %q, want %q", name, got[name].Action, action)
		}
	}
	if d := got["a"].Diff; !strings.Contains(d, `-  key: v1`) || !strings.Contains(d, `+  key: v2`) {
		t.Errorf("diff of a:\n%s\nwant the data change", d)
	}
	if d := got["c"].Diff; !strings.Contains(d, "+  name: c") {
		t.Errorf("diff of c:\n%s\nwant the whole new object", d)
	}
	s := got["s"].Diff
	if !strings.Contains(s, "password: <redacted, changed>") || !strings.Contains(s, "user: <redacted>") {
		t.Errorf("diff of the Secret:\n%s\nwant its keys shown redacted", s)
	}
	for _, v := range []string{"old-password-1234", "new-password-5678", "admin"} {
		if strings.Contains(s, v) || strings.Contains(s, base64.StdEncoding.EncodeToString([]byte(v))) {
			t.Errorf("diff of the Secret shows the value %q:\n%s", v, s)
		}
	}

	// Nothing changed.
	if cm, err := getCM(t, ns, "a"); err != nil || cm.Data["key"] != "v1" {
		t.Errorf("a after a dry run: %v %v", cm.Data, err)
	}
	if _, err := getCM(t, ns, "b"); err != nil {
		t.Errorf("b after a dry run: %v", err)
	}
	if _, err := getCM(t, ns, "c"); !apierrors.IsNotFound(err) {
		t.Errorf("c after a dry run: %v, want not found", err)
	}
}

// An admission policy that echoes a Secret's password in its rejection
// message stands for any server-side check that quotes object data.
func TestSecretValuesNeverInErrors(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	policy := fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: %[1]s}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [secrets]}
  validations:
  - expression: "!has(object.data) || !('password' in object.data)"
    messageExpression: "'password ' + string(object.data.password) + ' is not allowed'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: %[1]s}
spec:
  policyName: %[1]s
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: %[1]s}}
`, ns)
	policyOpts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "policy"}, Prune: true}
	res, err := a.Apply(ctx(t), load(t, map[string]string{"policy.yaml": policy}), policyOpts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("apply policy: %v %v", err, res.Failed)
	}
	t.Cleanup(func() { // prune the cluster-scoped policy
		policyOpts.Inventory = res.Inventory
		_, _ = a.Apply(ctx(t), nil, policyOpts)
	})

	const password = "hunter2-correct-horse"
	encoded := base64.StdEncoding.EncodeToString([]byte(password))
	// Wait until the policy is in force, and check the server really
	// echoes the password, so that the assertions below can fail.
	raw := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "raw"}, Data: map[string][]byte{"password": []byte(password)}}
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := env.Kube.CoreV1().Secrets(ns).Create(ctx(t), raw, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || !strings.Contains(err.Error(), encoded) {
			return fmt.Errorf("policy not in force yet: %v", err)
		}
		return nil
	})

	objs := load(t, map[string]string{"s.yaml": secret("s", password)})
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err = a.Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) != 1 {
		t.Fatalf("failed = %v, want the Secret refused", res.Failed)
	}
	var msgs []string
	msgs = append(msgs, res.Failed[0].Error())
	diffs, err := a.DryRun(ctx(t), objs, opts)
	if err != nil || len(diffs) != 1 || diffs[0].Err == nil {
		t.Fatalf("dry run = %+v, %v; want the refusal", diffs, err)
	}
	msgs = append(msgs, diffs[0].Err.Error())
	for _, msg := range msgs {
		if !strings.Contains(msg, "is not allowed") || !strings.Contains(msg, "<redacted>") {
			t.Errorf("error %q, want the server's message with the value redacted", msg)
		}
		if strings.Contains(msg, password) || strings.Contains(msg, encoded) {
			t.Errorf("error %q shows the Secret's value", msg)
		}
	}
	var oe k8s.ObjectError
	if !errors.As(error(res.Failed[0]), &oe) || oe.Ref.Kind != "Secret" {
		t.Errorf("failure %v does not name the Secret", res.Failed[0])
	}
}

// TestDriftChecksOnlyWhatMoved: with the resourceVersions of ALUMIINI's
// own apply, a drift check of untouched objects reads one list and sends
// no dry run; an object another writer edited is still found and
// corrected, and one deleted is found missing.
func TestDriftChecksOnlyWhatMoved(t *testing.T) {
	ns := env.Namespace(t)
	files := map[string]string{}
	for i := range 5 {
		files[fmt.Sprintf("cm-%d.yaml", i)] = configMap(fmt.Sprintf("cm-%d", i), "git")
	}
	objs := load(t, files)
	a, count := countingApplier(t)
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), objs, opts)
	if err != nil || len(res.Failed) > 0 || len(res.Versions) != 5 {
		t.Fatalf("apply: %v %v, versions %v", err, res.Failed, res.Versions)
	}
	opts.Inventory, opts.Hashes, opts.Versions = res.Inventory, res.Hashes, res.Versions

	dryRuns, reads := count("PATCH", "dryRun=All"), count("GET", "/namespaces/"+ns+"/configmaps/")
	lists := count("GET", "/namespaces/"+ns+"/configmaps?")
	if moved, err := a.Moved(ctx(t), res.Inventory, res.Versions, opts); err != nil || moved {
		t.Fatalf("Moved right after the apply = %v, %v; want false", moved, err)
	}
	if n := count("GET", "/namespaces/"+ns+"/configmaps?") - lists; n != 1 || count("GET", "/namespaces/"+ns+"/configmaps/") != reads {
		t.Fatalf("Moved sent %d lists and some single reads; want one list", n)
	}
	got, err := a.Drift(ctx(t), objs, opts, v1alpha1.DriftCorrect)
	if err != nil || len(got.Drifted)+len(got.Missing)+len(got.Failed) > 0 {
		t.Fatalf("untouched: %+v, %v; want no drift", got, err)
	}
	if n, m := count("PATCH", "dryRun=All")-dryRuns, count("GET", "/namespaces/"+ns+"/configmaps/")-reads; n != 0 || m != 0 || got.DryRuns != 0 {
		t.Fatalf("untouched: %d dry runs and %d single reads; want none (one list)", n, m)
	}

	cms := env.Kube.CoreV1().ConfigMaps(ns)
	cm, _ := getCM(t, ns, "cm-1")
	cm.Data["key"] = "hand-edited"
	if _, err := cms.Update(ctx(t), cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx(t), "cm-3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	opts.Versions = got.Versions
	if moved, err := a.Moved(ctx(t), res.Inventory, opts.Versions, opts); err != nil || !moved {
		t.Fatalf("Moved after an edit and a delete = %v, %v; want true", moved, err)
	}
	got, err = a.Drift(ctx(t), objs, opts, v1alpha1.DriftCorrect)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, got.Failed)
	wantNames(t, "drifted", got.Drifted, "ConfigMap/cm-1")
	wantNames(t, "missing", got.Missing, "ConfigMap/cm-3")
	wantNames(t, "corrected", got.Corrected, "ConfigMap/cm-1", "ConfigMap/cm-3")
	if got.DryRuns != 2 {
		t.Fatalf("%d dry runs, want 2: the edited and the deleted object", got.DryRuns)
	}
	if cm, err := getCM(t, ns, "cm-1"); err != nil || cm.Data["key"] != "git" {
		t.Fatalf("cm-1 after Correct: %v %v", cm, err)
	}
	// The corrected objects' new versions are known: the next check is quiet again.
	opts.Versions = got.Versions
	if got, err = a.Drift(ctx(t), objs, opts, v1alpha1.DriftDetect); err != nil || got.DryRuns != 0 || len(got.Drifted)+len(got.Missing) > 0 {
		t.Fatalf("after Correct: %+v, %v; want in sync with no dry run", got, err)
	}
}

// TestQuietDriftChecksSendNoRequest: with the MoveWatch, once a check has
// listed the objects in place, the next checks of the untouched repository
// send no request at all; an edit, a delete, removed or rewritten owner
// labels by another writer still send the check back to its list, which
// finds the move.
func TestQuietDriftChecksSendNoRequest(t *testing.T) {
	ns := env.Namespace(t)
	files := map[string]string{}
	for i := range 4 {
		files[fmt.Sprintf("cm-%d.yaml", i)] = configMap(fmt.Sprintf("cm-%d", i), "git")
	}
	watches, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	a, count := countingApplier(t, k8s.WithMoveWatch(watches, nil))
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), load(t, files), opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("apply: %v %v", err, res.Failed)
	}
	moved := func() bool {
		t.Helper()
		m, err := a.Moved(ctx(t), res.Inventory, res.Versions, opts)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	requests := func() int { return count("GET", "") }

	// The first checks list while the watch starts; then they go quiet.
	testenv.Eventually(t, 30*time.Second, func() error {
		before := requests()
		if moved() {
			t.Fatal("Moved = true for untouched objects")
		}
		if n := requests() - before; n != 0 {
			return fmt.Errorf("an untouched check sent %d requests", n)
		}
		return nil
	})
	for range 3 {
		before := requests()
		if moved() || requests() != before {
			t.Fatalf("a quiet check moved or sent %d requests", requests()-before)
		}
	}

	cms := env.Kube.CoreV1().ConfigMaps(ns)
	changes := []struct {
		what   string
		change func(t *testing.T)
	}{
		{"an edit", func(t *testing.T) {
			cm, _ := getCM(t, ns, "cm-1")
			cm.Data["key"] = "hand-edited"
			if _, err := cms.Update(ctx(t), cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed labels", func(t *testing.T) {
			cm, _ := getCM(t, ns, "cm-2")
			cm.Labels = nil
			if _, err := cms.Update(ctx(t), cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"the owner label pointed at another repository", func(t *testing.T) {
			cm, _ := getCM(t, ns, "cm-0")
			cm.Labels[v1alpha1.LabelName] = "someone-else"
			if _, err := cms.Update(ctx(t), cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"the namespace label removed", func(t *testing.T) {
			cm, _ := getCM(t, ns, "cm-1")
			delete(cm.Labels, v1alpha1.LabelNamespace)
			if _, err := cms.Update(ctx(t), cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"a delete", func(t *testing.T) {
			if err := cms.Delete(ctx(t), "cm-3", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range changes {
		// Back in place and quiet first: the check lists until it settles.
		res, err = a.Apply(ctx(t), load(t, files), opts)
		if err != nil || len(res.Failed) > 0 {
			t.Fatalf("re-apply before %s: %v %v", c.what, err, res.Failed)
		}
		testenv.Eventually(t, 30*time.Second, func() error {
			before := requests()
			if moved() || requests() != before {
				return fmt.Errorf("not quiet yet before %s", c.what)
			}
			return nil
		})
		c.change(t)
		// The event may still be in flight for a moment; the check must
		// find the move within that.
		testenv.Eventually(t, 10*time.Second, func() error {
			if !moved() {
				return fmt.Errorf("Moved = false after %s", c.what)
			}
			return nil
		})
	}
}
