package gitsrc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/false-systems/alumiini/test/gitserver"
)

// BenchmarkQuietPoll is the local cost of a poll that finds the commit
// already checked out, with the ref listing shared (as when many
// GitRepositories name one monorepo): what thousands of idle repositories
// pay every interval.
func BenchmarkQuietPoll(b *testing.B) {
	srv := gitserver.New(b)
	repo := srv.CreateRepo(b, "mono")
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("apps/cm-%02d.yaml", i)] = fmt.Sprintf("a: %d\n", i)
	}
	repo.CommitStrings("first", files)
	f := NewFetcher(b.TempDir())
	req := Request{Key: "team/app", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: "apps"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := f.Fetch(ctx, req); err != nil {
		b.Fatal(err)
	}
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
