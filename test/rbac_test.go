package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// The end-to-end tests run the controller as the ServiceAccount deploy/
// creates, with a token from the TokenRequest API, bound only to the roles
// deploy/ ships: a rule the controller needs and deploy/ lacks fails them.

// rbacInstall says how deploy/'s RBAC is made live for one controller.
type rbacInstall struct {
	saNamespace string // namespace of the ServiceAccount "alumiini"
	suffix      string // appended to the ClusterRole(Binding) names; "" for deploy/'s own
	// drop leaves a rule of a role out, to show the controller needs it.
	drop func(role string, rule rbacv1.PolicyRule) bool
	// lockdown leaves the apply rights (alumiini-apply) unbound: the
	// controller then only applies what the ServiceAccounts it
	// impersonates may (docs/tenancy.md).
	lockdown bool
}

// install applies the RBAC of deploy/ as in says, the leader election Role
// in each lease namespace, and waits until the authorizer allows the
// controller to list GitRepositories (it learns of bindings by a watch).
func (in rbacInstall) install(t testing.TB, leaseNamespaces ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := newApplier(false)
	for _, o := range renderDeploy(t) {
		for _, obj := range in.adapt(t, o, leaseNamespaces) {
			if err := live.apply(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
	}
	if in.suffix != "" {
		t.Cleanup(func() { in.uninstall() })
	}
	user := "system:serviceaccount:" + in.saNamespace + ":alumiini"
	testenv.Eventually(t, 30*time.Second, func() error {
		return env.Allowed(ctx, user, authv1.ResourceAttributes{Verb: "list", Group: "alumiini.false.systems", Resource: "gitrepositories"})
	})
	for _, ns := range leaseNamespaces {
		testenv.Eventually(t, 30*time.Second, func() error {
			return env.Allowed(ctx, user, authv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: "coordination.k8s.io", Resource: "leases"})
		})
	}
}

// adapt returns what to apply for one rendered object of deploy/.
func (in rbacInstall) adapt(t testing.TB, o *unstructured.Unstructured, leaseNamespaces []string) []*unstructured.Unstructured {
	switch o.GetKind() {
	case "Namespace":
		if in.saNamespace == deployNamespace {
			return []*unstructured.Unstructured{o}
		}
	case "ServiceAccount":
		o.SetNamespace(in.saNamespace)
		return []*unstructured.Unstructured{o}
	case "ClusterRole":
		if in.lockdown && o.GetName() == applyRole {
			return nil
		}
		in.dropRules(t, o)
		o.SetName(o.GetName() + in.suffix)
		return []*unstructured.Unstructured{o}
	case "ClusterRoleBinding":
		if in.lockdown && o.GetName() == applyRole {
			return nil
		}
		o.SetName(o.GetName() + in.suffix)
		_ = unstructured.SetNestedField(o.Object, o.Object["roleRef"].(map[string]any)["name"].(string)+in.suffix, "roleRef", "name")
		in.retarget(o)
		return []*unstructured.Unstructured{o}
	case "FlowSchema":
		// This install's ServiceAccount, its Leases in the tests'
		// --lease-namespace instead of alumiini-system; none without one.
		if len(leaseNamespaces) == 0 {
			return nil
		}
		o.SetName(o.GetName() + in.suffix)
		rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "rules")
		for _, r := range rules {
			rule := r.(map[string]any)
			for _, s := range rule["subjects"].([]any) {
				s.(map[string]any)["serviceAccount"].(map[string]any)["namespace"] = in.saNamespace
			}
			for _, rr := range rule["resourceRules"].([]any) {
				var namespaces []any
				for _, ns := range leaseNamespaces {
					namespaces = append(namespaces, ns)
				}
				rr.(map[string]any)["namespaces"] = namespaces
			}
		}
		_ = unstructured.SetNestedSlice(o.Object, rules, "spec", "rules")
		return []*unstructured.Unstructured{o}
	case "Role", "RoleBinding":
		var out []*unstructured.Unstructured
		for _, ns := range leaseNamespaces {
			c := o.DeepCopy()
			c.SetNamespace(ns)
			in.dropRules(t, c)
			in.retarget(c)
			out = append(out, c)
		}
		return out
	}
	return nil
}

// retarget points a binding at this install's ServiceAccount.
func (in rbacInstall) retarget(o *unstructured.Unstructured) {
	subjects, found, _ := unstructured.NestedSlice(o.Object, "subjects")
	if !found {
		return
	}
	for _, s := range subjects {
		s.(map[string]any)["namespace"] = in.saNamespace
	}
	_ = unstructured.SetNestedSlice(o.Object, subjects, "subjects")
}

func (in rbacInstall) dropRules(t testing.TB, o *unstructured.Unstructured) {
	if in.drop == nil || o.GetKind() == "RoleBinding" {
		return
	}
	var role rbacv1.ClusterRole // a Role has the same rules field
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, r := range role.Rules {
		if in.drop(o.GetName(), r) {
			continue
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&r)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, u)
	}
	o.Object["rules"] = kept
}

func (in rbacInstall) uninstall() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rbac := env.Kube.RbacV1()
	for _, name := range []string{controllerRole, applyRole} {
		_ = rbac.ClusterRoleBindings().Delete(ctx, name+in.suffix, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(ctx, name+in.suffix, metav1.DeleteOptions{})
	}
	_ = env.Kube.FlowcontrolV1().FlowSchemas().Delete(ctx, "alumiini-leases"+in.suffix, metav1.DeleteOptions{})
}

