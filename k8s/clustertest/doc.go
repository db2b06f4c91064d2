// Package clustertest holds the tests of package k8s that need a real API
// server (test/testenv). They live apart so that k8s's own unit tests run
// without starting one.
package clustertest
