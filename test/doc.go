// Package test holds ALUMIINI's end-to-end tests and the real servers they
// and the unit packages share: testenv starts a kube-apiserver and etcd built
// from source, gitserver serves repositories through the real git
// http-backend. Nothing outside tests imports these packages.
package test
