// Package gitsrc fetches one git ref of a GitRepository into an on-disk
// checkout and hands back the commit and the manifest directory.
//
// Cache layout: every Request.Key ("namespace/name") owns one directory under
// the cache dir, named after the key with "/" turned into "_" and any byte
// outside [a-z0-9.-] percent-escaped. It holds git/, the key's refs and
// symlink list, and tree/, the checkout of the last synced commit (no .git inside,
// so the manifest directory holds only the repository's files). The objects
// are in sources/<id>/, a shallow object store shared by every key that names
// the same remote with the same credentials (source.go). A later Fetch
// updates both in place; Remove deletes the key's directory, and the
// source's once no key uses it.
//
// A branch or tag is first resolved with one ref listing (ls-remote), which
// keys of one source share within Request.RefsNotBefore. When
// the remote points at the commit already checked out, Fetch returns
// Unchanged without asking for a pack: a quiet poll costs one round trip.
// Otherwise it fetches just that ref at depth 1, so force-pushes and branch
// switches need no history. A commit pin costs no round trip once present;
// to get it, Fetch asks for the commit itself at depth 1, and when the server
// refuses unadvertised commits (git's default without
// uploadpack.allowReachableSHA1InWant) it fetches the full history of
// Ref.Branch (or of the remote HEAD) and looks for the commit there.
//
// ChangedPaths are the repository-root-relative, slash-separated paths whose
// content differs between the previously checked-out commit and the new one
// (both sides of a rename), found by comparing the two trees locally. They
// are nil when there was no previous commit to compare with.
package gitsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"golang.org/x/sync/semaphore"
)

// Ref is the git reference to check out. Precedence: Commit > Tag > Branch;
// a Commit may come with the Branch to fetch it from.
type Ref struct{ Branch, Tag, Commit string }

// Request asks for one GitRepository's ref.
type Request struct {
	Key  string // "namespace/name": one checkout per key
	URL  string
	Ref  Ref
	Path string // manifest directory inside the repository, "" = root
	Auth *Auth  // nil: anonymous
	// RefsNotBefore lets a ref listing of the same source that started at
	// or after it answer this request (see source.go); zero asks for a new
	// listing.
	RefsNotBefore time.Time
	// Expect is the commit the caller was told the ref points at (a
	// webhook's): a reused listing that shows another is listed again.
	Expect string
	// Urgent says someone waits for this fetch (a push, a person): its
	// checkout does not queue for the Fetcher's checkout gate.
	Urgent bool
}

// Result is what a Fetch checked out.
type Result struct {
	Commit       string
	Unchanged    bool     // the remote head is the commit already checked out: no pack was fetched
	ChangedPaths []string // paths changed since the previously checked-out commit, nil when unknown
	Previous     string   // the previously checked-out commit, "" when none: what ChangedPaths compare with
	// DroppedLinks are the symbolic links under Path (repository-root
	// relative) that lead outside the checkout and were therefore removed
	// from it: the caller reports them, as nothing reads through them.
	DroppedLinks []string
	Dir          string // absolute manifest directory inside the checkout
	Root         string // absolute root of the checkout: nothing outside it may be read
}

// Fetcher keeps the checkouts under one cache directory. In memory it holds
// only the sources (source.go), which key uses which, and what each key's
// work tree holds. Fetch may run
// concurrently for different keys, never for the same key.
type Fetcher struct {
	cacheDir string
	maxPacks int // beyond this many pack files, a source's object store starts afresh
	// checkouts bounds the checkouts that run at once across all sources
	// (urgent requests pass by): they are CPU and disk work, and thousands
	// of repositories starting together would otherwise run them all at
	// once and starve the rest of the process, Lease renewals included.
	checkouts *semaphore.Weighted

	mu        sync.Mutex
	sources   map[string]*source // by sourceID
	keySource map[string]string  // key → sourceID
	held      map[string]held    // key → what its work tree holds
}

