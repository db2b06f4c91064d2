// Command kubectl-alumiini is the kubectl plugin for ALUMIINI: it lists,
// inspects, syncs, suspends, diffs and creates GitRepositories, and checks
// the installation. It talks to the API server with the usual kubeconfig
// flags (k8s.io/cli-runtime) and reads what the repository actors are doing
// from the controller's read-only /debug endpoint, through the API server's
// service proxy (or --controller-url). docs/cli.md is its manual.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

// Exit codes scripts can rely on (docs/cli.md).
const (
	exitOK       = 0
	exitNegative = 1 // the command worked and the answer is "no": differences, a failed sync, a failed check
	exitError    = 2 // the command could not do its job: bad usage, API server unreachable, not found
	exitTimeout  = 3 // --wait gave up before the outcome
)

// exitCode is an error that carries the process exit code.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func negative(format string, args ...any) error {
	return exitCode{code: exitNegative, err: fmt.Errorf(format, args...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ec exitCode
	if !errors.As(err, &ec) {
		ec = exitCode{code: exitError, err: err}
	}
	if ec.err != nil {
		fmt.Fprintln(stderr, "error:", err)
	}
	return ec.code
}

// options are the flags every command shares.
type options struct {
	kube          *genericclioptions.ConfigFlags
	output        string
	controllerURL string
	webhookURL    string
	controllerNS  string
	controllerSvc string
	stdout        io.Writer
	stderr        io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	o := &options{kube: genericclioptions.NewConfigFlags(true), stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "kubectl-alumiini",
		Short:         "Manage ALUMIINI GitRepositories",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return exitCode{code: exitError, err: err} })
	o.kube.AddFlags(root.PersistentFlags())
	pf := root.PersistentFlags()
	pf.StringVarP(&o.output, "output", "o", "", "output format: yaml, json or wide")
	pf.StringVar(&o.controllerURL, "controller-url", "", "reach the controller's metrics port directly (http://host:9090) instead of through the API server's service proxy")
	pf.StringVar(&o.webhookURL, "webhook-url", "", "reach the controller's webhook port directly, for check")
	pf.StringVar(&o.controllerNS, "controller-namespace", "alumiini-system", "namespace of the controller's Service")
	pf.StringVar(&o.controllerSvc, "controller-service", "alumiini", "name of the controller's Service")
	root.AddCommand(newGet(o), newStatus(o), newSync(o), newSuspend(o, true), newSuspend(o, false),
		newDiff(o), newTree(o), newCreate(o), newCheck(o))
	return root
}
