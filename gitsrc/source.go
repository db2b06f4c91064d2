package gitsrc

// Sources: every GitRepository that names the same remote with the same
// credentials shares one source. A source keeps one object store on disk
// (under sources/<id>/ of the cache dir), so a commit is fetched once
// whichever of its repositories sees it first, and remembers its last ref
// listing, so that one ls-remote answers every repository that polls within
// the freshness its caller allows (Request.RefsNotBefore). Each key keeps
// its own refs, index and work tree; their objects are read from the
// source's store. Different refs of one remote share the store and the
// listing too.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

// source is the shared state of one remote and its credentials.
type source struct {
	dir   string        // object store
	turn  chan struct{} // capacity 1: held while the store is used, so one fetch runs per source
	users int           // keys fetching through this source; guarded by Fetcher.mu

	listMu  chan struct{} // capacity 1: guards last
	last    *listing
	display string
}

// listing is one ref listing, shared by every request it is fresh for.
type listing struct {
	started time.Time
	done    chan struct{} // closed once refs and err are set
	refs    []*plumbing.Reference
	err     error
}

// sourceID names a remote and the credentials used on it; it holds no
// secret, only a digest.
func sourceID(r remote, a *Auth) string {
	h := sha256.New()
	for _, part := range []string{r.fetch, r.user, r.pass} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	a.digest(h)
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// acquire returns the source of (r, a) for key, moving key to it when its
// spec now names another remote or other credentials.
func (f *Fetcher) acquire(key string, r remote, a *Auth) *source {
	id := sourceID(r, a)
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.keySource[key]; ok && old != id {
		f.releaseLocked(key)
	}
	src := f.sources[id]
	if src == nil {
		src = &source{dir: filepath.Join(f.cacheDir, "sources", id), turn: make(chan struct{}, 1),
			listMu: make(chan struct{}, 1), display: r.display}
		f.sources[id] = src
	}
	if _, ok := f.keySource[key]; !ok {
		src.users++
		f.keySource[key] = id
	}
	return src
}

// releaseLocked detaches key from its source and deletes a source nobody
// uses any more, store and all. f.mu must be held.
func (f *Fetcher) releaseLocked(key string) {
	id, ok := f.keySource[key]
	if !ok {
		return
	}
	delete(f.keySource, key)
	src := f.sources[id]
	if src.users--; src.users > 0 {
		return
	}
	delete(f.sources, id)
	_ = os.RemoveAll(src.dir) // only a cache; a later Fetch starts afresh
}

// take waits for the source's store; the caller must call give.
func (src *source) take(ctx context.Context) error {
	select {
	case src.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for another fetch of %s: %w", src.display, ctx.Err())
	}
}

func (src *source) give() { <-src.turn }

// refs returns a listing of the remote's refs that started at or after
// notBefore (zero: now), joining one in flight or starting one.
func (src *source) refs(ctx context.Context, s *session, notBefore time.Time) ([]*plumbing.Reference, error) {
	now := time.Now()
	if notBefore.IsZero() || notBefore.After(now) {
		notBefore = now
	}
	select {
	case src.listMu <- struct{}{}:
	case <-ctx.Done():
		return nil, s.explain("list refs of", ctx.Err())
	}
	l := src.last
	if l == nil || l.started.Before(notBefore) || l.failed() {
		l = &listing{started: now, done: make(chan struct{})}
		src.last = l
		<-src.listMu
		l.refs, l.err = s.listRefs(ctx)
		close(l.done)
		return l.refs, l.err
	}
	<-src.listMu
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil, s.explain("list refs of", ctx.Err())
	}
	if l.err != nil && ctx.Err() == nil && (errors.Is(l.err, context.Canceled) || errors.Is(l.err, context.DeadlineExceeded)) {
		// The request that listed ran out of time; this one has not.
		return src.refs(ctx, s, time.Now())
	}
	return l.refs, l.err
}

// resolve finds the commit of req.Ref in a listing fresh enough for req.
func (src *source) resolve(ctx context.Context, s *session, req Request) (plumbing.Hash, error) {
	now := time.Now()
	refs, err := src.refs(ctx, s, req.RefsNotBefore)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	want, err := resolveRef(refs, req.Ref, s.r.display)
	if req.Expect != "" && want.String() != req.Expect {
		// The listing may predate the push the caller heard of.
		if refs, err = src.refs(ctx, s, now); err != nil {
			return plumbing.ZeroHash, err
		}
		want, err = resolveRef(refs, req.Ref, s.r.display)
	}
	return want, err
}

// failed reports whether the listing finished with an error: never reuse it.
func (l *listing) failed() bool {
	select {
	case <-l.done:
		return l.err != nil
	default:
		return false
	}
}

// listRefs asks the remote for its refs (ls-remote); nothing is stored.
func (s *session) listRefs(ctx context.Context) ([]*plumbing.Reference, error) {
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{s.r.fetch}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{
		Auth: s.method, CABundle: s.auth.ca(), PeelingOption: git.AppendPeeled})
	if err != nil {
		return nil, s.explain("list refs of", err)
	}
	return refs, nil
}

