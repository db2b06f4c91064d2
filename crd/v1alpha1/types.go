package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations that ALUMIINI reads or writes (design.md §1).
const (
	// LabelName and LabelNamespace mark every applied object with the
	// GitRepository that owns it. Pruning only deletes objects that still
	// carry both.
	LabelName      = Group + "/name"
	LabelNamespace = Group + "/namespace"

	// AnnotationPrune set to PruneDisabled on a manifest keeps the object in
	// the cluster when it leaves git.
	AnnotationPrune = Group + "/prune"
	PruneDisabled   = "disabled"

	// AnnotationRequestedAt on a GitRepository asks for a sync now whenever
	// its value changes.
	AnnotationRequestedAt = Group + "/requestedAt"

	// AnnotationSOPSDigest marks an object decrypted from a SOPS file with
	// a digest of the file's ciphertext: its content hash covers that
	// digest instead of the decrypted values.
	AnnotationSOPSDigest = Group + "/sops-digest"

	// FieldManager is the server-side apply field manager.
	FieldManager = "alumiini"
)

// Defaults of the spec, mirrored by the +kubebuilder:default markers below so
// that code handling an object the API server has not defaulted (a unit test,
// an old object) agrees with the server.
const (
	DefaultBranch            = "main"
	DefaultInterval          = "5m"
	DefaultReconcileInterval = "10m"
	DefaultTimeout           = "3m"
)

// DriftMode says what the periodic drift check does.
// +kubebuilder:validation:Enum=Correct;Detect;Ignore
type DriftMode string

const (
	DriftCorrect DriftMode = "Correct" // re-apply objects that differ from git
	DriftDetect  DriftMode = "Detect"  // report differences only
	DriftIgnore  DriftMode = "Ignore"  // skip the drift check
)

// Phase summarises the last sync.
// +kubebuilder:validation:Enum=Pending;Syncing;Synced;Failed
type Phase string

const (
	PhasePending Phase = "Pending"
	PhaseSyncing Phase = "Syncing"
	PhaseSynced  Phase = "Synced"
	PhaseFailed  Phase = "Failed"
)

// Condition types (kstatus conventions, plus Drifted).
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
	ConditionDrifted     = "Drifted"
)

// LocalObjectReference names an object in the GitRepository's namespace.
type LocalObjectReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// GitRepositorySpec is what the user asks for: keep the cluster equal to the
// manifests at Path of URL.
type GitRepositorySpec struct {
	// URL of the git repository: https://, http://, ssh://, file:// or the
	// scp-like form user@host:org/repo.git.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^((https?|ssh|file)://\S+|[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:\S+)$`
	URL string `json:"url"`

	// Branch to follow.
	// +kubebuilder:default=main
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Branch string `json:"branch,omitempty"`

	// Tag to pin instead of following the branch; Commit wins over Tag.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Tag string `json:"tag,omitempty"`

	// Commit SHA to pin, in full (40 hexadecimal characters); it wins over
	// Tag and Branch.
	// +kubebuilder:validation:Pattern=`^([0-9a-f]{40})?$`
	// +optional
	Commit string `json:"commit,omitempty"`

	// Path of the manifests inside the repository, relative to its root.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(p, p == '..')",message="path must be relative to the repository root and must not contain '..'"
	// +optional
	Path string `json:"path,omitempty"`

	// Interval between polls of the remote.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Interval metav1.Duration `json:"interval,omitempty"`

	// ReconcileInterval between drift checks against the live cluster.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	ReconcileInterval metav1.Duration `json:"reconcileInterval,omitempty"`

	// Timeout bounds one fetch plus apply.
	// +kubebuilder:default="3m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Timeout metav1.Duration `json:"timeout,omitempty"`

	// TargetNamespace is given to namespaced objects that name none.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	TargetNamespace string `json:"targetNamespace,omitempty"`

	// SecretRef names the git credentials Secret: username+password, or
	// bearerToken, or identity (+known_hosts, optional password), with an
	// optional ca.crt.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`

	// WebhookSecretRef names a Secret whose key "token" verifies this
	// repository's webhooks, overriding the controller-wide secret.
	// +optional
	WebhookSecretRef *LocalObjectReference `json:"webhookSecretRef,omitempty"`

	// RolloutRef names a KULTA Rollout that receives Deployment changes
	// instead of a direct apply.
	// +optional
	RolloutRef *LocalObjectReference `json:"rolloutRef,omitempty"`

	// Suspend stops syncing: webhooks, polls and drift checks are ignored.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Prune deletes objects that were removed from git.
	// +kubebuilder:default=true
	// +optional
	Prune *bool `json:"prune,omitempty"`

	// Drift says what the periodic drift check does.
	// +kubebuilder:default=Correct
	// +optional
	Drift DriftMode `json:"drift,omitempty"`

	// Force recreates an object when an immutable field changed.
	// +optional
	Force bool `json:"force,omitempty"`

	// ServiceAccountName, when set, is impersonated for every apply,
	// dry-run, prune and read of applied objects: the repository gets
	// exactly the rights of system:serviceaccount:<namespace>:<name>.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Decryption decrypts SOPS-encrypted manifests just before they are
	// applied.
	// +optional
	Decryption *Decryption `json:"decryption,omitempty"`

	// Wait, when true, makes a sync wait until the applied objects are
	// healthy (kstatus), within Timeout, before it reports Ready.
	// +optional
	Wait bool `json:"wait,omitempty"`

	// DependsOn lists GitRepositories that must be Ready at their latest
	// commit before this one applies.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	DependsOn []DependencyReference `json:"dependsOn,omitempty"`
}

