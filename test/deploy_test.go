package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/false-systems/alumiini/test/testenv"
)

// The tests in this file check deploy/, the install manifests: rendered by
// kustomize as kubectl renders them, accepted by a real API server
// (server-side dry-run), and as hardened and least-privileged as
// docs/install.md says.

const (
	deployNamespace   = "alumiini-system"
	controllerRole    = "alumiini-controller"
	applyRole         = "alumiini-apply"
	leaderRole        = "alumiini-leader-election"
	deployTestManager = "alumiini-deploy-test"
)

// renderKustomization builds dir with kustomize as `kubectl apply -k` does,
// in kubectl's order (namespaces and CRDs first).
func renderKustomization(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range resMap.Resources() {
		// Through JSON, so numbers are int64 as everywhere in client-go.
		body, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(body); err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		objs = append(objs, o)
	}
	return objs
}

func renderDeploy(t testing.TB) []*unstructured.Unstructured {
	return renderKustomization(t, filepath.Join(testenv.RepoRoot(), "deploy"))
}

// find returns the rendered object of that kind and name, or fails the test.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("deploy/ renders no %s %q", kind, name)
	return nil
}

// typed converts a rendered object into its API type.
func typed[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &out); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return &out
}

// applier sends objects to the test API server by server-side apply, with
// strict field validation so a misspelt field is an error, not a no-op.
type applier struct {
	mapper meta.RESTMapper
	dryRun bool
}

func newApplier(dryRun bool) applier {
	disco := memory.NewMemCacheClient(env.Kube.Discovery())
	return applier{mapper: restmapper.NewDeferredDiscoveryRESTMapper(disco), dryRun: dryRun}
}

func (a applier) apply(ctx context.Context, o *unstructured.Unstructured) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("map %s: %w", gvk, err)
	}
	var res dynamic.ResourceInterface = env.Dynamic.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		res = env.Dynamic.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	body, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: deployTestManager, Force: &force, FieldValidation: "Strict"}
	if a.dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := res.Patch(ctx, o.GetName(), types.ApplyPatchType, body, opts); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
	return nil
}

// ensureDeployNamespace really creates alumiini-system (and, when asked, its
// ServiceAccount). Dry-run does not persist anything, and the API server
// refuses even a dry-run create of a namespaced object in a namespace that
// does not exist, so the namespace has to be real. It is inert, and the
// control plane is thrown away with the test binary; it is never deleted,
// because with no namespace controller running it would stay Terminating.
func ensureDeployNamespace(t *testing.T, objs []*unstructured.Unstructured, withServiceAccount bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live := newApplier(false)
	if err := live.apply(ctx, find(t, objs, "Namespace", deployNamespace)); err != nil {
		t.Fatal(err)
	}
	if withServiceAccount {
		if err := live.apply(ctx, find(t, objs, "ServiceAccount", "alumiini")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeployManifestsAcceptedByAPIServer(t *testing.T) {
	objs := renderDeploy(t)

	want := map[string]int{
		"CustomResourceDefinition": 1, "Namespace": 1, "ServiceAccount": 1,
		"ClusterRole": 2, "ClusterRoleBinding": 2, "Role": 1, "RoleBinding": 1,
		"Secret": 1, "Deployment": 1, "PodDisruptionBudget": 1, "Service": 1, "Ingress": 1,
	}
	got := map[string]int{}
	for _, o := range objs {
		got[o.GetKind()]++
	}
	for kind, n := range want {
		if got[kind] != n {
			t.Errorf("deploy/ renders %d %s, want %d", got[kind], kind, n)
		}
	}

	// The CRD is already installed by testenv from the same file, so the
	// dry-run below checks the kustomized copy as an update of it.
	ensureDeployNamespace(t, objs, false)
	dry := newApplier(true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	namespaceSeen := false
	for _, o := range objs {
		m, err := dry.mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
		if err != nil {
			t.Errorf("%s %s: the API server does not serve this kind: %v", o.GetKind(), o.GetName(), err)
			continue
		}
		namespaceSeen = namespaceSeen || o.GetKind() == "Namespace"
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() != deployNamespace {
				t.Errorf("%s %s is in namespace %q, want %q", o.GetKind(), o.GetName(), o.GetNamespace(), deployNamespace)
			}
			if !namespaceSeen { // a first install would fail: kubectl applies in this order
				t.Errorf("%s %s comes before its Namespace", o.GetKind(), o.GetName())
			}
		}
		if err := dry.apply(ctx, o); err != nil {
			t.Errorf("server-side dry-run rejected deploy/: %v", err)
		}
	}

	// The check above is only worth something if the server does reject a
	// bad manifest: a misspelt field must fail strict validation.
	bad := find(t, objs, "Deployment", "alumiini").DeepCopy()
	if err := unstructured.SetNestedField(bad.Object, int64(2), "spec", "replica"); err != nil {
		t.Fatal(err)
	}
	if err := dry.apply(ctx, bad); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("a Deployment with the unknown field spec.replica was not rejected: %v", err)
	}
}

// TestDeployPodPassesRestrictedPodSecurity creates (dry-run) a Pod from the
// Deployment's template in alumiini-system, whose label enforces the
// restricted Pod Security Standard: the API server's own PodSecurity
// admission decides, not a list of fields kept here.
func TestDeployPodPassesRestrictedPodSecurity(t *testing.T) {
	objs := renderDeploy(t)
	ensureDeployNamespace(t, objs, true) // a Pod needs its ServiceAccount to exist
	dep := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "alumiini"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := env.Kube.CoreV1().Pods(deployNamespace)
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "alumiini-template", Labels: dep.Spec.Template.Labels},
		Spec:       dep.Spec.Template.Spec,
	}
	if _, err := pods.Create(ctx, pod, dryRun); err != nil {
		t.Fatalf("the controller's pod is refused in %s: %v", deployNamespace, err)
	}

	// Control: the same pod allowed to run as root must be refused, or the
	// namespace does not really enforce the restricted standard.
	root := pod.DeepCopy()
	root.Spec.SecurityContext.RunAsNonRoot = nil
	root.Spec.SecurityContext.RunAsUser = nil
	root.Spec.Containers[0].SecurityContext.RunAsNonRoot = nil
	_, err := pods.Create(ctx, root, dryRun)
	if err == nil || !strings.Contains(err.Error(), "PodSecurity") {
		t.Fatalf("a pod that may run as root was not refused by PodSecurity in %s: %v", deployNamespace, err)
	}
}