// resolveRef finds a branch or tag in a listing; an annotated tag resolves
// to its commit.
func resolveRef(refs []*plumbing.Reference, ref Ref, display string) (plumbing.Hash, error) {
	name := refName(ref)
	var direct, peeled plumbing.Hash
	for _, r := range refs {
		switch r.Name().String() {
		case name.String():
			direct = r.Hash()
		case name.String() + "^{}": // an annotated tag's commit
			peeled = r.Hash()
		}
	}
	switch {
	case !peeled.IsZero():
		return peeled, nil
	case !direct.IsZero():
		return direct, nil
	case ref.Tag != "":
		return plumbing.ZeroHash, fmt.Errorf("tag %q not found in %s: check spec.tag", ref.Tag, display)
	}
	return plumbing.ZeroHash, fmt.Errorf("branch %q not found in %s: check spec.branch", ref.Branch, display)
}

// openStore opens (creating if need be) the source's object store; fresh
// deletes it first.
func (src *source) openStore(fresh bool) (*checkout, error) {
	if fresh {
		if err := os.RemoveAll(src.dir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(src.dir, 0o700); err != nil {
		return nil, err
	}
	st := filesystem.NewStorage(osfs.New(src.dir, osfs.WithBoundOS()), cache.NewObjectLRU(objectLRU))
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil)
	}
	if err != nil && !fresh {
		return src.openStore(true) // a damaged store is only a cache
	}
	if err != nil {
		return nil, err
	}
	return &checkout{repo: repo, git: src.dir}, nil
}

// keyStorage is a key's own storage (refs, index, config, shallow) whose
// objects live in its source's store.
type keyStorage struct {
	storer.EncodedObjectStorer
	storer.ReferenceStorer
	storer.ShallowStorer
	storer.IndexStorer
	config.ConfigStorer
	storage.ModuleStorer
}

func withObjects(own *filesystem.Storage, objects storer.EncodedObjectStorer) storage.Storer {
	return keyStorage{EncodedObjectStorer: objects, ReferenceStorer: own, ShallowStorer: own,
		IndexStorer: own, ConfigStorer: own, ModuleStorer: own}
}

// digest writes what identifies the credentials into h. For SSH the Secret
// is part of it: its known_hosts decides which servers are trusted, so two
// Secrets with one key but different host keys do not share a listing.
func (a *Auth) digest(h io.Writer) {
	if a == nil {
		return
	}
	parts := [][]byte{[]byte(a.username), []byte(a.password), []byte(a.bearer), a.caBundle}
	if a.signer != nil {
		parts = append(parts, a.signer.PublicKey().Marshal(), []byte(a.secret))
	}
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
}

// fetchShared brings the checkout in dir to req.Ref through the source of
// req's remote and credentials: the listing may be shared, the fetch is
// skipped when another key already brought the commit, and only one fetch
// or checkout uses the source's store at a time.
func (f *Fetcher) fetchShared(ctx context.Context, s *session, req Request, dir string) (Result, error) {
	src := f.acquire(req.Key, s.r, req.Auth)
	want := plumbing.NewHash(req.Ref.Commit)
	if req.Ref.Commit == "" {
		var err error
		if want, err = src.resolve(ctx, s, req); err != nil {
			return Result{}, err
		}
	}
	if err := src.take(ctx); err != nil {
		return Result{}, err
	}
	defer src.give()
	store, co, err := src.open(req.Key, dir, false)
	if err != nil {
		return Result{}, err
	}
	prev := co.synced()
	got := want
	if want != prev && !store.has(want) {
		if store.packs() > f.maxPacks {
			if store, co, err = src.open(req.Key, dir, true); err != nil {
				return Result{}, err
			}
		}
		s.co = store
		if got, err = s.fetch(ctx, req.Ref, want); err != nil {
			return Result{}, err
		}
	}
	res := Result{Commit: got.String(), Unchanged: got == prev, ChangedPaths: []string{}, Root: co.tree}
	if !prev.IsZero() {
		res.Previous = prev.String()
	}
	if !res.Unchanged {
		if err := co.checkout(got); err != nil {
			return Result{}, fmt.Errorf("check out %s of %s: %w", got, s.r.display, err)
		}
		res.ChangedPaths = co.changedPaths(prev, got)
	}
	if res.Dir, err = co.manifestDir(req.Path, got); err != nil {
		return Result{}, err
	}
	res.DroppedLinks = co.droppedLinks(req.Path)
	return res, nil
}

// open opens the source's store (afresh when fresh) and the checkout of key
// in dir that reads its objects from it.
func (src *source) open(key, dir string, fresh bool) (*checkout, *checkout, error) {
	store, err := src.openStore(fresh)
	if err != nil {
		return nil, nil, fmt.Errorf("open object store of %s in %s: %w", src.display, src.dir, err)
	}
	co, err := openCheckout(dir, false, store.repo.Storer)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkout of %s in %s: %w", key, dir, err)
	}
	return store, co, nil
}
