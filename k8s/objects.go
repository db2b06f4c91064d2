package k8s

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unique"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// ObjectKey identifies an object whatever API version it is served at:
// group/Kind/namespace/name (the group is empty for the core API).
func ObjectKey(ref v1alpha1.ObjectRef) string {
	return ref.Group + "/" + ref.Kind + "/" + ref.Namespace + "/" + ref.Name
}

// canonical is ref with its group, version, kind and namespace shared
// with the other refs made about the same time (unique.Make keeps one copy
// while a handle lives; this drops the handles, so the sharing lasts until
// a GC, which is enough: a sync makes its refs together). An inventory
// is kept per repository for as long as it lives and repeats these for
// every object, each decoded as an allocation of its own: at 10,000 idle
// repositories, strings left by decoding were a tenth of the live heap
// (docs/benchmarks.md).
func canonical(ref v1alpha1.ObjectRef) v1alpha1.ObjectRef {
	ref.Group = unique.Make(ref.Group).Value()
	ref.Version = unique.Make(ref.Version).Value()
	ref.Kind = unique.Make(ref.Kind).Value()
	ref.Namespace = unique.Make(ref.Namespace).Value()
	return ref
}

func refOf(obj *unstructured.Unstructured) v1alpha1.ObjectRef {
	gvk := obj.GroupVersionKind()
	return v1alpha1.ObjectRef{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind,
		Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// describe names an object for messages: "Deployment shop/web", or
// "Namespace shop" for a cluster-scoped one.
func describe(ref v1alpha1.ObjectRef) string {
	if ref.Namespace == "" {
		return ref.Kind + " " + ref.Name
	}
	return ref.Kind + " " + ref.Namespace + "/" + ref.Name
}

func isCRD(ref v1alpha1.ObjectRef) bool {
	return ref.Group == "apiextensions.k8s.io" && ref.Kind == "CustomResourceDefinition"
}

func isNamespace(ref v1alpha1.ObjectRef) bool { return ref.Group == "" && ref.Kind == "Namespace" }

func isSecret(ref v1alpha1.ObjectRef) bool { return ref.Group == "" && ref.Kind == "Secret" }

// stage is one step of the apply order: the kinds applied together.
type stage struct {
	name  string
	kinds []groupKind
	// first: the API server must serve these (CRDs established) before any
	// later stage is applied.
	first bool
	rest  bool // every kind no stage names
}

// groupKind names a kind; group anyGroup matches the kind in every group.
type groupKind struct{ group, kind string }

const anyGroup = "*"

// applyStages is the apply order: what others depend on comes first. CRDs
// and Namespaces, then policy and identity, configuration, storage,
// networking, workloads; custom resources after workloads, as their
// controllers are often deployed by the same repository; admission
// webhooks last (their backing Service must exist before they can admit
// anything). docs/apply.md shows the same table.
var applyStages = []stage{
	{name: "definitions", first: true, kinds: []groupKind{{"apiextensions.k8s.io", "CustomResourceDefinition"}}},
	{name: "namespaces", first: true, kinds: []groupKind{{"", "Namespace"}}},
	{name: "policy", kinds: anyKinds("ResourceQuota", "LimitRange", "PriorityClass", "NetworkPolicy")},
	{name: "identity", kinds: anyKinds("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")},
	{name: "configuration", kinds: anyKinds("Secret", "ConfigMap")},
	{name: "storage", kinds: anyKinds("StorageClass", "PersistentVolume", "PersistentVolumeClaim")},
	{name: "networking", kinds: anyKinds("Service", "IngressClass")},
	{name: "workloads", kinds: anyKinds("Pod", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")},
	{name: "custom resources and the rest", rest: true},
	{name: "admission", kinds: anyKinds("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")},
}

func anyKinds(kinds ...string) []groupKind {
	out := make([]groupKind, len(kinds))
	for i, k := range kinds {
		out[i] = groupKind{anyGroup, k}
	}
	return out
}

// kindRank is the index in applyStages of the stage that applies ref.
func kindRank(ref v1alpha1.ObjectRef) int {
	rest := 0
	for i, st := range applyStages {
		if st.rest {
			rest = i
		}
		for _, gk := range st.kinds {
			if gk.kind == ref.Kind && (gk.group == anyGroup || gk.group == ref.Group) {
				return i
			}
		}
	}
	return rest
}

// servedFirst reports whether ref belongs to a stage that must be served
// before later stages are applied.
func servedFirst(ref v1alpha1.ObjectRef) bool { return applyStages[kindRank(ref)].first }

// compareRefs is the stable apply order: by rank, then group, kind,
// namespace and name.
func compareRefs(a, b v1alpha1.ObjectRef) int {
	if ra, rb := kindRank(a), kindRank(b); ra != rb {
		return ra - rb
	}
	return strings.Compare(ObjectKey(a), ObjectKey(b))
}

func sortRefs(refs []v1alpha1.ObjectRef) { slices.SortStableFunc(refs, compareRefs) }

// contentHash fingerprints the object as it will be sent (namespace and
// ownership labels included). 128 bits are plenty to notice a change.
func contentHash(obj *unstructured.Unstructured) string {
	in := obj.Object
	if obj.GetAnnotations()[v1alpha1.AnnotationSOPSDigest] != "" {
		// Decrypted from SOPS: the digest of the ciphertext stands for the
		// values, so that no hash of a secret is kept (a low-entropy value
		// could be guessed from it).
		in = map[string]any{"apiVersion": obj.GetAPIVersion(), "kind": obj.GetKind(), "metadata": obj.Object["metadata"]}
	}
	b, err := json.Marshal(in) // map keys are sorted: stable
	if err != nil {
		return "" // never equal to a stored hash, so the object is sent
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// normalize returns a copy of obj without status and the metadata the API
// server sets, so that a dry-run result and the live object compare on
// content only.
func normalize(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	delete(out.Object, "status")
	stripServerMetadata(out)
	return out
}

// stripServerMetadata removes the metadata the API server sets. A manifest
// saved with kubectl get -o yaml carries it, and a stale resourceVersion
// or managedFields would make the apply fail.
func stripServerMetadata(obj *unstructured.Unstructured) {
	md, ok := obj.Object["metadata"].(map[string]interface{})
	if !ok {
		return
	}
	for _, f := range [...]string{"managedFields", "resourceVersion", "uid", "generation",
		"creationTimestamp", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		delete(md, f)
	}
}

const (
	redacted        = "<redacted>"
	redactedChanged = "<redacted, changed>"
	lastApplied     = "kubectl.kubernetes.io/last-applied-configuration"
)

// redactPair hides the values of a Secret (before or after may be nil)
// while keeping visible which keys exist and which changed. kubectl's
// last-applied annotation holds the whole Secret, so it goes too.
func redactPair(before, after *unstructured.Unstructured) {
	for _, field := range []string{"data", "stringData"} {
		var old, cur map[string]interface{}
		if before != nil {
			old, _ = before.Object[field].(map[string]interface{})
		}
		if after != nil {
			cur, _ = after.Object[field].(map[string]interface{})
		}
		for k, v := range cur {
			if ov, ok := old[k]; ok && !reflect.DeepEqual(ov, v) {
				cur[k] = redactedChanged
			} else {
				cur[k] = redacted
			}
		}
		for k := range old {
			old[k] = redacted
		}
	}
	for _, obj := range []*unstructured.Unstructured{before, after} {
		if obj == nil {
			continue
		}
		if a := obj.GetAnnotations(); a[lastApplied] != "" {
			a[lastApplied] = redacted
			obj.SetAnnotations(a)
		}
	}
}

// scrub removes a Secret's values from a message (an admission webhook or
// policy may echo them), in the raw, decoded and quoted forms a server
// might print. Values shorter than four bytes are left: replacing them
// would garble the message without protecting anything guessable.
func scrub(msg string, obj *unstructured.Unstructured) string {
	for _, field := range []string{"data", "stringData"} {
		values, _ := obj.Object[field].(map[string]interface{})
		for _, v := range values {
			s, _ := v.(string)
			forms := []string{s, strconv.Quote(s)}
			if field == "data" {
				if b, err := base64.StdEncoding.DecodeString(s); err == nil {
					forms = append(forms, string(b), strconv.Quote(string(b)))
				}
			}
			for _, f := range forms {
				f = strings.Trim(f, `"`)
				if len(f) >= 4 {
					msg = strings.ReplaceAll(msg, f, redacted)
				}
			}
		}
	}
	return msg
}

// diff is a unified diff of two objects as YAML (either may be nil), with
// server fields dropped and Secret values redacted.
func diff(ref v1alpha1.ObjectRef, before, after *unstructured.Unstructured) string {
	if before != nil {
		before = normalize(before)
	}
	if after != nil {
		after = normalize(after)
	}
	if isSecret(ref) {
		redactPair(before, after)
	}
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(toYAML(before)), B: difflib.SplitLines(toYAML(after)),
		FromFile: "live", ToFile: "git", Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("diff of %s: %v", describe(ref), err)
	}
	return text
}

func toYAML(obj *unstructured.Unstructured) string {
	if obj == nil {
		return ""
	}
	b, err := yaml.Marshal(obj.Object)
	if err != nil {
		return fmt.Sprintf("# cannot render: %v\n", err)
	}
	return string(b)
}
