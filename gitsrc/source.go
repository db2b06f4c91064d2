package gitsrc

// Sources: every GitRepository that names the same remote with the same
// credentials shares one source. A source keeps one object store on disk
// (under sources/<id>/ of the cache dir), so a commit is fetched once
// whichever of its repositories sees it first, and remembers its last ref
// listing, so that one ls-remote answers every repository that polls within
// the freshness its caller allows (Request.RefsNotBefore). Each key keeps
// its own refs and work tree; their objects are read from the
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
	"slices"
	"sync"
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
	"golang.org/x/sync/semaphore"
)

// source is the shared state of one remote and its credentials.
type source struct {
	dir string // object store
	// store guards the object store: a checkout reads it (weight 1, many
	// at once), a fetch or a reset writes it (weight storeWriter, alone).
	// A waiting writer holds back later readers, so fetches are not starved.
	store *semaphore.Weighted
	users int // keys fetching through this source; guarded by Fetcher.mu

	listMu  chan struct{} // capacity 1: guards last
	last    *listing
	display string

	fetchedMu sync.Mutex
	fetched   plumbing.Hash // the commit the last fetch brought: a hint, the store may have been reset since
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
		src = &source{dir: filepath.Join(f.cacheDir, "sources", id), store: semaphore.NewWeighted(storeWriter),
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
// uses any more, store and all. f.mu must be held. (Quiet polls wait on
// f.mu meanwhile; a source is released only when a repository is deleted
// or changes remote or credentials.)
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

// storeWriter is the weight of a writer of a source's store: as many
// checkouts as may read it at once.
const storeWriter = 64

// use waits for the store, to read (weight 1) or to write (storeWriter);
// the caller must call done with the same weight.
func (src *source) use(ctx context.Context, weight int64) error {
	if err := src.store.Acquire(ctx, weight); err != nil {
		return fmt.Errorf("wait for another fetch of %s: %w", src.display, err)
	}
	return nil
}

func (src *source) done(weight int64) { src.store.Release(weight) }

// read waits to read src's store and, unless the request is urgent, for
// the Fetcher's checkout gate: in that order, so that a token of the gate
// is never held while a slow fetch of one source writes its store. The
// caller must call the release it returns.
func (f *Fetcher) read(ctx context.Context, src *source, req Request) (release func(), err error) {
	if err := src.use(ctx, 1); err != nil {
		return nil, err
	}
	if req.Urgent {
		return func() { src.done(1) }, nil
	}
	if err := f.checkouts.Acquire(ctx, 1); err != nil {
		src.done(1)
		return nil, fmt.Errorf("wait for other checkouts: %w", err)
	}
	return func() { f.checkouts.Release(1); src.done(1) }, nil
}

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

// latest is the last listing if it began at or after notBefore and did
// not fail, done or in flight (refs would reuse it); nil otherwise.
func (src *source) latest(notBefore time.Time) *listing {
	src.listMu <- struct{}{}
	l := src.last
	<-src.listMu
	if notBefore.IsZero() || l == nil || l.started.Before(notBefore) || l.failed() {
		return nil
	}
	return l
}

// setFetched notes the commit a fetch brought into the store.
func (src *source) setFetched(h plumbing.Hash) {
	src.fetchedMu.Lock()
	defer src.fetchedMu.Unlock()
	src.fetched = h
}

// fetchedLast reports whether the last fetch brought h.
func (src *source) fetchedLast(h plumbing.Hash) bool {
	src.fetchedMu.Lock()
	defer src.fetchedMu.Unlock()
	return src.fetched == h
}

// finished reports whether the listing is done (refs and err are set).
func (l *listing) finished() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// failed reports whether the listing finished with an error: never reuse it.
func (l *listing) failed() bool { return l.finished() && l.err != nil }

// listRefs asks the remote for its refs (ls-remote); nothing is stored.
func (s *session) listRefs(ctx context.Context) ([]*plumbing.Reference, error) {
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{s.r.fetch}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{
		Auth: s.method, CABundle: s.auth.ca(), PeelingOption: git.AppendPeeled, ProxyOptions: s.proxy(ctx)})
	if err != nil {
		return nil, s.explain("list refs of", err)
	}
	return refs, nil
}

// resolveRef finds a branch or tag in a listing; an annotated tag resolves
// to its commit.
func resolveRef(refs []*plumbing.Reference, ref Ref, display string) (plumbing.Hash, error) {
	// Built once: quiet polls resolve from a shared listing, which may
	// hold thousands of refs.
	name := refName(ref)
	tagCommit := name + "^{}" // an annotated tag's commit
	var direct, peeled plumbing.Hash
	for _, r := range refs {
		switch r.Name() {
		case name:
			direct = r.Hash()
		case tagCommit:
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
// deletes it first. It writes: only a writer of the store may call it.
func (src *source) openStore(fresh bool) (*checkout, error) {
	if fresh {
		if err := os.RemoveAll(src.dir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(src.dir, 0o700); err != nil {
		return nil, err
	}
	repo, err := git.Open(src.storage(), nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(src.storage(), nil)
	}
	if err != nil && !fresh {
		return src.openStore(true) // a damaged store is only a cache
	}
	if err != nil {
		return nil, err
	}
	return &checkout{repo: repo, git: src.dir}, nil
}

// readStore opens the source's object store as it is, for reading: a
// missing or damaged store is an error here (ensure's writer repairs it).
func (src *source) readStore() (*checkout, error) {
	repo, err := git.Open(src.storage(), nil)
	if err != nil {
		return nil, err
	}
	return &checkout{repo: repo, git: src.dir}, nil
}

func (src *source) storage() *filesystem.Storage {
	return filesystem.NewStorage(wholeIdx{osfs.New(src.dir, osfs.WithBoundOS())}, cache.NewObjectLRU(objectLRU))
}

// keyStorage is a key's own storage (refs, config, shallow) whose
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
// skipped when another key already brought the commit, fetches (which
// write the source's store) run one at a time, and checkouts (which only
// read it) side by side, as many as the checkout gate admits (urgent ones
// pass by it: a push to a monorepo checks out its repositories at once).
func (f *Fetcher) fetchShared(ctx context.Context, s *session, req Request, dir string) (Result, error) {
	src := f.acquire(req.Key, s.r, req.Auth)
	got, store, err := f.pushed(ctx, src, s, req)
	if err != nil {
		return Result{}, err
	}
	if got.IsZero() {
		want := plumbing.NewHash(req.Ref.Commit)
		if req.Ref.Commit == "" {
			if want, err = src.resolve(ctx, s, req); err != nil {
				return Result{}, err
			}
		}
		if res, ok := f.stillHeld(req, src, want); ok {
			return res, nil
		}
		f.setHeld(req.Key, nil)
		if got, store, err = f.ensure(ctx, src, s, req, dir, want); err != nil {
			return Result{}, err
		}
	} else {
		f.setHeld(req.Key, nil)
	}
	res, err := f.checkOut(ctx, src, req, dir, got, store)
	if err != nil {
		return Result{}, err
	}
	f.setHeld(req.Key, &held{src: src, url: req.URL, commit: got, path: req.Path, res: res})
	return res, nil
}

// Unmoved answers from memory alone, without waiting and without touching
// the disk, whether a Fetch of req would find nothing new: key's work tree
// holds the commit that a finished ref listing of its source shows for
// req.Ref, and that listing began at or after req.RefsNotBefore (a commit
// pin needs no listing). It returns that commit. False means only "ask
// Fetch": the listing is stale, failed or in flight, or the key holds
// something else. req.Auth is not consulted: the answer uses the source
// of the key's last Fetch, so the caller decides how long credentials may
// go unread.
func (f *Fetcher) Unmoved(req Request) (string, bool) {
	f.mu.Lock()
	h, ok := f.held[req.Key]
	f.mu.Unlock()
	if !ok || h.url != req.URL || h.path != req.Path {
		return "", false
	}
	want := plumbing.NewHash(req.Ref.Commit)
	if req.Ref.Commit == "" {
		l := h.src.latest(req.RefsNotBefore)
		if l == nil || !l.finished() {
			return "", false
		}
		var err error
		if want, err = resolveRef(l.refs, req.Ref, h.src.display); err != nil {
			return "", false
		}
	}
	return h.res.Commit, want == h.commit
}

// stillHeld answers a request whose commit the key's work tree already
// holds, from memory, when its manifest directory is still on disk.
func (f *Fetcher) stillHeld(req Request, src *source, want plumbing.Hash) (Result, bool) {
	f.mu.Lock()
	h, ok := f.held[req.Key]
	f.mu.Unlock()
	if !ok || h.src != src || h.commit != want || h.path != req.Path {
		return Result{}, false
	}
	if info, err := os.Stat(h.res.Dir); err != nil || !info.IsDir() {
		return Result{}, false
	}
	res := h.res
	res.Unchanged, res.Previous, res.ChangedPaths = true, res.Commit, []string{}
	res.DroppedLinks = slices.Clone(res.DroppedLinks)
	return res, true
}

// setHeld records what key's work tree holds; nil forgets it (a fetch
// that may change the work tree is under way).
func (f *Fetcher) setHeld(key string, h *held) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h == nil {
		delete(f.held, key)
		return
	}
	f.held[key] = *h
}

// ensure returns the commit to check out for want, fetching it into the
// source's store unless the key's checkout or the store already holds it;
// after a fetch, also the store as the fetch left it (see fetchInto).
func (f *Fetcher) ensure(ctx context.Context, src *source, s *session, req Request, dir string, want plumbing.Hash) (plumbing.Hash, *checkout, error) {
	release, err := f.read(ctx, src, req)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	store, co, err := src.open(req.Key, dir, nil)
	// A store that cannot be read yet (new, or damaged) is the writer's to
	// create or repair.
	have := err == nil && (want == co.synced() || store.has(want))
	release()
	if have {
		return want, nil, nil
	}
	got, store, err := f.fetchInto(ctx, src, s, req, want, false)
	if err == nil && store == nil {
		return want, nil, nil // another key fetched it while this one waited
	}
	return got, store, err
}

// fetchInto fetches req.Ref into the source's store as its writer, unless
// the store has want by then (another key fetched it while this one
// waited: then it returns the zero hash and a nil store). A pushed want of
// a branch over smart HTTP is asked for while the refs are listed
// (pushed.go). The store it returns is open with every pack index read:
// the checkout that follows reads through it instead of reading them all
// again.
func (f *Fetcher) fetchInto(ctx context.Context, src *source, s *session, req Request, want plumbing.Hash, pushed bool) (plumbing.Hash, *checkout, error) {
	if err := src.use(ctx, storeWriter); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	defer src.done(storeWriter)
	store, err := src.openStore(false)
	if err != nil {
		return plumbing.ZeroHash, nil, fmt.Errorf("open object store of %s in %s (check that --cache-dir is a writable directory with free space): %w", src.display, src.dir, err)
	}
	if store.has(want) {
		return plumbing.ZeroHash, nil, nil
	}
	if store.packs() > f.maxPacks {
		if store, err = src.openStore(true); err != nil {
			return plumbing.ZeroHash, nil, fmt.Errorf("reset object store of %s in %s: %w", src.display, src.dir, err)
		}
	}
	s.co = store
	var got plumbing.Hash
	if pushed && s.r.kind == "http" && req.Ref.Tag == "" {
		got, err = s.fetchListed(ctx, src, req.Ref, want)
	} else {
		got, err = s.fetch(ctx, req.Ref, want)
	}
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	src.setFetched(got)
	return got, store, nil
}

// pushed fetches the branch of a push whose commit (req.Expect) neither
// the store nor a listing fresh enough for it has: the fetch's own ref
// advertisement (SSH), or a listing made beside it (smart HTTP), is then
// the listing, which saves a round trip to the git host on every push. What it returns is the branch's head as the host
// says, Expect or newer; it never trusts Expect alone. The zero hash means
// "go the usual way": not such a push, or the store had the commit (then a
// listing confirms it).
func (f *Fetcher) pushed(ctx context.Context, src *source, s *session, req Request) (plumbing.Hash, *checkout, error) {
	if req.Expect == "" || req.Ref.Commit != "" || !fullSHA.MatchString(req.Expect) || src.latest(req.RefsNotBefore) != nil {
		return plumbing.ZeroHash, nil, nil
	}
	expect := plumbing.NewHash(req.Expect)
	// When a monorepo push reaches many keys at once, the first fetches
	// and the rest go the listing way, without queueing for the writer's
	// lock ahead of every checkout.
	if src.fetchedLast(expect) {
		return plumbing.ZeroHash, nil, nil
	}
	return f.fetchInto(ctx, src, s, req, expect, true)
}

// checkOut moves the key's work tree to got, reading the source's store
// beside other checkouts. (Should a reset of the store by another key's
// fetch drop got meanwhile, the checkout fails and the next sync fetches
// it again.)
func (f *Fetcher) checkOut(ctx context.Context, src *source, req Request, dir string, got plumbing.Hash, store *checkout) (Result, error) {
	release, err := f.read(ctx, src, req)
	if err != nil {
		return Result{}, err
	}
	defer release()
	_, co, err := src.open(req.Key, dir, store)
	if err != nil {
		return Result{}, err
	}
	prev := co.synced()
	res := Result{Commit: got.String(), Unchanged: got == prev, ChangedPaths: []string{}, Root: co.tree}
	if !prev.IsZero() {
		res.Previous = prev.String()
	}
	var links []string
	if res.Unchanged {
		links, _ = co.links()
	} else if res.ChangedPaths, links, err = co.checkout(got); err != nil {
		return Result{}, fmt.Errorf("check out %s of %s: %w", got, src.display, err)
	}
	if res.Dir, err = co.manifestDir(req.Path, got, links); err != nil {
		return Result{}, err
	}
	res.DroppedLinks = co.droppedLinks(req.Path, links)
	return res, nil
}

// open opens the checkout of key in dir, which reads its objects from
// store, or from the source's store opened for reading when store is nil.
func (src *source) open(key, dir string, store *checkout) (*checkout, *checkout, error) {
	var err error
	if store == nil {
		if store, err = src.readStore(); err != nil {
			return nil, nil, fmt.Errorf("open object store of %s in %s: %w", src.display, src.dir, err)
		}
	}
	co, err := openCheckout(dir, false, store.repo.Storer)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkout of %s in %s (check that --cache-dir is a writable directory with free space): %w", key, dir, err)
	}
	return store, co, nil
}
