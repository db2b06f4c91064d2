package k8s

import (
	"encoding/base64"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unique"
	"unsafe"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func TestApplyOrder(t *testing.T) {
	refs := []v1alpha1.ObjectRef{
		{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration", Name: "hook"},
		{Group: "example.com", Kind: "Widget", Namespace: "a", Name: "w"},
		{Group: "apps", Kind: "Deployment", Namespace: "a", Name: "web"},
		{Kind: "ConfigMap", Namespace: "b", Name: "x"},
		{Kind: "ConfigMap", Namespace: "a", Name: "y"},
		{Kind: "Service", Namespace: "a", Name: "web"},
		{Kind: "Namespace", Name: "a"},
		{Group: "example.com", Kind: "Namespace", Namespace: "a", Name: "not-core"},
		{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition", Name: "widgets.example.com"},
		{Kind: "ServiceAccount", Namespace: "a", Name: "sa"},
	}
	sortRefs(refs)
	var got []string
	for _, r := range refs {
		got = append(got, r.Kind+"/"+r.Namespace+"/"+r.Name)
	}
	want := []string{
		"CustomResourceDefinition//widgets.example.com", "Namespace//a", "ServiceAccount/a/sa",
		"ConfigMap/a/y", "ConfigMap/b/x", "Service/a/web", "Deployment/a/web",
		"Namespace/a/not-core", "Widget/a/w", "ValidatingWebhookConfiguration//hook",
	}
	if !slices.Equal(got, want) {
		t.Errorf("order:\n got %v\nwant %v", got, want)
	}
}

func TestObjectKeyIgnoresVersion(t *testing.T) {
	v1 := v1alpha1.ObjectRef{Group: "autoscaling", Version: "v1", Kind: "HorizontalPodAutoscaler", Namespace: "a", Name: "h"}
	v2 := v1
	v2.Version = "v2"
	if ObjectKey(v1) != ObjectKey(v2) || ObjectKey(v1) != "autoscaling/HorizontalPodAutoscaler/a/h" {
		t.Errorf("keys %q and %q, want one version-free key", ObjectKey(v1), ObjectKey(v2))
	}
}

func obj(m map[string]interface{}) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: m}
}

func TestSameContentIgnoresServerFields(t *testing.T) {
	dry := obj(map[string]interface{}{"kind": "ConfigMap", "data": map[string]interface{}{"k": "v"},
		"metadata": map[string]interface{}{"name": "c", "resourceVersion": "2", "generation": int64(2),
			"managedFields": []interface{}{"x"}}})
	live := obj(map[string]interface{}{"kind": "ConfigMap", "data": map[string]interface{}{"k": "v"},
		"status": map[string]interface{}{"ready": true},
		"metadata": map[string]interface{}{"name": "c", "resourceVersion": "1", "generation": int64(1),
			"uid": "u", "creationTimestamp": "2020-01-01T00:00:00Z"}})
	if !sameContent(live, dry) {
		t.Error("objects differing only in server fields and status compare as different")
	}
	live.Object["data"] = map[string]interface{}{"k": "edited"}
	if sameContent(live, dry) {
		t.Error("objects with different data compare as equal")
	}
	if _, ok := dry.Object["metadata"].(map[string]interface{})["resourceVersion"]; !ok {
		t.Error("sameContent modified its argument")
	}
}

func TestSecretDiffIsRedacted(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	live := obj(map[string]interface{}{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]interface{}{"name": "s", "annotations": map[string]interface{}{
			lastApplied: `{"data":{"token":"` + b64("old-token-value") + `"}}`}},
		"data": map[string]interface{}{"token": b64("old-token-value"), "same": b64("same-value"), "gone": b64("gone-value")}})
	git := obj(map[string]interface{}{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]interface{}{"name": "s"},
		"data":       map[string]interface{}{"token": b64("new-token-value"), "same": b64("same-value")},
		"stringData": map[string]interface{}{"plain": "plain-text-value"}})
	d := diff(refOf(git), live, git)
	for _, secret := range []string{"old-token-value", "new-token-value", "same-value", "gone-value", "plain-text-value"} {
		if strings.Contains(d, secret) || strings.Contains(d, b64(secret)) {
			t.Errorf("diff shows %q:\n%s", secret, d)
		}
	}
	for _, want := range []string{"+  token: <redacted, changed>", "-  gone: <redacted>", "  same: <redacted>", "+  plain: <redacted>"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if live.Object["data"].(map[string]interface{})["token"] != b64("old-token-value") {
		t.Error("diff redacted its argument in place")
	}
}

