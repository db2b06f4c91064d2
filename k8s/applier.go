package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

const (
	// crdTimeout bounds the wait for an applied CRD to be Established and
	// served, before its custom resources are applied.
	crdTimeout = 30 * time.Second
	// deleteTimeout bounds the wait for an object recreated because of an
	// immutable field change to be gone (finalizers may hold it).
	deleteTimeout = time.Minute
	pollInterval  = 100 * time.Millisecond
)

var errDuplicate = errors.New("defined more than once in the manifests; keep one definition")

// Owner names the GitRepository that applies the objects.
type Owner struct{ Namespace, Name string }

// key is the owner's namespace/name, as its labels on applied objects say.
func (o Owner) key() string { return o.Namespace + "/" + o.Name }

// Options are everything one sync knows about its GitRepository.
type Options struct {
	Owner           Owner
	TargetNamespace string               // spec.targetNamespace
	Prune           bool                 // spec.prune
	SkipPrune       bool                 // set by the caller when manifests failed to parse
	Force           bool                 // spec.force
	Inventory       []v1alpha1.ObjectRef // previous inventory (from status)
	Hashes          map[string]string    // previous content hashes, keyed by ObjectKey(ref)
	// Versions are the resourceVersions objects had after ALUMIINI last
	// wrote (or checked) them, keyed by ObjectKey: a drift check skips the
	// dry run of an object still at its version.
	Versions   map[string]string
	RolloutRef string // spec.rolloutRef.name: the KULTA Rollout that takes the Deployment
	// ServiceAccount is spec.serviceAccountName: a ServiceAccount in
	// Owner.Namespace impersonated for every apply, dry-run, prune and read
	// of applied objects. Empty: the Applier's default (WithDefaultServiceAccount),
	// else the controller's own rights.
	ServiceAccount string
}

// ObjectError is one object the API server (or ALUMIINI) refused.
type ObjectError struct {
	Ref v1alpha1.ObjectRef
	Err error
}

func (e ObjectError) Error() string { return describe(e.Ref) + ": " + e.Err.Error() }
func (e ObjectError) Unwrap() error { return e.Err }

// Result is the outcome of one Apply.
type Result struct {
	Inventory []v1alpha1.ObjectRef // sorted, stable: store it in the status
	Applied   []v1alpha1.ObjectRef // sent to the API server
	Unchanged []v1alpha1.ObjectRef // skipped: same content hash as the last sync
	Pruned    []v1alpha1.ObjectRef
	Failed    []ObjectError
	Hashes    map[string]string // content hashes for the next sync, keyed by ObjectKey
	// Versions are the resourceVersions of the objects after this apply
	// (for the next drift check): those sent, and those skipped as
	// unchanged that Options.Versions knew.
	Versions map[string]string
	// HandedOver lists the Deployments sent to the Rollout of
	// Options.RolloutRef (not in Applied: no Deployment was applied). They
	// stay in the inventory.
	HandedOver []Handover
}

// Applier applies manifests to one cluster. It is safe for concurrent use
// and keeps no per-repository state: the REST mapper and clients are
// shared by every sync.
type Applier struct {
	client dynamic.Interface // reads and writes applied objects: the controller's, or a tenant's (see as)
	// meta lists objects as metadata only, as protobuf: the drift check's
	// and the claim check's lists need names, labels and resourceVersions,
	// and cost the API server less to encode that way. Same identity as client.
	meta   metadata.Interface
	ctrl   dynamic.Interface // the controller's own, for GitRepositories
	user   string            // the impersonated user of client, "" for the controller itself
	mapper *restmapper.DeferredDiscoveryRESTMapper
	// mappings keeps what mapper found lately: a lookup walks every served
	// resource, and a quiet drift check needs one per kind.
	mappings *mappingCache
	disc     discovery.DiscoveryInterface // uncached: to tell "not served" from "discovery failed"

	tenants               *tenantClients
	defaultServiceAccount string
	moves                 *MoveWatch // nil: every drift check lists
}

// ApplierOption configures NewApplier.
type ApplierOption func(*Applier)

