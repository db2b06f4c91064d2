// Package v1alpha1 holds the GitRepository API types of the group
// alumiini.false.systems. The CRD in deploy/crd and zz_generated.deepcopy.go
// are generated from these types by `make generate`; the markers on the
// fields are the validation the API server enforces.
//
// +kubebuilder:object:generate=true
// +groupName=alumiini.false.systems
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of the API.
const (
	Group   = "alumiini.false.systems"
	Version = "v1alpha1"
)

// GroupVersion is the API group and version of GitRepository.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// GitRepositoryResource is the plural resource name, for dynamic clients.
var GitRepositoryResource = GroupVersion.WithResource("gitrepositories")

// AddToScheme registers the types of this package with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &GitRepository{}, &GitRepositoryList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
