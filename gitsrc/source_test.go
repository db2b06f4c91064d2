package gitsrc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// counts is what the git server was asked between two points.
type counts struct{ listings, packs int64 }

func snapshot(srv *gitserver.Server) counts {
	return counts{srv.RefAdvertisements(), srv.UploadPacks()}
}

func (c counts) since(before counts) counts {
	return counts{c.listings - before.listings, c.packs - before.packs}
}

// fetchAll fetches every key of a monorepo concurrently, all allowing a
// listing started at notBefore, and returns the results by key.
func fetchAll(t *testing.T, f *Fetcher, url string, keys []string, notBefore time.Time, expect string) map[string]Result {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := map[string]Result{}
	for i, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := f.Fetch(ctx, Request{Key: key, URL: url, Ref: Ref{Branch: "main"},
				Path: fmt.Sprintf("apps/%d", i%2), RefsNotBefore: notBefore, Expect: expect})
			if err != nil {
				t.Errorf("fetch %s: %v", key, err)
			}
			mu.Lock()
			results[key] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return results
}

func TestOneListingAndOneFetchPerSource(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "mono")
	first := repo.CommitStrings("first", map[string]string{"apps/0/a.yaml": "a: 1\n", "apps/1/b.yaml": "b: 1\n"})
	f := NewFetcher(t.TempDir())
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = fmt.Sprintf("team/app-%02d", i)
	}

	// A fetch costs the listing of the ref and the listing + pack of the
	// fetch itself: once for all twenty keys.
	before := snapshot(srv)
	results := fetchAll(t, f, repo.URL(), keys, time.Now(), "")
	if got := snapshot(srv).since(before); got != (counts{2, 1}) {
		t.Fatalf("first fetch of 20 keys cost %d listings and %d packs, want 2 and 1", got.listings, got.packs)
	}
	for i, key := range keys {
		want := map[string]string{"a.yaml": "a: 1\n"}
		if i%2 == 1 {
			want = map[string]string{"b.yaml": "b: 1\n"}
		}
		res := results[key]
		if res.Commit != first || res.Unchanged {
			t.Fatalf("%s: %+v, want commit %s", key, res, first)
		}
		assertTree(t, res.Dir, want) // every key has its own checkout
	}
	if results[keys[0]].Root == results[keys[2]].Root {
		t.Fatal("two keys share one work tree")
	}

	// Polls within one interval: a hundred of them, one listing.
	before = snapshot(srv)
	interval := time.Now()
	for i := range 100 {
		res := mustFetch(t, f, Request{Key: keys[i%len(keys)], URL: repo.URL(), Ref: Ref{Branch: "main"},
			Path: fmt.Sprintf("apps/%d", i%len(keys)%2), RefsNotBefore: interval})
		if !res.Unchanged || res.Commit != first || res.Previous != first {
			t.Fatalf("quiet poll %d: %+v, want unchanged at %s", i, res, first)
		}
	}
	if got := snapshot(srv).since(before); got != (counts{1, 0}) {
		t.Fatalf("100 quiet polls cost %d listings and %d packs, want 1 and 0", got.listings, got.packs)
	}

	second := repo.CommitStrings("second", map[string]string{"apps/1/b.yaml": "b: 2\n"})
	before = snapshot(srv)
	results = fetchAll(t, f, repo.URL(), keys, time.Now(), "")
	if got := snapshot(srv).since(before); got != (counts{2, 1}) {
		t.Fatalf("a new commit for 20 keys cost %d listings and %d packs, want 2 and 1", got.listings, got.packs)
	}
	for _, key := range keys {
		res := results[key]
		if res.Commit != second || res.Previous != first || !reflect.DeepEqual(res.ChangedPaths, []string{"apps/1/b.yaml"}) {
			t.Fatalf("%s after a push: %+v, want %s changing apps/1/b.yaml since %s", key, res, second, first)
		}
	}

	// A webhook for all twenty: the listing of the last interval predates
	// the push, so it is listed again, once.
	third := repo.CommitStrings("third", map[string]string{"apps/0/a.yaml": "a: 3\n"})
	before = snapshot(srv)
	results = fetchAll(t, f, repo.URL(), keys, time.Now().Add(-time.Hour), third)
	if got := snapshot(srv).since(before); got != (counts{2, 1}) {
		t.Fatalf("a webhook for 20 keys cost %d listings and %d packs, want 2 and 1", got.listings, got.packs)
	}
	for _, key := range keys {
		if res := results[key]; res.Commit != third {
			t.Fatalf("%s after a webhook: commit %s, want %s", key, res.Commit, third)
		}
	}
}

