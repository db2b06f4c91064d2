package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/gitsrc"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/k8s/sops"
)

func newDiff(o *options) *cobra.Command {
	var local string
	cmd := &cobra.Command{
		Use:   "diff NAME",
		Short: "Show what the next sync would change, one unified diff per object (server-side dry run; exit 1 on differences)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, repo, err := o.loadRepo(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			objs, err := o.manifests(cmd.Context(), c, repo, local)
			if err != nil {
				return err
			}
			return o.dryRun(cmd.Context(), repo, objs)
		},
	}
	cmd.Flags().StringVar(&local, "local", "", "diff the manifests of this directory instead of the commit the controller would fetch")
	return cmd
}

// manifests loads the objects of the local directory, or of the commit the
// controller would fetch now, with the controller's own loader.
func (o *options) manifests(ctx context.Context, c *clients, repo *v1alpha1.GitRepository, local string) ([]*unstructured.Unstructured, error) {
	root, dir := local, local
	if local == "" {
		tmp, err := os.MkdirTemp("", "kubectl-alumiini-diff-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		res, err := fetch(ctx, c, repo, tmp)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(o.stderr, "comparing commit %s of %s\n", res.Commit, repo.Spec.URL)
		root, dir = res.Root, res.Dir
	}
	dec, err := decryptor(ctx, c, repo)
	if err != nil {
		return nil, err
	}
	objs, errs := k8s.LoadManifestsDecrypting(root, dir, dec)
	if len(errs) > 0 {
		return nil, fmt.Errorf("the manifests do not load, the sync would fail: %w", errors.Join(errs...))
	}
	return objs, nil
}

// decryptor reads the keys of spec.decryption, with the user's rights, so
// that SOPS files compare like the controller sees them (Secret values are
// redacted in every diff); nil without spec.decryption.
func decryptor(ctx context.Context, c *clients, repo *v1alpha1.GitRepository) (*sops.Decryptor, error) {
	d := repo.Spec.Decryption
	if d == nil || d.SecretRef == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	sec, err := c.kube.CoreV1().Secrets(repo.Namespace).Get(ctx, d.SecretRef.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("SOPS keys Secret %s/%s (spec.decryption; diff needs to read it to decrypt): %w", repo.Namespace, d.SecretRef.Name, err)
	}
	dec, err := sops.New(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("SOPS keys Secret %s/%s: %w", repo.Namespace, d.SecretRef.Name, err)
	}
	return dec, nil
}

func fetch(ctx context.Context, c *clients, repo *v1alpha1.GitRepository, cacheDir string) (gitsrc.Result, error) {
	req := gitsrc.Request{Key: repo.Namespace + "/" + repo.Name, URL: repo.Spec.URL, Path: repo.Spec.Path,
		Ref: gitsrc.Ref{Branch: repo.Spec.Branch, Tag: repo.Spec.Tag, Commit: repo.Spec.Commit}}
	if req.Ref == (gitsrc.Ref{}) {
		req.Ref.Branch = v1alpha1.DefaultBranch
	}
	if ref := repo.Spec.SecretRef; ref != nil {
		sctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		sec, err := c.kube.CoreV1().Secrets(repo.Namespace).Get(sctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return gitsrc.Result{}, fmt.Errorf("git credentials Secret %s/%s: %w", repo.Namespace, ref.Name, err)
		}
		if req.Auth, err = gitsrc.AuthFromSecret(repo.Namespace+"/"+ref.Name, sec.Data); err != nil {
			return gitsrc.Result{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, repo.Spec.SyncTimeout())
	defer cancel()
	res, err := gitsrc.NewFetcher(cacheDir).Fetch(ctx, req)
	if err != nil {
		return res, fmt.Errorf("fetch %s: %w", repo.Spec.URL, err)
	}
	return res, nil
}

// dryRun prints one diff per object that would change and returns
// exitNegative when there is any, as kubectl diff does.
func (o *options) dryRun(ctx context.Context, repo *v1alpha1.GitRepository, objs []*unstructured.Unstructured) error {
	cfg, err := o.kube.ToRESTConfig()
	if err != nil {
		return err
	}
	applier, err := k8s.NewApplier(cfg)
	if err != nil {
		return err
	}
	spec := repo.Spec
	opts := k8s.Options{Owner: k8s.Owner{Namespace: repo.Namespace, Name: repo.Name}, TargetNamespace: spec.TargetNamespace,
		Prune: spec.PruneEnabled(), Force: spec.Force, Inventory: repo.Status.Inventory}
	if spec.RolloutRef != nil {
		opts.RolloutRef = spec.RolloutRef.Name
	}
	ctx, cancel := context.WithTimeout(ctx, spec.SyncTimeout())
	defer cancel()
	diffs, err := applier.DryRun(ctx, objs, opts)
	if err != nil {
		return fmt.Errorf("server-side dry run: %w", err)
	}
	paint, changed, failed := painter(isTerminal(o.stdout)), 0, 0
	for _, d := range diffs {
		if d.Err != nil {
			failed++
			fmt.Fprintf(o.stderr, "%s %s\n", paint.red("refused:"), d.Err)
		}
		if d.Action == "unchanged" || d.Diff == "" {
			continue
		}
		changed++
		fmt.Fprintf(o.stdout, "%s %s\n%s", paint.yellow("# "+d.Action), objectName(d.Ref), colourDiff(paint, d.Diff))
	}
	switch {
	case failed > 0:
		return exitCode{code: exitError, err: fmt.Errorf("the API server would refuse %d object(s)", failed)}
	case changed > 0:
		return exitCode{code: exitNegative} // the diffs say it all, as with kubectl diff
	}
	return nil
}

func objectName(ref v1alpha1.ObjectRef) string {
	kind := ref.Kind
	if ref.Group != "" {
		kind += "." + ref.Group
	}
	if ref.Namespace != "" {
		return kind + " " + ref.Namespace + "/" + ref.Name
	}
	return kind + " " + ref.Name
}

// colourDiff paints added lines green and removed ones red, on a terminal.
func colourDiff(p painter, text string) string {
	if !p {
		return text
	}
	lines := strings.SplitAfter(text, "\n")
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
		case strings.HasPrefix(l, "+"):
			lines[i] = p.green(strings.TrimSuffix(l, "\n")) + "\n"
		case strings.HasPrefix(l, "-"):
			lines[i] = p.red(strings.TrimSuffix(l, "\n")) + "\n"
		}
	}
	return strings.Join(lines, "")
}
