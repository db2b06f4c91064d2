// Package cluster runs ALUMIINI replicas as members of one protoactor-go
// cluster so that every replica is active and owns a share of the
// GitRepositories.
//
// Membership comes from coordination.k8s.io Leases (LeaseProvider: one Lease
// per member holding its address and kinds). Everything else is the engine's
// own machinery: the member list, rendezvous placement (disthash identity
// lookup) and remote messaging over gRPC. This package only answers "which
// member owns this repository" and routes a message to that owner; the
// supervisor decides what to run with the answer.
package cluster