// held is what a key's work tree holds after its last successful Fetch. A
// poll that resolves to the same commit of the same source and path is
// answered from it without opening the checkout: a quiet poll of an idle
// repository then costs a shared ref listing and a stat, where opening the
// checkout and reading what it holds cost milliseconds (BenchmarkQuietPoll).
type held struct {
	src    *source
	url    string // as the request named it
	commit plumbing.Hash
	path   string
	res    Result
}

// NewFetcher keeps checkouts under cacheDir, which is created on demand.
// As many checkouts run at once as the process has CPUs (GOMAXPROCS).
func NewFetcher(cacheDir string) *Fetcher {
	if abs, err := filepath.Abs(cacheDir); err == nil {
		cacheDir = abs
	}
	return &Fetcher{cacheDir: cacheDir, maxPacks: 32, checkouts: semaphore.NewWeighted(int64(runtime.GOMAXPROCS(0))),
		sources: map[string]*source{}, keySource: map[string]string{}, held: map[string]held{}}
}

const (
	syncedRef  = plumbing.ReferenceName("refs/alumiini/synced")  // the commit in tree/, set once the checkout is complete
	fetchedRef = plumbing.ReferenceName("refs/alumiini/fetched") // where every fetch lands
	objectLRU  = 8 * cache.MiByte                                // per open repository, only during a Fetch
	unshallow  = 1<<31 - 1                                       // "infinite" depth, as git fetch --unshallow asks
)

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Fetch brings the checkout of req.Key to req.Ref of req.URL.
func (f *Fetcher) Fetch(ctx context.Context, req Request) (Result, error) {
	r, err := parseRemote(req.URL)
	if err != nil {
		return Result{}, err
	}
	if err := checkRequest(req); err != nil {
		return Result{}, err
	}
	deadline, _ := ctx.Deadline()
	authMethod, err := req.Auth.method(r, deadline)
	if err != nil {
		return Result{}, err
	}
	dir, err := f.keyDir(req.Key)
	if err != nil {
		return Result{}, err
	}
	s := &session{r: r, auth: req.Auth, method: authMethod}
	return f.fetchShared(ctx, s, req, dir)
}

// Remove deletes the checkout of a deleted GitRepository.
func (f *Fetcher) Remove(key string) error {
	dir, err := f.keyDir(key)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove checkout of %s: %w", key, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseLocked(key)
	delete(f.held, key)
	return nil
}

func checkRequest(req Request) error {
	ref := req.Ref
	switch {
	case ref.Commit != "" && !fullSHA.MatchString(ref.Commit):
		return fmt.Errorf("spec.commit %q is not a full 40-character lowercase hex commit SHA", ref.Commit)
	case ref.Commit == "" && ref.Tag == "" && ref.Branch == "":
		return errors.New("no ref to fetch: set spec.branch, spec.tag or spec.commit")
	case req.Path != "" && !filepath.IsLocal(req.Path):
		return fmt.Errorf("spec.path %q must be relative and stay inside the repository (no leading / and no .. that climbs out)", req.Path)
	}
	return nil
}

// keyDir maps a key to its directory; the escaping keeps distinct keys
// distinct and every name a plain directory name (never "." or "..").
func (f *Fetcher) keyDir(key string) (string, error) {
	if key == "" {
		return "", errors.New("gitsrc: empty request key")
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '/':
			b.WriteByte('_')
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return filepath.Join(f.cacheDir, b.String()), nil
}

// session is one Fetch's conversation with the remote.
type session struct {
	co     *checkout
	r      remote
	auth   *Auth
	method transport.AuthMethod
}

func (s *session) remote() *git.Remote {
	return git.NewRemote(s.co.repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{s.r.fetch}})
}

func refName(ref Ref) plumbing.ReferenceName {
	if ref.Tag != "" {
		return plumbing.NewTagReferenceName(ref.Tag)
	}
	return plumbing.NewBranchReferenceName(ref.Branch)
}