func TestScrub(t *testing.T) {
	secret := obj(map[string]interface{}{"kind": "Secret",
		"data":       map[string]interface{}{"a": base64.StdEncoding.EncodeToString([]byte("line1\nline2")), "short": "YWI="},
		"stringData": map[string]interface{}{"b": "plain-secret"}})
	tests := []struct{ msg, want string }{
		{"value plain-secret refused", "value <redacted> refused"},
		{"decoded line1\nline2 refused", "decoded <redacted> refused"},
		{`quoted "line1\nline2" refused`, `quoted "<redacted>" refused`},
		{"encoded bGluZTEKbGluZTI= refused", "encoded <redacted> refused"},
		{"short values like ab are left", "short values like ab are left"},
	}
	for _, tt := range tests {
		if got := scrub(tt.msg, secret); got != tt.want {
			t.Errorf("scrub(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

func TestIsRemote(t *testing.T) {
	tests := map[string]bool{
		"../base": false, "deploy.yaml": false, "overlays/prod": false, "github.company/x": false,
		"key=config/app.properties": false, "user-at-host.yaml": false,
		"https://example.com/x.yaml": true, "HTTP://example.com/x": true, "ssh://git@host/repo": true,
		"file:///etc/repo": true, "git::https://host/repo": true, "git@github.com:org/repo": true,
		"github.com/org/repo//deploy?ref=v1": true, "GitHub.com:org/repo": true, "key=https://host/f": true,
		"apiVersion: v1\nkind: x # https://docs": false,
	}
	for ref, want := range tests {
		if got := isRemote(ref); got != want {
			t.Errorf("isRemote(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestCanonicalSharesRepeatedStrings: two refs decoded apart (strings of
// their own) come out of canonical equal and sharing one copy of each
// repeated field; the name stays the ref's own.
func TestCanonicalSharesRepeatedStrings(t *testing.T) {
	fresh := func(s string) string { return strings.Clone(s) }
	ref := func(name string) v1alpha1.ObjectRef {
		return v1alpha1.ObjectRef{Group: fresh("apps"), Version: fresh("v1"), Kind: fresh("Deployment"), Namespace: fresh("shop"), Name: fresh(name)}
	}
	// Handles held for the test: without them a GC between the two calls
	// below could drop the shared copies, which canonical allows.
	held := []unique.Handle[string]{unique.Make("apps"), unique.Make("v1"), unique.Make("Deployment"), unique.Make("shop")}
	defer runtime.KeepAlive(held)
	a, b := ref("web"), ref("api")
	if unsafe.StringData(a.Kind) == unsafe.StringData(b.Kind) {
		t.Fatal("the test's refs share strings before canonical")
	}
	ca, cb := canonical(a), canonical(b)
	if ca != a || cb != b {
		t.Fatalf("canonical changed a value: %+v -> %+v", a, ca)
	}
	for _, f := range []struct {
		field string
		x, y  string
	}{{"group", ca.Group, cb.Group}, {"version", ca.Version, cb.Version}, {"kind", ca.Kind, cb.Kind}, {"namespace", ca.Namespace, cb.Namespace}} {
		if unsafe.StringData(f.x) != unsafe.StringData(f.y) {
			t.Errorf("%s: two copies of %q after canonical", f.field, f.x)
		}
	}
	if unsafe.StringData(ca.Name) != unsafe.StringData(a.Name) {
		t.Error("canonical replaced the name, which is the ref's own")
	}
}