func TestAListingIsNotReusedWhenTooOldOrFailed(t *testing.T) {
	srv := gitserver.New(t, gitserver.WithBasicAuth("alice", "s3cret"))
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	f := NewFetcher(t.TempDir())
	good, err := AuthFromSecret("ns/creds", map[string][]byte{"username": []byte("alice"), "password": []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Key: "ns/a", URL: repo.URL(), Ref: Ref{Branch: "main"}, Auth: good}
	mustFetch(t, f, req)

	// Zero RefsNotBefore: every fetch lists.
	before := snapshot(srv)
	mustFetch(t, f, req)
	mustFetch(t, f, req)
	if got := snapshot(srv).since(before); got.listings != 2 {
		t.Fatalf("two fetches without RefsNotBefore cost %d listings, want 2", got.listings)
	}

	// Anonymous is another source: its failed listing is its own, and is
	// not kept.
	anon := Request{Key: "ns/b", URL: repo.URL(), Ref: Ref{Branch: "main"}, RefsNotBefore: time.Now().Add(-time.Hour)}
	fetchErr(t, f, anon, "requires authentication")
	requests := len(srv.Requests()) // refused requests are not counted as listings
	fetchErr(t, f, anon, "requires authentication")
	if got := len(srv.Requests()) - requests; got != 1 {
		t.Fatalf("a fetch after a failed listing cost %d requests, want 1 (a failure is not reused)", got)
	}
}

func TestSourceIdentity(t *testing.T) {
	auth := func(secret string, data map[string]string) *Auth {
		m := map[string][]byte{}
		for k, v := range data {
			m[k] = []byte(v)
		}
		a, err := AuthFromSecret(secret, m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	r, _ := parseRemote("https://git.example.com/org/mono.git")
	withUser, _ := parseRemote("https://bob:pw@git.example.com/org/mono.git")
	other, _ := parseRemote("https://git.example.com/org/other.git")
	alice := auth("a/creds", map[string]string{"username": "alice", "password": "pw"})
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"anonymous twice", sourceID(r, nil), sourceID(r, nil), true},
		{"same credentials from two Secrets", sourceID(r, alice), sourceID(r, auth("b/copy", map[string]string{"username": "alice", "password": "pw"})), true},
		{"another password", sourceID(r, alice), sourceID(r, auth("a/creds", map[string]string{"username": "alice", "password": "other"})), false},
		{"a token", sourceID(r, alice), sourceID(r, auth("a/creds", map[string]string{"bearerToken": "alice"})), false},
		{"anonymous and credentials", sourceID(r, nil), sourceID(r, alice), false},
		{"credentials in the URL", sourceID(r, nil), sourceID(withUser, nil), false},
		{"another repository", sourceID(r, nil), sourceID(other, nil), false},
	}
	for _, tt := range tests {
		if (tt.a == tt.b) != tt.same {
			t.Errorf("%s: ids %s and %s, want same=%v", tt.name, tt.a, tt.b, tt.same)
		}
	}
}

// TestQuietPollAnsweredFromMemory: a poll that finds the commit already
// checked out is answered without opening the checkout, and says so as a
// full fetch would; a request for another path is not.
func TestQuietPollAnsweredFromMemory(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "mono")
	commit := repo.CommitStrings("first", map[string]string{"apps/0/a.yaml": "a: 1\n", "apps/1/b.yaml": "b: 1\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "team/app", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: "apps/0"}
	first := mustFetch(t, f, req)
	if first.Unchanged {
		t.Fatal("the first fetch says Unchanged")
	}
	quiet := mustFetch(t, f, req)
	want := Result{Commit: commit, Unchanged: true, ChangedPaths: []string{}, Previous: commit, Dir: first.Dir, Root: first.Root}
	if !reflect.DeepEqual(quiet, want) {
		t.Fatalf("quiet poll = %+v, want %+v", quiet, want)
	}
	// Only an answer from memory survives the key's git directory going
	// away; the full path would have to open it.
	if err := os.RemoveAll(filepath.Join(filepath.Dir(first.Root), "git")); err != nil {
		t.Fatal(err)
	}
	if again := mustFetch(t, f, req); !reflect.DeepEqual(again, want) {
		t.Fatalf("quiet poll without the git directory = %+v, want %+v from memory", again, want)
	}
	// A manifest directory gone from disk is not answered from memory.
	if err := os.RemoveAll(first.Dir); err != nil {
		t.Fatal(err)
	}
	if res, err := f.Fetch(context.Background(), req); err == nil && reflect.DeepEqual(res, want) {
		t.Fatal("a poll after the manifest directory was removed was answered from memory")
	}

	f = NewFetcher(t.TempDir())
	mustFetch(t, f, req)
	req.Path = "apps/1"
	other := mustFetch(t, f, req)
	if other.Dir == first.Dir || !other.Unchanged {
		t.Fatalf("another path of the same commit: dir %s (first %s), unchanged %v; want a new dir, unchanged", other.Dir, first.Dir, other.Unchanged)
	}
	assertTree(t, other.Dir, map[string]string{"b.yaml": "b: 1\n"})
}

// TestUnmovedFromTheSharedListing: Unmoved answers yes only when a
// finished listing, fresh enough for the request, shows the commit the
// key's work tree holds, for the same URL and path; it never asks the git
// server.
func TestUnmovedFromTheSharedListing(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "mono")
	first := repo.CommitStrings("first", map[string]string{"apps/0/a.yaml": "a: 1\n"})
	f := NewFetcher(t.TempDir())
	a := Request{Key: "team/a", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: "apps/0"}
	b := a
	b.Key = "team/b"
	listedFrom := time.Now()
	mustFetch(t, f, a)
	mustFetch(t, f, b)
	pinned := a
	pinned.Key, pinned.Ref = "team/pinned", Ref{Commit: first}
	mustFetch(t, f, pinned)

	fresh := listedFrom.Add(-time.Minute)
	before := snapshot(srv)
	tests := []struct {
		name  string
		req   func() Request
		quiet bool
	}{
		{"fresh listing, same commit", func() Request { r := a; r.RefsNotBefore = fresh; return r }, true},
		{"zero RefsNotBefore asks for a listing", func() Request { return a }, false},
		{"listing older than allowed", func() Request { r := a; r.RefsNotBefore = time.Now().Add(time.Second); return r }, false},
		{"another path", func() Request { r := a; r.RefsNotBefore, r.Path = fresh, "apps/1"; return r }, false},
		{"another URL", func() Request { r := a; r.RefsNotBefore, r.URL = fresh, r.URL+"/"; return r }, false},
		{"another branch", func() Request { r := a; r.RefsNotBefore, r.Ref = fresh, Ref{Branch: "dev"}; return r }, false},
		{"a key never fetched", func() Request { r := a; r.RefsNotBefore, r.Key = fresh, "team/new"; return r }, false},
		{"a pinned commit it holds", func() Request { return pinned }, true},
		{"a pin to another commit", func() Request { r := pinned; r.Ref.Commit = strings.Repeat("ab", 20); return r }, false},
	}
	for _, tt := range tests {
		commit, quiet := f.Unmoved(tt.req())
		if quiet != tt.quiet || (quiet && commit != first) {
			t.Errorf("%s: Unmoved = %q, %v; want %v at %s", tt.name, commit, quiet, tt.quiet, first)
		}
	}
	if got := snapshot(srv).since(before); got != (counts{}) {
		t.Fatalf("Unmoved asked the git server: %+v", got)
	}

	// Once b's listing shows a push, a is no longer quiet, though its own
	// work tree did not change; and b, which fetched it, is quiet again.
	second := repo.CommitStrings("second", map[string]string{"apps/0/a.yaml": "a: 2\n"})
	pushedAt := time.Now()
	b.RefsNotBefore = pushedAt
	if res := mustFetch(t, f, b); res.Commit != second {
		t.Fatalf("b fetched %s, want %s", res.Commit, second)
	}
	a.RefsNotBefore = fresh
	if commit, quiet := f.Unmoved(a); quiet {
		t.Fatalf("a is quiet at %s after a listing showed %s", commit, second)
	}
	if commit, quiet := f.Unmoved(b); !quiet || commit != second {
		t.Fatalf("b after its fetch: Unmoved = %q, %v; want %s from the listing begun after %v", commit, quiet, second, pushedAt)
	}
}

// pushRig is a git server with a repository of one file, and a Fetcher
// that has fetched its main branch for the request it returns.
func pushRig(t *testing.T) (*gitserver.Server, *gitserver.Repo, *Fetcher, Request) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "app")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	f := NewFetcher(t.TempDir())
	a := Request{Key: "team/a", URL: repo.URL(), Ref: Ref{Branch: "main"}}
	mustFetch(t, f, a)
	return srv, repo, f, a
}