// fetch gets want (a commit pin) or the ref that listed want, and returns the
// commit fetched: for a branch, possibly a newer one pushed since the listing.
func (s *session) fetch(ctx context.Context, ref Ref, want plumbing.Hash) (plumbing.Hash, error) {
	if ref.Commit == "" {
		spec := config.RefSpec("+" + refName(ref).String() + ":" + fetchedRef.String())
		if err := s.fetchSpec(ctx, spec, 1); err != nil {
			return plumbing.ZeroHash, s.explain("fetch "+refName(ref).Short()+" from", err)
		}
		h, err := s.co.repo.ResolveRevision(plumbing.Revision(fetchedRef))
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("fetched %s from %s but cannot resolve it to a commit: %w", refName(ref).Short(), s.r.display, err)
		}
		return *h, nil
	}
	err := s.fetchSpec(ctx, config.RefSpec(want.String()+":"+fetchedRef.String()), 1)
	if errors.Is(err, git.ErrExactSHA1NotSupported) {
		from := plumbing.HEAD.String()
		if ref.Branch != "" {
			from = plumbing.NewBranchReferenceName(ref.Branch).String()
		}
		err = s.fetchSpec(ctx, config.RefSpec("+"+from+":"+fetchedRef.String()), unshallow)
	}
	if err != nil {
		return plumbing.ZeroHash, s.explain("fetch commit "+want.String()+" from", err)
	}
	if !s.co.has(want) {
		where := "the default branch"
		if ref.Branch != "" {
			where = "branch " + ref.Branch
		}
		return plumbing.ZeroHash, fmt.Errorf("commit %s is not in %s of %s: check spec.commit and spec.branch", want, where, s.r.display)
	}
	return want, nil
}

func (s *session) fetchSpec(ctx context.Context, spec config.RefSpec, depth int) error {
	err := s.remote().FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{spec}, Depth: depth, Auth: s.method, CABundle: s.auth.ca(),
		Tags: git.NoTags, Force: true, ProxyOptions: s.proxy(ctx),
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

// checkout is the on-disk state of one key: object store and work tree.
type checkout struct {
	repo *git.Repository
	git  string // object store directory
	tree string // work tree directory, symlinks resolved
}

// openCheckout opens (creating if need be) the checkout in dir, whose
// objects are in objects (its source's store); fresh deletes what was there
// first.
func openCheckout(dir string, fresh bool, objects storer.EncodedObjectStorer) (*checkout, error) {
	if fresh {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	co, err := loadCheckout(dir, objects)
	if err != nil && !fresh {
		// A damaged checkout (say, a crash mid-write) is only a cache: start over.
		return openCheckout(dir, true, objects)
	}
	return co, err
}

func loadCheckout(dir string, objects storer.EncodedObjectStorer) (*checkout, error) {
	gitDir, treeDir := filepath.Join(dir, "git"), filepath.Join(dir, "tree")
	for _, d := range []string{gitDir, treeDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	treeDir, err := filepath.EvalSymlinks(treeDir)
	if err != nil {
		return nil, err
	}
	own := filesystem.NewStorage(osfs.New(gitDir, osfs.WithBoundOS()), cache.NewObjectLRU(0))
	st := withObjects(own, objects)
	// Opened without a work tree: tree/ is written by checkout (worktree.go).
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil)
	}
	if err != nil {
		return nil, err
	}
	return &checkout{repo: repo, git: gitDir, tree: treeDir}, nil
}

// synced is the commit whose checkout completed last, or the zero hash.
func (c *checkout) synced() plumbing.Hash {
	ref, err := c.repo.Storer.Reference(syncedRef)
	if err != nil {
		return plumbing.ZeroHash
	}
	return ref.Hash()
}

func (c *checkout) has(h plumbing.Hash) bool {
	_, err := c.repo.CommitObject(h)
	return err == nil
}

// packs counts pack files: every fetch adds one and go-git never repacks.
func (c *checkout) packs() int {
	m, _ := filepath.Glob(filepath.Join(c.git, "objects", "pack", "*.pack"))
	return len(m)
}

func (c *checkout) commitTree(h plumbing.Hash) (*object.Tree, error) {
	commit, err := c.repo.CommitObject(h)
	if err != nil {
		return nil, err
	}
	return commit.Tree()
}