// WithDefaultServiceAccount makes GitRepositories that name no
// ServiceAccount act as ServiceAccount name of their own namespace
// (lockdown mode, --default-service-account). docs/tenancy.md.
func WithDefaultServiceAccount(name string) ApplierOption {
	return func(a *Applier) { a.defaultServiceAccount = name }
}

// WithMoveWatch lets drift checks skip their list when a metadata watch
// of the applied objects saw nothing move (MoveWatch). Its watches run, as
// the controller itself, until ctx is done; log says when one is down.
func WithMoveWatch(ctx context.Context, log *zap.Logger) ApplierOption {
	return func(a *Applier) { a.moves = newMoveWatch(ctx, a.meta, log) }
}

// Forget drops what the Applier keeps about a removed repository
// (namespace/name).
func (a *Applier) Forget(key string) {
	if a.moves != nil {
		a.moves.Forget(key)
	}
}

// NewApplier returns an Applier for the cluster of cfg. A client-side rate
// limit of cfg (QPS > 0) is shared by the clients impersonating tenants;
// without one (QPS < 0, or 0, which would otherwise mean client-go's
// default of 5 and throttle thousands of repositories) the API server's
// priority and fairness and the controller's bound on concurrent syncs
// pace the requests.
func NewApplier(cfg *rest.Config, options ...ApplierOption) (*Applier, error) {
	cfg = rest.CopyConfig(cfg)
	switch {
	case cfg.RateLimiter != nil:
	case cfg.QPS > 0:
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	default:
		cfg.QPS = -1
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes HTTP client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes discovery client: %w", err)
	}
	client, err := dynamic.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	meta, err := metadata.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	a := &Applier{client: client, ctrl: client, meta: meta, mapper: mapper, mappings: &mappingCache{}, disc: disc,
		tenants: newTenantClients(cfg, maxTenantClients)}
	for _, o := range options {
		o(a)
	}
	return a, nil
}

// Apply server-side applies objs, CRDs and Namespaces first, then prunes
// what left git. An object the API server refuses is listed in
// Result.Failed and does not stop the others. The error is only for a
// failure of the whole sync (the API server unreachable, ctx done); the
// Result is usable even then: its inventory still holds every object that
// may exist.
func (a *Applier) Apply(ctx context.Context, objs []*unstructured.Unstructured, opts Options) (Result, error) {
	a, err := a.as(opts)
	if err != nil {
		return Result{Inventory: opts.Inventory}, err
	}
	r := a.newRun(opts, objs)
	err = r.applyAll(ctx, objs, true)
	if err == nil {
		err = r.prune(ctx)
	}
	return r.result(), err
}

// run is the state of one Apply, Drift or DryRun call.
type run struct {
	a           *Applier
	opts        Options
	old         map[string]v1alpha1.ObjectRef // the previous inventory
	inv         map[string]v1alpha1.ObjectRef // the inventory being built
	seen        map[string]bool               // the objects in git
	deployments []string                      // the Deployments in git, with spec.rolloutRef
	res         Result
	batchClaims bool   // several new objects: list claims per resource and namespace (claims.go)
	claims      claims // what listClaims found, by resource and namespace
	// listed holds, per "resource|namespace", this repository's live
	// objects there by name (drift.go); nil when the list failed.
	listed map[string]map[string]*unstructured.Unstructured
}

// newRun starts the new inventory as a copy of the old one: an object only
// leaves it once it is known to be gone or no longer ours, so no failure
// can make ALUMIINI forget an object it may have to prune later. objs are
// the objects the run handles.
func (a *Applier) newRun(opts Options, objs []*unstructured.Unstructured) *run {
	r := &run{a: a, opts: opts, old: map[string]v1alpha1.ObjectRef{}, inv: map[string]v1alpha1.ObjectRef{},
		seen: map[string]bool{}, res: Result{Hashes: map[string]string{}, Versions: map[string]string{}},
		batchClaims: len(objs) >= len(opts.Inventory)+claimsBatchMin, claims: claims{},
		listed: map[string]map[string]*unstructured.Unstructured{}}
	if opts.RolloutRef != "" {
		r.deployments = deploymentsIn(objs)
	}
	for _, ref := range opts.Inventory {
		r.old[ObjectKey(ref)] = ref
		r.inv[ObjectKey(ref)] = ref
	}
	return r
}