// TestAPushIsFetchedWithoutASeparateListing: a webhook's commit that no
// listing has shown yet is fetched straight away, with one listing and one
// pack request (see TestAPushAsksForItsCommitBesideTheListing);
// what comes back is the branch's head as the host says, never the
// webhook's commit on its word; a second repository of the source, whose
// store already has the commit, confirms it with one listing.
func TestAPushIsFetchedWithoutASeparateListing(t *testing.T) {
	srv, repo, f, a := pushRig(t)

	second := repo.CommitStrings("second", map[string]string{"a.yaml": "a: 2\n"})
	before := snapshot(srv)
	a.Expect, a.RefsNotBefore = second, time.Now() // the webhook arrived after the push
	res := mustFetch(t, f, a)
	if got := snapshot(srv).since(before); got != (counts{1, 1}) {
		t.Fatalf("a push cost %d listings and %d packs, want 1 and 1 (the fetch's own)", got.listings, got.packs)
	}
	if res.Commit != second {
		t.Fatalf("push: commit %s, want %s", res.Commit, second)
	}
	assertTree(t, res.Dir, map[string]string{"a.yaml": "a: 2\n"})

	// A late webhook: the branch moved on since; the host's head wins.
	third := repo.CommitStrings("third", map[string]string{"a.yaml": "a: 3\n"})
	fourth := repo.CommitStrings("fourth", map[string]string{"a.yaml": "a: 4\n"})
	a.Expect, a.RefsNotBefore = third, time.Now()
	if res = mustFetch(t, f, a); res.Commit != fourth {
		t.Fatalf("late webhook for %s: commit %s, want the branch's head %s", third, res.Commit, fourth)
	}

	// Another repository of the source, told of the same push: the store
	// has the commit, so a listing confirms it and nothing is fetched.
	b := Request{Key: "team/b", URL: repo.URL(), Ref: Ref{Branch: "main"}, Expect: fourth, RefsNotBefore: time.Now()}
	before = snapshot(srv)
	if res = mustFetch(t, f, b); res.Commit != fourth {
		t.Fatalf("second repository: commit %s, want %s", res.Commit, fourth)
	}
	if got := snapshot(srv).since(before); got != (counts{1, 0}) {
		t.Fatalf("the second repository cost %d listings and %d packs, want 1 and 0", got.listings, got.packs)
	}
	assertTree(t, res.Dir, map[string]string{"a.yaml": "a: 4\n"})
}