func TestDeployControllerHardening(t *testing.T) {
	objs := renderDeploy(t)
	dep := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "alumiini"))
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	podSC, sc := pod.SecurityContext, c.SecurityContext
	if podSC == nil || sc == nil {
		t.Fatalf("pod and container need a securityContext: pod %v, container %v", podSC, sc)
	}

	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas = %s, want 2 (a leader and a standby)", replicas(dep.Spec.Replicas))
	}
	if c.Image != "alumiini:latest" { // make kind-up rewrites exactly this
		t.Errorf("image = %q, want alumiini:latest", c.Image)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy = %q, want IfNotPresent (an image loaded into kind cannot be pulled)", c.ImagePullPolicy)
	}
	if !boolOr(sc.RunAsNonRoot, podSC.RunAsNonRoot) {
		t.Error("runAsNonRoot is not set")
	}
	if uid := int64Or(sc.RunAsUser, podSC.RunAsUser); uid != 65532 {
		t.Errorf("runAsUser = %d, want 65532", uid)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities = %+v, want drop ALL and add none", sc.Capabilities)
	}
	if seccomp := cmpOr(sc.SeccompProfile, podSC.SeccompProfile); seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", seccomp)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
	}

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("missing HTTP probe on %s", want)
			continue
		}
		port := probe.HTTPGet.Port.IntVal
		if probe.HTTPGet.Port.StrVal != "" {
			port = ports[probe.HTTPGet.Port.StrVal]
		}
		if probe.HTTPGet.Path != want || port != 8081 {
			t.Errorf("probe = %s on port %d, want %s on 8081", probe.HTTPGet.Path, port, want)
		}
	}
	if ports["webhook"] != 8080 || ports["metrics"] != 9090 || ports["health"] != 8081 {
		t.Errorf("container ports = %v, want webhook 8080, metrics 9090, health 8081", ports)
	}

	if !slices.Contains(c.Args, "--leader-elect") {
		t.Errorf("args %v lack --leader-elect", c.Args)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	emptyDir := func(path string) {
		if v, ok := volumes[mounts[path].Name]; !ok || v.EmptyDir == nil {
			t.Errorf("%s is not an emptyDir mount (the root filesystem is read-only)", path)
		}
	}
	emptyDir("/tmp")
	emptyDir(flagValue(t, c.Args, "--cache-dir"))
	if dir := flagValue(t, c.Args, "--cache-dir"); dir != "/var/cache/alumiini" {
		t.Errorf("--cache-dir = %q, want /var/cache/alumiini", dir)
	}
	secretFile := flagValue(t, c.Args, "--webhook-secret-file")
	m := mounts[filepath.Dir(secretFile)]
	if v, ok := volumes[m.Name]; !ok || v.Secret == nil || v.Secret.SecretName != "alumiini-webhook" || filepath.Base(secretFile) != "token" {
		t.Errorf("--webhook-secret-file %s is not the key token of Secret alumiini-webhook mounted at %s", secretFile, filepath.Dir(secretFile))
	}
	find(t, objs, "Secret", "alumiini-webhook")

	envVars := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		envVars[e.Name] = e
	}
	if envVars["ALUMIINI_LOG_FORMAT"].Value != "json" {
		t.Errorf("ALUMIINI_LOG_FORMAT = %q, want json", envVars["ALUMIINI_LOG_FORMAT"].Value)
	}
	for name, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		if f := envVars[name].ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != field {
			t.Errorf("%s is not taken from %s by the downward API", name, field)
		}
	}

	svc := typed[corev1.Service](t, find(t, objs, "Service", "alumiini"))
	for _, p := range svc.Spec.Ports {
		if want := map[string]int32{"webhook": 8080, "metrics": 9090}[p.Name]; p.Port != want || p.TargetPort.StrVal != p.Name {
			t.Errorf("Service port %s = %d -> %s, want %d -> the container's %s port", p.Name, p.Port, p.TargetPort.String(), want, p.Name)
		}
	}
	if !labelsMatch(svc.Spec.Selector, dep.Spec.Template.Labels) || !labelsMatch(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels) {
		t.Errorf("selectors %v / %v do not select the pod labels %v", svc.Spec.Selector, dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	}
}