func (r *run) result() Result {
	r.res.Inventory = make([]v1alpha1.ObjectRef, 0, len(r.inv))
	for _, ref := range r.inv {
		r.res.Inventory = append(r.res.Inventory, ref)
	}
	for _, refs := range [][]v1alpha1.ObjectRef{r.res.Inventory, r.res.Applied, r.res.Unchanged} {
		sortRefs(refs)
	}
	return r.res
}

// applyAll applies objs in order: CRDs and Namespaces, a wait until the
// CRDs are served, then everything else. With useHashes, an object whose
// content hash matches the previous sync is not sent again.
func (r *run) applyAll(ctx context.Context, objs []*unstructured.Unstructured, useHashes bool) error {
	objs = sortObjects(objs)
	var crds []*unstructured.Unstructured
	i := 0
	for ; i < len(objs) && servedFirst(refOf(objs[i])); i++ {
		sent, err := r.applyOne(ctx, objs[i], useHashes)
		if err != nil {
			return err
		}
		if sent != nil && isCRD(refOf(sent)) {
			crds = append(crds, sent)
		}
	}
	if err := r.waitEstablished(ctx, crds); err != nil {
		return err
	}
	for ; i < len(objs); i++ {
		if _, err := r.applyOne(ctx, objs[i], useHashes); err != nil {
			return err
		}
	}
	return nil
}

func sortObjects(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	sorted := slices.Clone(objs)
	slices.SortStableFunc(sorted, func(a, b *unstructured.Unstructured) int {
		return compareRefs(refOf(a), refOf(b))
	})
	return sorted
}

// applyOne applies one object and records the outcome. It returns the
// object as sent (nil when not sent), and an error only when the whole
// sync must stop.
func (r *run) applyOne(ctx context.Context, obj *unstructured.Unstructured, useHashes bool) (*unstructured.Unstructured, error) {
	obj, m, err := r.prepare(ctx, obj)
	ref := refOf(obj)
	key := ObjectKey(ref)
	if r.seen[key] {
		return nil, r.fail(ctx, ref, obj, errDuplicate)
	}
	r.seen[key] = true
	send := obj // what goes to the API server: the object, or its part for the Rollout
	if err == nil && r.handsOver(ref) {
		send, err = r.toRollout(obj)
	}
	if err != nil {
		return nil, r.fail(ctx, ref, obj, err)
	}
	hash := contentHash(send)
	if _, known := r.old[key]; known && useHashes && r.opts.Hashes[key] == hash {
		r.res.Unchanged = append(r.res.Unchanged, ref)
		r.keep(ref, hash, r.opts.Versions[key])
		return nil, nil
	}
	if send != obj {
		return nil, r.handOver(ctx, ref, send, hash)
	}
	if _, known := r.old[key]; !known {
		if err := r.claimable(ctx, m, obj); err != nil {
			return nil, r.fail(ctx, ref, obj, err)
		}
	}
	applied, err := r.a.deliver(ctx, m, obj, r.opts.Force)
	if err != nil {
		return nil, r.fail(ctx, ref, obj, err)
	}
	r.res.Applied = append(r.res.Applied, ref)
	r.keep(ref, hash, applied.GetResourceVersion())
	return obj, nil
}

// keep records an object in the new inventory with its content hash and,
// when known, the resourceVersion it has now.
func (r *run) keep(ref v1alpha1.ObjectRef, hash, version string) {
	ref = canonical(ref)
	key := ObjectKey(ref)
	r.inv[key] = ref
	r.res.Hashes[key] = hash
	if version != "" {
		r.res.Versions[key] = version
	}
}

// fail records a refused object, or returns err when it means the whole
// sync cannot go on. A Secret's values are scrubbed from the message.
func (r *run) fail(ctx context.Context, ref v1alpha1.ObjectRef, obj *unstructured.Unstructured, err error) error {
	if fatal(ctx, err) {
		return fmt.Errorf("%s: %w", describe(ref), err)
	}
	err = r.a.explain(err)
	if isSecret(ref) && obj != nil {
		err = errors.New(scrub(err.Error(), obj))
	}
	r.res.Failed = append(r.res.Failed, ObjectError{Ref: ref, Err: err})
	delete(r.res.Hashes, ObjectKey(ref))
	delete(r.res.Versions, ObjectKey(ref))
	return nil
}

