package gitsrc

import (
	"context"
	"fmt"
	"path"
	"testing"
	"time"

	"github.com/false-systems/alumiini/test/gitserver"
)

// BenchmarkQuietPoll is the local cost of a poll that finds the commit
// already checked out, with the ref listing shared (as when many
// GitRepositories name one monorepo): what thousands of idle repositories
// pay every interval.
func BenchmarkQuietPoll(b *testing.B) {
	srv, _, f, req := fetchedRepo(b, "apps")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req.RefsNotBefore = time.Now().Add(-time.Hour) // the listing above answers every poll
	listings := srv.RefAdvertisements()
	b.ReportAllocs()
	for b.Loop() {
		res, err := f.Fetch(ctx, req)
		if err != nil || !res.Unchanged {
			b.Fatalf("poll: unchanged %v, %v", res.Unchanged, err)
		}
	}
	if n := srv.RefAdvertisements() - listings; n != 0 {
		b.Fatalf("the polls listed refs %d times, want 0 (the listing is shared)", n)
	}
}

// BenchmarkPushedCommit is the git part of push → applied: a Fetch for a
// webhook that names a commit just pushed to a 20-file repository. It also
// reports the git server's share: the longest of each Fetch's requests as
// the server timed them (its git processes included).
func BenchmarkPushedCommit(b *testing.B) {
	_, repo, f, req := fetchedRepo(b, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	i := 0
	var server time.Duration
	for b.Loop() {
		b.StopTimer()
		i++
		sha := repo.CommitStrings(fmt.Sprint(i), map[string]string{"cm-00.yaml": fmt.Sprintf("a: %d\n", i)})
		b.StartTimer()
		start := time.Now()
		req.Expect, req.RefsNotBefore = sha, start // the webhook has just arrived
		res, err := f.Fetch(ctx, req)
		if err != nil || res.Commit != sha {
			b.Fatalf("fetch: %s, %v; want %s", res.Commit, err, sha)
		}
		b.StopTimer()
		server += gitserver.Longest(repo.ServedSince(start))
		b.StartTimer()
	}
	b.ReportMetric(float64(server.Microseconds())/1000/float64(i), "server-ms/op")
}

// BenchmarkFirstCheckout is a repository's first sync of a commit its
// source already holds (another repository of the remote fetched it): no
// network, the checkout of 20 files only, as thousands of repositories of
// one remote do at start-up.
func BenchmarkFirstCheckout(b *testing.B) {
	srv, _, f, req := fetchedRepo(b, "")
	requests := len(srv.Requests())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req.RefsNotBefore = time.Now().Add(-time.Hour) // the listing above answers
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		req.Key = fmt.Sprintf("team/app-%d", i)
		if res, err := f.Fetch(ctx, req); err != nil || res.Previous != "" {
			b.Fatalf("first checkout: previous %q, %v", res.Previous, err)
		}
	}
	if n := len(srv.Requests()) - requests; n != 0 {
		b.Fatalf("the checkouts sent %d requests to the git server, want none", n)
	}
}

// fetchedRepo is a git server holding a repository of 20 files under dir
// ("" for the root), and a Fetcher that has fetched its main branch for
// req, whose Path is dir.
func fetchedRepo(b *testing.B, dir string) (*gitserver.Server, *gitserver.Repo, *Fetcher, Request) {
	srv := gitserver.New(b)
	repo := srv.CreateRepo(b, "app")
	files := map[string]string{}
	for i := range 20 {
		files[path.Join(dir, fmt.Sprintf("cm-%02d.yaml", i))] = fmt.Sprintf("a: %d\n", i)
	}
	repo.CommitStrings("first", files)
	f := NewFetcher(b.TempDir())
	req := Request{Key: "team/app", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: dir}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := f.Fetch(ctx, req); err != nil {
		b.Fatal(err)
	}
	return srv, repo, f, req
}