func TestDeployRBACSeparatesControllerFromApplyRights(t *testing.T) {
	objs := renderDeploy(t)
	dep := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "alumiini"))
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: dep.Spec.Template.Spec.ServiceAccountName, Namespace: dep.Namespace}

	ctrl := typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", controllerRole))
	for _, r := range ctrl.Rules {
		for _, field := range [][]string{r.Verbs, r.Resources, r.APIGroups, r.NonResourceURLs} {
			if slices.Contains(field, "*") {
				t.Errorf("ClusterRole %s grants \"*\" in %+v: the controller's own rights must be explicit", controllerRole, r)
			}
		}
	}
	find(t, objs, "ClusterRole", applyRole)

	// Each ClusterRole has its own binding to the controller's
	// ServiceAccount, so narrowing or removing the apply rights leaves the
	// controller's own intact.
	bindings := map[string]string{} // role -> binding
	for _, o := range objs {
		if o.GetKind() != "ClusterRoleBinding" {
			continue
		}
		b := typed[rbacv1.ClusterRoleBinding](t, o)
		if !slices.Equal(b.Subjects, []rbacv1.Subject{sa}) {
			t.Errorf("ClusterRoleBinding %s binds %+v, want only %+v", b.Name, b.Subjects, sa)
		}
		bindings[b.RoleRef.Name] = b.Name
	}
	if bindings[controllerRole] == "" || bindings[applyRole] == "" || bindings[controllerRole] == bindings[applyRole] {
		t.Errorf("want separate ClusterRoleBindings for %s and %s, got %v", controllerRole, applyRole, bindings)
	}
	rb := typed[rbacv1.RoleBinding](t, find(t, objs, "RoleBinding", leaderRole))
	if rb.Namespace != deployNamespace || rb.RoleRef.Kind != "Role" || !slices.Equal(rb.Subjects, []rbacv1.Subject{sa}) {
		t.Errorf("RoleBinding %s/%s = %+v -> %+v, want Role %s for %+v", rb.Namespace, rb.Name, rb.Subjects, rb.RoleRef, leaderRole, sa)
	}
}

