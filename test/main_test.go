package test

import (
	"testing"

	"github.com/false-systems/alumiini/test/testenv"
)

// env is the control plane shared by the end-to-end tests of this package.
var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, controllerBin.remove, pluginBin.remove)
}