// TestAPushAsksForItsCommitBesideTheListing: over smart HTTP a pushed
// commit's pack request goes out while the ref listing is still on its
// way (one round trip instead of two), yet the commit is checked out only
// once the listing shows it at the head of the branch.
func TestAPushAsksForItsCommitBesideTheListing(t *testing.T) {
	srv, repo, f, a := pushRig(t)

	second := repo.CommitStrings("second", map[string]string{"a.yaml": "a: 2\n"})
	a.Expect, a.RefsNotBefore = second, time.Now()
	before := snapshot(srv)
	release := srv.HoldListings()
	defer release()
	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := f.Fetch(ctx, a)
		done <- result{res, err}
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := snapshot(srv).since(before); got != (counts{1, 1}) {
			return fmt.Errorf("while the listing is held: %d listings and %d pack requests, want 1 and 1", got.listings, got.packs)
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("the fetch ended (%s, %v) before its listing came back", r.res.Commit, r.err)
	default:
	}
	release()
	r := <-done
	if r.err != nil || r.res.Commit != second {
		t.Fatalf("push: %s, %v; want %s", r.res.Commit, r.err, second)
	}
	assertTree(t, r.res.Dir, map[string]string{"a.yaml": "a: 2\n"})
}

// TestPushedCommitsOfAShallowStore: the store holds one commit of history
// at a time, and a pushed commit is fetched against it whatever its
// history: content the store never had (a revert to an old file), a
// force-push onto an unrelated history.
func TestPushedCommitsOfAShallowStore(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "app")
	repo.CommitStrings("old", map[string]string{"a.yaml": "a: old\n", "b.yaml": "b: 1\n"})
	repo.CommitStrings("new", map[string]string{"a.yaml": "a: new\n"})
	f := NewFetcher(t.TempDir())
	a := Request{Key: "team/a", URL: repo.URL(), Ref: Ref{Branch: "main"}}
	mustFetch(t, f, a) // at depth 1: the store never saw "a: old"

	push := func(sha string, want map[string]string) {
		t.Helper()
		a.Expect, a.RefsNotBefore = sha, time.Now()
		res := mustFetch(t, f, a)
		if res.Commit != sha {
			t.Fatalf("push: commit %s, want %s", res.Commit, sha)
		}
		assertTree(t, res.Dir, want)
	}
	push(repo.CommitStrings("revert", map[string]string{"a.yaml": "a: old\n"}),
		map[string]string{"a.yaml": "a: old\n", "b.yaml": "b: 1\n"})

	repo.Git("checkout", "--quiet", "--orphan", "rewrite")
	repo.Git("rm", "--quiet", "-r", "-f", ".")
	repo.Git("branch", "--quiet", "-D", "main")
	repo.Git("checkout", "--quiet", "-b", "main")
	push(repo.CommitStrings("unrelated", map[string]string{"c.yaml": "c: 1\n"}), map[string]string{"c.yaml": "c: 1\n"})
}