// TestDeployControllerRightsAreEnoughAndNoMore asks the API server's RBAC
// authorizer what the controller's own roles allow, without the apply
// rights: they are applied for real and bound to a user of this test.
func TestDeployControllerRightsAreEnoughAndNoMore(t *testing.T) {
	objs := renderDeploy(t)
	ensureDeployNamespace(t, objs, false)
	const user = "deploy-test:controller"
	subject := []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: user}}
	roleRef := func(kind, name string) rbacv1.RoleRef {
		return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: name}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := newApplier(false)
	for _, o := range []*unstructured.Unstructured{find(t, objs, "ClusterRole", controllerRole), find(t, objs, "Role", leaderRole)} {
		if err := live.apply(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	rbac := env.Kube.RbacV1()
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deploy-test-controller"}, Subjects: subject, RoleRef: roleRef("ClusterRole", controllerRole)}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{}) })
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deploy-test-leader", Namespace: deployNamespace}, Subjects: subject, RoleRef: roleRef("Role", leaderRole)}
	if _, err := rbac.RoleBindings(deployNamespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbac.RoleBindings(deployNamespace).Delete(context.Background(), rb.Name, metav1.DeleteOptions{})
	})

	type check struct {
		ns, verb, group, resource, sub, url string
	}
	gr := func(ns, verb, group, resource string) check {
		return check{ns: ns, verb: verb, group: group, resource: resource}
	}
	allowed := []check{
		gr("", "list", "alumiini.false.systems", "gitrepositories"),
		gr("", "watch", "alumiini.false.systems", "gitrepositories"),
		gr("team-a", "patch", "alumiini.false.systems", "gitrepositories"),
		{ns: "team-a", verb: "update", group: "alumiini.false.systems", resource: "gitrepositories", sub: "status"},
		{ns: "team-a", verb: "patch", group: "alumiini.false.systems", resource: "gitrepositories", sub: "status"},
		gr("team-a", "create", "", "events"),
		gr("team-a", "create", "events.k8s.io", "events"),
		gr("team-a", "get", "", "secrets"),
		gr("team-a", "impersonate", "", "serviceaccounts"),
		gr(deployNamespace, "create", "coordination.k8s.io", "leases"),
		gr(deployNamespace, "update", "coordination.k8s.io", "leases"),
		gr(deployNamespace, "list", "coordination.k8s.io", "leases"),
		gr(deployNamespace, "delete", "coordination.k8s.io", "leases"),
		{verb: "get", url: "/apis/apps/v1"},
	}
	denied := []check{
		gr("team-a", "list", "", "secrets"),
		gr("team-a", "delete", "alumiini.false.systems", "gitrepositories"),
		gr("team-a", "create", "apps", "deployments"),
		gr("team-a", "update", "coordination.k8s.io", "leases"),
		gr("", "create", "rbac.authorization.k8s.io", "clusterroles"),
	}
	can := func(c check) (bool, error) {
		sar := &authv1.SubjectAccessReview{Spec: authv1.SubjectAccessReviewSpec{User: user}}
		if c.url != "" {
			sar.Spec.NonResourceAttributes = &authv1.NonResourceAttributes{Path: c.url, Verb: c.verb}
		} else {
			sar.Spec.ResourceAttributes = &authv1.ResourceAttributes{Namespace: c.ns, Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.sub}
		}
		got, err := env.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return got.Status.Allowed, nil
	}

	// The authorizer learns of new bindings through a watch: wait until
	// everything the controller needs is allowed, then the denials mean
	// something.
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, c := range allowed {
			ok, err := can(c)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("controller roles do not allow %+v", c)
			}
		}
		return nil
	})
	for _, c := range denied {
		if ok, err := can(c); err != nil || ok {
			t.Errorf("controller roles allow %+v (err %v); that belongs to %s or to no one", c, err, applyRole)
		}
	}
}

// TestDeployDocumentedOverlay builds the example overlay of
// docs/install.md against this checkout's deploy/, checks that it does what
// the docs say (image, webhook token, Ingress, narrowed apply rights) and
// that the API server accepts the result.
func TestDeployDocumentedOverlay(t *testing.T) {
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(testenv.RepoRoot(), "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	const token = "s3cr3t-from-overlay\n"
	files := map[string]string{
		"webhook-token":      token,
		"kustomization.yaml": strings.Replace(documentedOverlay(t), remoteBase, base, 1),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	objs := renderKustomization(t, dir)

	secret := typed[corev1.Secret](t, find(t, objs, "Secret", "alumiini-webhook"))
	if got := string(secret.Data["token"]); got != token || len(secret.StringData) > 0 {
		t.Errorf("Secret alumiini-webhook: data.token = %q, stringData %v; want only the overlay's token", got, secret.StringData)
	}
	dep := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "alumiini"))
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/platform/alumiini:v0.1.0" {
		t.Errorf("image = %q, want the overlay's registry.example.com/platform/alumiini:v0.1.0", img)
	}
	ing := typed[networkingv1.Ingress](t, find(t, objs, "Ingress", "alumiini-webhook"))
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" || ing.Spec.Rules[0].Host != "alumiini.example.com" || len(ing.Spec.TLS) != 1 {
		t.Errorf("Ingress spec = %+v, want class nginx, host alumiini.example.com and TLS", ing.Spec)
	}
	apply := typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", applyRole))
	for _, r := range apply.Rules {
		if slices.Contains(r.Resources, "*") || slices.Contains(r.Verbs, "*") {
			t.Errorf("the narrowed %s still grants %+v", applyRole, r)
		}
	}

	ensureDeployNamespace(t, objs, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dry := newApplier(true)
	for _, o := range objs {
		if err := dry.apply(ctx, o); err != nil {
			t.Errorf("server-side dry-run rejected the documented overlay: %v", err)
		}
	}
}