// fatal reports whether err stops the whole sync rather than one object:
// the context is done, or the API server could not be reached at all.
func fatal(ctx context.Context, err error) bool {
	var urlErr *url.Error
	return ctx.Err() != nil || errors.As(err, &urlErr)
}

// prepare returns a copy of obj ready to send, with its REST mapping:
// server-set metadata dropped, ownership labels set, a namespaced object
// without a namespace given the target namespace, a cluster-scoped one
// stripped of any namespace.
func (r *run) prepare(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, *meta.RESTMapping, error) {
	out := obj.DeepCopy()
	stripServerMetadata(out)
	labels := out.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[v1alpha1.LabelName] = r.opts.Owner.Name
	labels[v1alpha1.LabelNamespace] = r.opts.Owner.Namespace
	out.SetLabels(labels)

	gvk := out.GroupVersionKind()
	m, err := r.a.mapping(ctx, gvk.GroupKind(), gvk.Version)
	switch {
	case err != nil:
		r.guessNamespace(out)
		return out, nil, err
	case m.Scope.Name() == meta.RESTScopeNameNamespace:
		if out.GetNamespace() == "" {
			out.SetNamespace(r.defaultNamespace())
		}
	default:
		out.SetNamespace("")
	}
	return out, m, r.rolloutInGit(refOf(out))
}

// defaultNamespace is spec.targetNamespace, else the GitRepository's own
// namespace, which keeps a tenant's objects in the tenant's namespace.
func (r *run) defaultNamespace() string {
	if r.opts.TargetNamespace != "" {
		return r.opts.TargetNamespace
	}
	return r.opts.Owner.Namespace
}

// guessNamespace fills in the namespace of an object whose kind the API
// server does not serve (yet), so that it still matches its inventory
// entry and is never pruned by mistake.
func (r *run) guessNamespace(obj *unstructured.Unstructured) {
	if obj.GetNamespace() != "" {
		return
	}
	obj.SetNamespace(r.defaultNamespace())
	if _, ok := r.old[ObjectKey(refOf(obj))]; !ok {
		obj.SetNamespace("")
	}
}

// mapping finds the resource of a kind. On a miss it refreshes discovery
// once, as the kind may come from a CRD applied moments ago.
func (a *Applier) mapping(ctx context.Context, gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	key := mappingKey{gk, strings.Join(versions, ",")}
	if m := a.mappings.get(key); m != nil {
		return m, nil
	}
	m, err := a.mapper.RESTMappingWithContext(ctx, gk, versions...)
	if meta.IsNoMatchError(err) {
		a.mappings.clear()
		a.mapper.ResetWithContext(ctx)
		m, err = a.mapper.RESTMappingWithContext(ctx, gk, versions...)
	}
	if meta.IsNoMatchError(err) {
		return nil, fmt.Errorf("%w (check apiVersion and kind, or install the CustomResourceDefinition that defines it)", err)
	}
	if err == nil {
		a.mappings.put(key, m)
	}
	return m, err
}

// mappingKey is a lookup of Applier.mapping: a kind and the versions asked.
type mappingKey struct {
	gk       schema.GroupKind
	versions string
}

// mappingTTL bounds how long a mapping is trusted without asking the
// mapper again. The cache is cleared when a lookup misses, but the mapper
// may also refresh on its own (or just after a lookup began), and a kind
// whose served versions changed meanwhile must not stay mapped wrong.
const mappingTTL = time.Minute

// mappingCache holds the REST mappings found lately.
type mappingCache struct {
	mu sync.Mutex
	m  map[mappingKey]cachedMapping
}

type cachedMapping struct {
	m  *meta.RESTMapping
	at time.Time
}

func (c *mappingCache) get(k mappingKey) *meta.RESTMapping {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || time.Since(e.at) > mappingTTL {
		return nil
	}
	return e.m
}

func (c *mappingCache) put(k mappingKey, m *meta.RESTMapping) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[mappingKey]cachedMapping{}
	}
	c.m[k] = cachedMapping{m: m, at: time.Now()}
}

