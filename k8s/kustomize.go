package k8s

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/false-systems/alumiini/k8s/sops"
)

// kustomize builds the kustomization in dir and adds its objects. Files are
// read only from the checkout, exec and container plugins stay disabled
// (krusty's defaults), and remote bases or files are refused before
// kustomize could fetch them.
func (l *loader) kustomize(dir string) {
	var digests []string // of the SOPS files the build decrypted
	fsys := checkoutFS{FileSystem: filesys.MakeFsOnDisk(), root: l.root, refused: new(error)}
	fsys.decrypt = func(path string, data []byte) ([]byte, error) {
		plain, digest, err := l.decryptAs(path, data)
		if digest != "" {
			digests = append(digests, digest)
		}
		return plain, err
	}
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(l.recording(fsys), dir)
	if err != nil && *fsys.refused != nil {
		err = *fsys.refused // kustomize may have hidden it behind a vaguer error
	}
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("kustomize build %s: %w", l.rel(dir), err))
		return
	}
	for i, r := range resources.Resources() {
		where := fmt.Sprintf("kustomize build %s: object %d", l.rel(dir), i+1)
		data, err := r.MarshalJSON()
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		// Which Secret came from which encrypted file, kustomize does not
		// say: each Secret of a build that decrypted files hashes them all.
		l.digest = ""
		if r.GetKind() == "Secret" && len(digests) > 0 {
			l.digest = combinedDigest(digests)
		}
		l.decodeJSON(where, data)
	}
	l.digest = ""
}

// decryptAs decrypts a SOPS file that kustomize reads (a resource, or a
// secretGenerator's env file or file) in the format its name says, and
// returns the digest of its ciphertext; a plain file is returned as it is.
func (l *loader) decryptAs(path string, data []byte) ([]byte, string, error) {
	f := sops.FormatOf(path)
	if !sops.IsEncryptedAs(data, f) {
		return data, "", nil
	}
	if l.dec == nil {
		return nil, "", fmt.Errorf("%s: %w", l.rel(path), errNoDecryption)
	}
	plain, err := l.dec.DecryptAs(data, f)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w: %w", l.rel(path), ErrDecryption, err)
	}
	return plain, digestOf(data), nil
}

func combinedDigest(digests []string) string {
	sorted := slices.Clone(digests)
	slices.Sort(sorted)
	return digestOf([]byte(strings.Join(sorted, ",")))
}

// checkoutFS is the on-disk file system confined to a checkout: it reads
// nothing outside root (after resolving symbolic links) and writes nothing.
// It keeps the first refusal, as kustomize reports some read errors only
// as "not found".
type checkoutFS struct {
	filesys.FileSystem
	root    string
	refused *error
	// decrypt turns a SOPS file into its plaintext, in memory (nil: files
	// are read as they are).
	decrypt func(path string, data []byte) ([]byte, error)
}

func (c checkoutFS) refuse(err error) error {
	if *c.refused == nil {
		*c.refused = err
	}
	return err
}

var errReadOnly = errors.New("the repository checkout is read-only to kustomize")

func (c checkoutFS) Create(string) (filesys.File, error) { return nil, errReadOnly }
func (c checkoutFS) Mkdir(string) error                  { return errReadOnly }
func (c checkoutFS) MkdirAll(string) error               { return errReadOnly }
func (c checkoutFS) RemoveAll(string) error              { return errReadOnly }
func (c checkoutFS) WriteFile(string, []byte) error      { return errReadOnly }

func (c checkoutFS) Open(path string) (filesys.File, error) {
	if err := c.check(path); err != nil {
		return nil, err
	}
	return c.FileSystem.Open(path)
}

func (c checkoutFS) CleanedAbs(path string) (filesys.ConfirmedDir, string, error) {
	if err := c.check(path); err != nil {
		return "", "", err
	}
	return c.FileSystem.CleanedAbs(path)
}

// ReadFile also inspects every kustomization kustomize reads, which is the
// last moment to refuse a remote reference before kustomize follows it.
func (c checkoutFS) ReadFile(path string) ([]byte, error) {
	if err := c.check(path); err != nil {
		return nil, err
	}
	data, err := c.FileSystem.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !isKustomizationFile(filepath.Base(path)) {
		if c.decrypt == nil {
			return data, nil
		}
		if data, err = c.decrypt(path, data); err != nil {
			return nil, c.refuse(err)
		}
		return data, nil
	}
	if err := checkKustomization(data); err != nil {
		return nil, c.refuse(fmt.Errorf("%s: %w", relTo(c.root, path), err))
	}
	return data, nil
}

func (c checkoutFS) check(path string) error {
	real, err := realPath(path)
	if err != nil {
		return err
	}
	if !within(c.root, real) {
		return c.refuse(fmt.Errorf("%s is outside the repository checkout; kustomize may only read files of the repository", path))
	}
	return nil
}

// checkKustomization refuses what a kustomization may not do here: load a
// remote base or file, or set a custom OpenAPI schema (which kustomize keeps
// in process-wide state shared by every repository's build).
func checkKustomization(data []byte) error {
	var k map[string]interface{}
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil // kustomize reports the syntax error itself
	}
	if _, ok := k["openapi"]; ok {
		return errors.New("the openapi field is not supported; remove it")
	}
	for _, ref := range kustomizationRefs(k) {
		if isRemote(ref) {
			return fmt.Errorf("remote reference %q is not supported: vendor it into the repository and refer to it by a relative path", ref)
		}
	}
	return nil
}

// kustomizationRefs lists the strings of a kustomization that name a file,
// a directory or a base.
func kustomizationRefs(k map[string]interface{}) []string {
	var refs []string
	strs := func(v interface{}) {
		switch v := v.(type) {
		case string:
			refs = append(refs, v)
		case []interface{}:
			for _, s := range v {
				if s, ok := s.(string); ok {
					refs = append(refs, s)
				}
			}
		}
	}
	for _, f := range []string{"resources", "bases", "components", "crds", "configurations",
		"generators", "transformers", "validators", "patchesStrategicMerge"} {
		strs(k[f])
	}
	items := map[string][]string{
		"patches":            {"path"},
		"patchesJson6902":    {"path"},
		"replacements":       {"path"},
		"configMapGenerator": {"files", "envs", "env"},
		"secretGenerator":    {"files", "envs", "env"},
	}
	for f, keys := range items {
		list, _ := k[f].([]interface{})
		for _, item := range list {
			m, _ := item.(map[string]interface{})
			for _, key := range keys {
				strs(m[key])
			}
		}
	}
	return refs
}

// scpUser matches the "user@" that makes kustomize read host:path as a git
// repository.
var scpUser = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]*@`)

// isRemote reports whether kustomize would fetch ref from the network: a
// URL, an scp-like git address or a github.com path. A generator's file may
// be written key=path, so the part after "=" is checked too.
func isRemote(ref string) bool {
	if strings.Contains(ref, "\n") {
		return false // an inline patch or plugin config, not a reference
	}
	if _, path, ok := strings.Cut(ref, "="); ok && isRemoteRef(path) {
		return true
	}
	return isRemoteRef(ref)
}

func isRemoteRef(ref string) bool {
	ref = strings.ToLower(strings.TrimSpace(ref))
	ref = strings.TrimPrefix(ref, "git::")
	return strings.Contains(ref, "://") || scpUser.MatchString(ref) ||
		strings.HasPrefix(ref, "github.com/") || strings.HasPrefix(ref, "github.com:")
}