// remoteBase is how the docs' example overlay names deploy/.
const remoteBase = "https://github.com/false-systems/alumiini//deploy?ref=main"

// documentedOverlay returns the first yaml block after the comment in
// docs/install.md that names TestDeployDocumentedOverlay.
func documentedOverlay(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "TestDeployDocumentedOverlay")
	if ok {
		_, rest, ok = strings.Cut(rest, "```yaml\n")
	}
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed || !strings.Contains(block, remoteBase) {
		t.Fatalf("docs/install.md: want a yaml block with the base %s after the comment naming TestDeployDocumentedOverlay", remoteBase)
	}
	return block
}

// flagValue returns the value of --name=value in args, or fails the test.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Fatalf("args %v lack %s=...", args, name)
	return ""
}

func replicas(n *int32) string {
	if n == nil {
		return "unset"
	}
	return fmt.Sprint(*n)
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// boolOr, int64Or and cmpOr give the container's setting, else the pod's.
func boolOr(c, p *bool) bool {
	if c != nil {
		return *c
	}
	return p != nil && *p
}

func int64Or(c, p *int64) int64 {
	if c != nil {
		return *c
	}
	if p != nil {
		return *p
	}
	return -1
}

func cmpOr[T any](c, p *T) *T {
	if c != nil {
		return c
	}
	return p
}

// TestDeployClusterOverlay: deploy/ with the component deploy/cluster/ runs three active replicas in
// cluster mode, opens the member port only to members, lets a drain take
// one at a time, and the API server accepts it.
func TestDeployClusterOverlay(t *testing.T) {
	overlay := t.TempDir()
	root := filepath.Join(testenv.RepoRoot(), "deploy")
	rel, err := filepath.Rel(overlay, root) // kustomize refuses absolute roots
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf("resources: [%q]\ncomponents: [%q]\n", rel, filepath.Join(rel, "cluster"))
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := renderKustomization(t, overlay)
	d := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "alumiini"))
	c := d.Spec.Template.Spec.Containers[0]
	if *d.Spec.Replicas != 3 || !slices.Contains(c.Args, "--cluster") || slices.Contains(c.Args, "--leader-elect") || !slices.Contains(c.Args, "--cluster-addr=:4020") {
		t.Fatalf("cluster overlay Deployment: replicas %d, args %v; want 3 replicas with --cluster --cluster-addr=:4020 and no --leader-elect", *d.Spec.Replicas, c.Args)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
	}) {
		t.Fatalf("cluster overlay: no POD_IP from status.podIP in %v", c.Env)
	}
	svc := typed[corev1.Service](t, find(t, objs, "Service", "alumiini-members"))
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Spec.Ports[0].Port != 4020 {
		t.Fatalf("members Service: clusterIP %q ports %v, want headless on 4020", svc.Spec.ClusterIP, svc.Spec.Ports)
	}
	np := typed[networkingv1.NetworkPolicy](t, find(t, objs, "NetworkPolicy", "alumiini-members"))
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() == 4020 && (len(rule.From) != 1 || rule.From[0].PodSelector == nil ||
				rule.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "alumiini") {
				t.Fatalf("NetworkPolicy admits port 4020 from %v, want only alumiini Pods", rule.From)
			}
		}
	}
	pdb := typed[policyv1.PodDisruptionBudget](t, find(t, objs, "PodDisruptionBudget", "alumiini"))
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Fatalf("cluster PDB: %+v, want maxUnavailable 1", pdb.Spec)
	}

	ensureDeployNamespace(t, objs, false)
	dry := newApplier(true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range objs {
		if err := dry.apply(ctx, o); err != nil {
			t.Errorf("server-side dry-run rejected deploy/cluster/: %v", err)
		}
	}
}