// Decryption says how to decrypt secrets kept encrypted in git.
type Decryption struct {
	// Provider of the encryption; only sops is supported.
	// +kubebuilder:validation:Enum=sops
	Provider string `json:"provider"`
	// SecretRef names a Secret in the GitRepository's namespace holding the
	// private keys: age keys in entries ending in .agekey, armored PGP keys
	// in entries ending in .asc.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
}

// DependencyReference names another GitRepository; an empty namespace means
// the dependent's own.
type DependencyReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// ObjectRef identifies one applied object in the inventory.
type ObjectRef struct {
	// +optional
	Group string `json:"group,omitempty"`
	// Version the object was applied at.
	// +optional
	Version string `json:"version,omitempty"`
	Kind    string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// GitRepositoryStatus is what ALUMIINI observed and did.
type GitRepositoryStatus struct {
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// LastSyncedCommit is the last commit fully applied.
	// +optional
	LastSyncedCommit string `json:"lastSyncedCommit,omitempty"`
	// LastSyncedShortCommit is LastSyncedCommit cut to 7 characters, for
	// the printer column.
	// +optional
	LastSyncedShortCommit string `json:"lastSyncedShortCommit,omitempty"`
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// LastAttemptedCommit is the last commit a sync was tried for.
	// +optional
	LastAttemptedCommit string `json:"lastAttemptedCommit,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Message is one actionable sentence about the last outcome.
	// +optional
	Message string `json:"message,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Inventory lists the objects this repository applied: the basis of
	// pruning, kept across restarts.
	// +optional
	Inventory []ObjectRef `json:"inventory,omitempty"`
	// LastHandledRequestedAt is the last requestedAt annotation value handled.
	// +optional
	LastHandledRequestedAt string `json:"lastHandledRequestedAt,omitempty"`
}

// GitRepository keeps a cluster equal to the manifests in a git repository.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gitrepo;gitrepos,categories=alumiini
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Branch",type=string,JSONPath=`.spec.branch`
// +kubebuilder:printcolumn:name="Commit",type=string,JSONPath=`.status.lastSyncedShortCommit`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GitRepository struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GitRepositorySpec   `json:"spec"`
	Status GitRepositoryStatus `json:"status,omitempty"`
}

// GitRepositoryList is a list of GitRepositories.
//
// +kubebuilder:object:root=true
type GitRepositoryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GitRepository `json:"items"`
}