func (c *mappingCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

func (a *Applier) resource(m *meta.RESTMapping, namespace string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.client.Resource(m.Resource).Namespace(namespace)
	}
	return a.client.Resource(m.Resource)
}

// metadataOf is resource for metadata-only reads.
func (a *Applier) metadataOf(m *meta.RESTMapping, namespace string) metadata.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.meta.Resource(m.Resource).Namespace(namespace)
	}
	return a.meta.Resource(m.Resource)
}

// ssa server-side applies obj as ALUMIINI, taking over fields other
// managers changed: git is the source of truth.
func (a *Applier) ssa(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	opts := metav1.ApplyOptions{FieldManager: v1alpha1.FieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return a.resource(m, obj.GetNamespace()).Apply(ctx, obj.GetName(), obj, opts)
}

// deliver sends one prepared object to the cluster, deleting and
// recreating it when an immutable field changed and force allows it, and
// returns the object as the API server stored it.
// (A Deployment handed to a KULTA Rollout goes through handOver instead:
// a Rollout is never deleted.)
func (a *Applier) deliver(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured, force bool) (*unstructured.Unstructured, error) {
	applied, err := a.ssa(ctx, m, obj, false)
	if err == nil || !isImmutable(err) {
		return applied, err
	}
	if !force {
		return nil, fmt.Errorf("%w (an immutable field changed: set spec.force to true to let ALUMIINI delete and recreate the object)", err)
	}
	if err := a.deleteAndWait(ctx, m, obj); err != nil {
		return nil, fmt.Errorf("recreate after an immutable field change: %w", err)
	}
	return a.ssa(ctx, m, obj, false)
}

// isImmutable recognises the API server's refusals of a change to a field
// that cannot change in place.
func isImmutable(err error) bool {
	msg := err.Error()
	return apierrors.IsInvalid(err) &&
		(strings.Contains(msg, "immutable") || strings.Contains(msg, "updates to statefulset spec for fields other than"))
}

// deleteAndWait deletes obj and waits until it is gone.
func (a *Applier) deleteAndWait(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured) error {
	res := a.resource(m, obj.GetNamespace())
	background := metav1.DeletePropagationBackground
	err := res.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &background})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, pollInterval, deleteTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil && ctx.Err() == nil && wait.Interrupted(err) {
		return fmt.Errorf("still being deleted after %v; check its finalizers", deleteTimeout)
	}
	return err
}

// waitEstablished waits until each CRD is Established and its kind is in
// API discovery, so that custom resources applied next can be mapped. A
// CRD that does not get there is reported as failed.
func (r *run) waitEstablished(ctx context.Context, crds []*unstructured.Unstructured) error {
	for _, crd := range crds {
		var why string
		err := wait.PollUntilContextTimeout(ctx, pollInterval, crdTimeout, true, func(ctx context.Context) (bool, error) {
			var err error
			why, err = r.a.established(ctx, crd.GetName())
			return why == "" && err == nil, err
		})
		if err == nil {
			continue
		}
		if ctx.Err() == nil && wait.Interrupted(err) {
			err = fmt.Errorf("not established within %v: %s", crdTimeout, why)
		}
		ref := refOf(crd)
		r.res.Applied = slices.DeleteFunc(r.res.Applied, func(a v1alpha1.ObjectRef) bool { return a == ref })
		if err := r.fail(ctx, ref, crd, err); err != nil {
			return err
		}
	}
	return nil
}

// established returns why the named CRD cannot be used yet, or "" when it
// can.
func (a *Applier) established(ctx context.Context, name string) (string, error) {
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crd, err := a.client.Resource(crds).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	why := "waiting for the Established condition"
	for _, c := range conditions {
		c, _ := c.(map[string]interface{})
		switch {
		case c["type"] == "Established" && c["status"] == "True":
			why = ""
		case c["type"] == "NamesAccepted" && c["status"] == "False":
			return fmt.Sprintf("%v: %v", c["type"], c["message"]), nil
		}
	}
	if why != "" {
		return why, nil
	}
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	if _, err := a.mapping(ctx, schema.GroupKind{Group: group, Kind: kind}); meta.IsNoMatchError(err) {
		return "not yet served by API discovery", nil
	} else if err != nil {
		return "", err
	}
	return "", nil
}
