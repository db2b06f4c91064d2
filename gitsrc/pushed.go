package gitsrc

// A push over smart HTTP: its requests are stateless, so the fetch of the
// pushed commit needs no ref advertisement before it. The commit is asked
// for while the refs are listed, side by side, and it is checked out only
// when the listing shows it at the head of the branch: one round trip to
// the git host instead of two, and the host still has the last word.

import (
	"context"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
)

// fetchListed fetches expect, the commit a webhook named, into the store
// (s.co) while src lists the refs, and returns the branch's head as
// listed, fetching it too when it is another commit.
func (s *session) fetchListed(ctx context.Context, src *source, ref Ref, expect plumbing.Hash) (plumbing.Hash, error) {
	var refs []*plumbing.Reference
	var listErr error
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		refs, listErr = src.refs(ctx, s, time.Now())
	}()
	fetchErr := s.fetchCommit(ctx, expect)
	<-listed
	if listErr != nil {
		return plumbing.ZeroHash, listErr
	}
	head, err := resolveRef(refs, ref, s.r.display)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if head != expect || fetchErr != nil {
		// The host has moved on, or refused the commit (no longer the tip
		// of a ref, or never pushed): what it lists is what is checked out.
		if !s.co.has(head) && s.fetchCommit(ctx, head) != nil {
			return s.fetch(ctx, ref, head)
		}
	}
	if err := s.co.repo.Storer.SetReference(plumbing.NewHashReference(fetchedRef, head)); err != nil {
		return plumbing.ZeroHash, err
	}
	return head, nil
}

// fetchCommit asks the host for want at depth 1 in one upload-pack
// request, telling it what the store has (its last fetch, and where its
// shallow history ends) so that only what is new is sent. A host that does
// not show want at the tip of a ref refuses it.
func (s *session) fetchCommit(ctx context.Context, want plumbing.Hash) error {
	ep, err := transport.NewEndpoint(s.r.fetch)
	if err != nil {
		return err
	}
	ep.CaBundle = s.auth.ca()
	tr, err := client.NewClient(ep)
	if err != nil {
		return err
	}
	sess, err := tr.NewUploadPackSession(ep, s.method)
	if err != nil {
		return err
	}
	defer sess.Close()

	st := s.co.repo.Storer
	req := packp.NewUploadPackRequest()
	req.Wants = []plumbing.Hash{want}
	req.Depth = packp.DepthCommits(1)
	for _, c := range []capability.Capability{capability.OFSDelta, capability.Sideband64k, capability.NoProgress, capability.Shallow} {
		if err := req.Capabilities.Set(c); err != nil {
			return err
		}
	}
	if req.Shallows, err = st.Shallow(); err != nil {
		return err
	}
	if last, err := st.Reference(fetchedRef); err == nil {
		req.Haves = []plumbing.Hash{last.Hash()}
	}
	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Close()
	if err := st.SetShallow(union(req.Shallows, resp.Shallows)); err != nil {
		return err
	}
	return packfile.UpdateObjectStorage(st, sideband.NewDemuxer(sideband.Sideband64k, resp))
}

// union is a with b's hashes that a lacks appended.
func union(a, b []plumbing.Hash) []plumbing.Hash {
	out := append([]plumbing.Hash(nil), a...)
	seen := map[plumbing.Hash]bool{}
	for _, h := range a {
		seen[h] = true
	}
	for _, h := range b {
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}