// TestCheckoutsQueueAtTheGateUrgentOnesPassBy: with the Fetcher's
// checkout gate taken, a timer's checkout waits for it (and gives up with
// its context, saying so), while a push's goes ahead.
func TestCheckoutsQueueAtTheGateUrgentOnesPassBy(t *testing.T) {
	_, repo, f, a := pushRig(t)
	f.checkouts = semaphore.NewWeighted(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.checkouts.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}

	timer := Request{Key: "team/b", URL: repo.URL(), Ref: Ref{Branch: "main"}, RefsNotBefore: time.Now().Add(-time.Minute)}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := f.Fetch(short, timer)
	cancelShort()
	if err == nil || !strings.Contains(err.Error(), "wait for other checkouts") {
		t.Fatalf("a timer's checkout with the gate taken: %v, want it to wait for other checkouts", err)
	}

	second := repo.CommitStrings("second", map[string]string{"a.yaml": "a: 2\n"})
	a.Expect, a.RefsNotBefore, a.Urgent = second, time.Now(), true
	if res := mustFetch(t, f, a); res.Commit != second {
		t.Fatalf("the push checked out %s, want %s", res.Commit, second)
	}

	f.checkouts.Release(1)
	if res := mustFetch(t, f, timer); res.Commit != second {
		t.Fatalf("the timer's checkout once the gate is free: %s, want %s", res.Commit, second)
	}
}
