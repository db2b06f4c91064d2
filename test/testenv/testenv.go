// Package testenv starts a real control plane (kube-apiserver + etcd, built
// from source by test/controlplane/build.sh and cached per user) through
// controller-runtime's envtest, with the GitRepository CRD installed.
//
// A package that needs the API server starts one environment in TestMain and
// shares it between its tests; each test works in its own namespace.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Env is a running control plane and clients for it.
type Env struct {
	Config  *rest.Config
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface

	env *envtest.Environment
	seq atomic.Int64
}

// RepoRoot returns the root of the ALUMIINI source tree.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir returns the directory holding kube-apiserver and etcd: the
// KUBEBUILDER_ASSETS variable when set (make test sets it), else whatever
// build.sh prints, building the binaries on a cold cache.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "test", "controlplane", "build.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build control plane with test/controlplane/build.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts a control plane with the CRDs of deploy/crd installed.
func Start() (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(RepoRoot(), "deploy", "crd")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start control plane from %s: %w", assets, err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	e := &Env{Config: cfg, env: env}
	if e.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if e.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return e, nil
}

// KubeConfig returns a kubeconfig for a cluster-admin user of the control
// plane, for programs run outside the test process.
func (e *Env) KubeConfig() ([]byte, error) {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "alumiini-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("add control plane user: %w", err)
	}
	return user.KubeConfig()
}

// Stop stops the control plane.
func (e *Env) Stop() error { return e.env.Stop() }

// Main is TestMain for a package whose tests share one control plane: it
// starts it, stores it in *env, runs the tests, runs cleanups and stops it.
func Main(m *testing.M, env **Env, cleanups ...func()) {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	for _, cleanup := range cleanups {
		cleanup()
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stop:", err)
	}
	os.Exit(code)
}

// Namespace creates a fresh namespace for one test and deletes it when the
// test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", e.seq.Add(1), sanitize(t.Name()))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.Kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

// sanitize turns a test name into a DNS label fragment.
func sanitize(s string) string {
	s = strings.ToLower(s)
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < 40; i++ {
		c := s[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b = append(b, c)
		} else if len(b) > 0 && b[len(b)-1] != '-' {
			b = append(b, '-')
		}
	}
	return strings.Trim(string(b), "-")
}

// Eventually polls cond every 20ms until it returns nil or the deadline
// passes, then fails the test with cond's last error. It is the only way
// tests here wait: never a bare sleep.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	EventuallyEvery(t, timeout, 20*time.Millisecond, cond)
}

// EventuallyEvery is Eventually polling every period, for conditions
// costly enough to load what the test measures.
func EventuallyEvery(t testing.TB, timeout, period time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, period, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// Poll calls cond every period until it returns nil, and returns nil; or
// until timeout passed, and returns cond's last error.
func Poll(timeout, period time.Duration, cond func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-deadline.C:
			return err
		case <-tick.C:
		}
	}
}

// Consistently checks cond every period for window, and fails the test at
// its first error: asserting that something does not happen over a time.
func Consistently(t testing.TB, window, period time.Duration, cond func() error) {
	t.Helper()
	end := time.NewTimer(window)
	defer end.Stop()
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-end.C:
			return
		case <-tick.C:
		}
	}
}

// Hold waits d: a measurement window, or a fault a test injects on
// purpose, never a wait for something to happen.
func Hold(d time.Duration) { <-time.After(d) }

// ServiceAccountKubeConfig returns a kubeconfig that authenticates as
// ServiceAccount namespace/name with a token from the TokenRequest API,
// valid for ttl: a program run with it has exactly the rights RBAC grants
// that ServiceAccount, as in a cluster.
func (e *Env) ServiceAccountKubeConfig(ctx context.Context, namespace, name string, ttl time.Duration) ([]byte, error) {
	seconds := int64(ttl / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}
	tok, err := e.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: user}
	kc.CurrentContext = "envtest"
	return clientcmd.Write(*kc)
}

// ServiceAccountWithRole creates ServiceAccount namespace/name with a Role
// of rules bound to it, and waits until the authorizer (which learns of
// bindings through a watch) allows the first rule's first verb.
func (e *Env) ServiceAccountWithRole(t testing.TB, namespace, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Rules: rules}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}}
	if _, err := e.Kube.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Kube.RbacV1().Roles(namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Kube.RbacV1().RoleBindings(namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 || len(rules[0].Verbs) == 0 || len(rules[0].Resources) == 0 {
		return
	}
	r := rules[0]
	attrs := authorizationv1.ResourceAttributes{Namespace: namespace, Verb: r.Verbs[0], Resource: r.Resources[0]}
	if len(r.APIGroups) > 0 {
		attrs.Group = r.APIGroups[0]
	}
	Eventually(t, 30*time.Second, func() error {
		return e.Allowed(ctx, "system:serviceaccount:"+namespace+":"+name, attrs)
	})
}

// Allowed returns nil when the authorizer lets user do attrs.
func (e *Env) Allowed(ctx context.Context, user string, attrs authorizationv1.ResourceAttributes) error {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &attrs}}
	got, err := e.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("SubjectAccessReview for %s: %w", user, err)
	}
	if !got.Status.Allowed {
		return fmt.Errorf("%s may not %+v (yet)", user, attrs)
	}
	return nil
}