// serviceAccountKubeconfig writes a kubeconfig with a fresh token of
// ServiceAccount namespace/alumiini.
func serviceAccountKubeconfig(t testing.TB, namespace string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, err := env.ServiceAccountKubeConfig(ctx, namespace, "alumiini", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig-sa")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// shippedIdentity installs deploy/'s RBAC as shipped (and its leader
// election Role in the lease namespace the flags name) and returns a
// kubeconfig of its ServiceAccount.
func shippedIdentity(t testing.TB, flags []string) string {
	t.Helper()
	var leaseNamespaces []string
	for i := 0; i+1 < len(flags); i++ {
		if flags[i] == "--lease-namespace" {
			leaseNamespaces = append(leaseNamespaces, flags[i+1])
		}
	}
	rbacInstall{saNamespace: deployNamespace}.install(t, leaseNamespaces...)
	return serviceAccountKubeconfig(t, deployNamespace)
}

// TestShippedRBACRulesAreNeeded runs the controller as a ServiceAccount
// bound to deploy/'s roles with one rule removed, and shows what then
// fails; lockdown mode shows that alumiini-controller alone (alumiini-apply
// unbound) is enough when every GitRepository acts as a ServiceAccount.
func TestShippedRBACRulesAreNeeded(t *testing.T) {
	impersonate := func(role string, r rbacv1.PolicyRule) bool { return slices.Contains(r.Verbs, "impersonate") }
	tests := []struct {
		name     string
		install  rbacInstall
		flags    []string
		phase    v1alpha1.Phase
		wantMsgs []string
		wantLog  string // when set, the controller's log says it and no phase is awaited
	}{
		{name: "as shipped", phase: v1alpha1.PhaseSynced},
		{name: "apply rights removed", phase: v1alpha1.PhaseFailed, wantMsgs: []string{"forbidden", `resource "configmaps"`},
			install: rbacInstall{drop: func(role string, _ rbacv1.PolicyRule) bool { return role == applyRole }}},
		{name: "lockdown", phase: v1alpha1.PhaseSynced, install: rbacInstall{lockdown: true},
			flags: []string{"--default-service-account", "deployer"}},
		{name: "lockdown without impersonate", phase: v1alpha1.PhaseFailed, wantMsgs: []string{"cannot impersonate"},
			install: rbacInstall{lockdown: true, drop: impersonate}, flags: []string{"--default-service-account", "deployer"}},
		// Without lockdown, alumiini-apply's "*" would grant it anyway. The
		// log quotes the API server's message inside a field, hence \".
		{name: "lockdown without status rights", wantLog: `cannot patch resource \"gitrepositories/status\"`, flags: []string{"--default-service-account", "deployer"},
			install: rbacInstall{lockdown: true, drop: func(_ string, r rbacv1.PolicyRule) bool {
				return slices.Contains(r.Resources, "gitrepositories/status")
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, repo, first := appsRepo(t)
			tenant(t, ns, "deployer")
			tt.install.saNamespace, tt.install.suffix = ns, "-"+ns
			tt.install.install(t)
			ctrl := startController(t, append([]string{"--watch-namespace", ns, "--kubeconfig", serviceAccountKubeconfig(t, ns)}, tt.flags...)...)
			ctrl.waitReady(t)
			createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h"})
			if tt.wantLog != "" {
				testenv.Eventually(t, 60*time.Second, func() error {
					if !strings.Contains(ctrl.Logs(), tt.wantLog) {
						return fmt.Errorf("the controller's log does not say %q", tt.wantLog)
					}
					return nil
				})
				if st := getRepo(t, ns, "apps").Status; st.Phase != "" {
					t.Errorf("status written without the rights to: phase %q", st.Phase)
				}
				return
			}
			got := waitPhase(t, ns, "apps", tt.phase, first, 60*time.Second)
			for _, want := range tt.wantMsgs {
				if !strings.Contains(got.Status.Message, want) {
					t.Errorf("message %q does not say %q", got.Status.Message, want)
				}
			}
			if v, _ := configMapValue(ns, "a"); (v == "1") != (tt.phase == v1alpha1.PhaseSynced) {
				t.Errorf("ConfigMap a = %q in phase %s", v, tt.phase)
			}
		})
	}
}

// TestLeaseRequestsAreServedAsLeaderElection: with deploy/ installed, the
// API server itself classifies the controller's Lease requests into the
// built-in leader-election priority level (its Priority and Fairness
// response header says so), and its other requests not.
func TestLeaseRequestsAreServedAsLeaderElection(t *testing.T) {
	ns := env.Namespace(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", shippedIdentity(t, []string{"--lease-namespace", ns}))
	if err != nil {
		t.Fatal(err)
	}
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	plc, err := env.Kube.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, "leader-election", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the API server has no leader-election priority level: %v", err)
	}
	// level is the UID of the priority level that served a GET of path as
	// the controller.
	level := func(path string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %s as the controller: %s", path, resp.Status)
		}
		return resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID")
	}
	testenv.Eventually(t, 30*time.Second, func() error { // the API server's flow control reads the FlowSchema asynchronously
		if got := level("/apis/coordination.k8s.io/v1/namespaces/" + ns + "/leases/alumiini-leader"); got != string(plc.UID) {
			return fmt.Errorf("a Lease GET was served by priority level %q, want leader-election (%s)", got, plc.UID)
		}
		return nil
	})
	if got := level("/apis/alumiini.false.systems/v1alpha1/namespaces/" + ns + "/gitrepositories"); got == string(plc.UID) {
		t.Fatal("a GitRepository list was served as leader election: the FlowSchema matches more than Leases")
	}
}
