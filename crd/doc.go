// Package crd is the home of ALUMIINI's Kubernetes API: the GitRepository
// custom resource lives in the versioned sub-package v1alpha1, and the CRD
// manifest generated from it lives in deploy/crd. Nothing of ours is imported
// here: every other package may depend on crd, never the other way round.
package crd
