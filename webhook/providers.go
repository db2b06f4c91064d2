package webhook

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// event is what the handler needs of a payload, whatever its provider.
type event struct {
	ping    bool     // a connection test: verify, answer, trigger nothing
	ignore  string   // why an event type that is not a push is ignored
	urls    []string // the pushed repository, in every form the payload gives
	changes []change // the refs the push moved
}

// change is the update of one ref.
type change struct {
	ref     string // full ref: refs/heads/main, refs/tags/v1
	commit  string
	deleted bool
}

func (ev event) allDeleted() bool {
	for _, c := range ev.changes {
		if !c.deleted {
			return false
		}
	}
	return true
}

func (ev event) refs() []string {
	refs := make([]string, 0, len(ev.changes))
	for _, c := range ev.changes {
		if !c.deleted {
			refs = append(refs, c.ref)
		}
	}
	return refs
}

// provider knows one sender's headers and payloads.
type provider struct {
	name      string
	signature string // header that authenticates a request, for messages
	parse     func(h http.Header, body []byte) (event, error)
	verify    func(h http.Header, body, secret []byte) bool
}

func providers() []provider {
	return []provider{
		{"github", "X-Hub-Signature-256", parseGitHub, signedBody("X-Hub-Signature-256")},
		{"gitlab", "X-Gitlab-Token", parseGitLab, gitlabToken},
		{"bitbucket", "X-Hub-Signature", parseBitbucket, signedBody("X-Hub-Signature")},
		{"generic", "X-Signature", parseGeneric, signedBody("X-Signature")},
	}
}

// zeroSHA is how git and every provider spell "no object": the new value of
// a deleted ref.
func zeroSHA(s string) bool { return s != "" && strings.Trim(s, "0") == "" }

// nonEmpty drops the forms a payload left blank.
func nonEmpty(urls ...string) []string {
	out := urls[:0]
	for _, u := range urls {
		if u != "" {
			out = append(out, u)
		}
	}
	return out
}

func missingHeader(name, provider string) error {
	return fmt.Errorf("missing %s header: is the sender %s, and is the endpoint the right one?", name, provider)
}

// parseGitHub reads push and ping events. GitHub can also send the payload
// form-encoded (content type application/x-www-form-urlencoded).
func parseGitHub(h http.Header, body []byte) (event, error) {
	kind := h.Get("X-GitHub-Event")
	switch kind {
	case "push", "ping":
	case "":
		return event{}, missingHeader("X-GitHub-Event", "GitHub")
	default:
		return event{ignore: fmt.Sprintf("GitHub event %q is not a push", kind)}, nil
	}
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return event{}, fmt.Errorf("form-encoded body: %w", err)
		}
		body = []byte(form.Get("payload"))
	}
	var p struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Deleted    bool   `json:"deleted"`
		HeadCommit *struct {
			ID string `json:"id"`
		} `json:"head_commit"`
		Repository struct {
			HTMLURL  string `json:"html_url"`
			CloneURL string `json:"clone_url"`
			SSHURL   string `json:"ssh_url"`
			GitURL   string `json:"git_url"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return event{}, fmt.Errorf("decode JSON: %w", err)
	}
	r := p.Repository
	ev := event{ping: kind == "ping", urls: nonEmpty(r.HTMLURL, r.CloneURL, r.SSHURL, r.GitURL)}
	if ev.ping {
		return ev, nil
	}
	if p.Ref == "" {
		return event{}, errors.New(`push has no "ref"`)
	}
	// For a tag push "after" may name the annotated tag object;
	// head_commit is the commit it points at.
	commit := p.After
	if p.HeadCommit != nil && p.HeadCommit.ID != "" {
		commit = p.HeadCommit.ID
	}
	ev.changes = []change{{ref: p.Ref, commit: commit, deleted: p.Deleted || zeroSHA(p.After)}}
	return ev, nil
}

// parseGitLab reads push and tag push events, from project hooks and from
// system hooks. GitLab's "Test" button sends an ordinary push event.
func parseGitLab(h http.Header, body []byte) (event, error) {
	switch kind := h.Get("X-Gitlab-Event"); kind {
	case "Push Hook", "Tag Push Hook", "System Hook":
	case "":
		return event{}, missingHeader("X-Gitlab-Event", "GitLab")
	default:
		return event{ignore: fmt.Sprintf("GitLab event %q is not a push", kind)}, nil
	}
	var p struct {
		ObjectKind  string `json:"object_kind"`
		EventName   string `json:"event_name"`
		Ref         string `json:"ref"`
		After       string `json:"after"`
		CheckoutSHA string `json:"checkout_sha"`
		Project     struct {
			WebURL     string `json:"web_url"`
			GitHTTPURL string `json:"git_http_url"`
			GitSSHURL  string `json:"git_ssh_url"`
		} `json:"project"`
		Repository struct {
			Homepage   string `json:"homepage"`
			GitHTTPURL string `json:"git_http_url"`
			GitSSHURL  string `json:"git_ssh_url"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return event{}, fmt.Errorf("decode JSON: %w", err)
	}
	// A system hook delivers every kind of event under one header.
	if kind := cmp.Or(p.EventName, p.ObjectKind); kind != "push" && kind != "tag_push" {
		return event{ignore: fmt.Sprintf("GitLab event %q is not a push", kind)}, nil
	}
	if p.Ref == "" {
		return event{}, errors.New(`push has no "ref"`)
	}
	pr, r := p.Project, p.Repository
	commit := cmp.Or(p.CheckoutSHA, p.After) // checkout_sha is the commit even for annotated tags
	return event{
		urls:    nonEmpty(pr.WebURL, pr.GitHTTPURL, pr.GitSSHURL, r.Homepage, r.GitHTTPURL, r.GitSSHURL),
		changes: []change{{ref: p.Ref, commit: commit, deleted: zeroSHA(p.After)}},
	}, nil
}

// parseBitbucket reads Bitbucket Cloud (repo:push) and Bitbucket
// Server/Data Center (repo:refs_changed) pushes, and both test connections
// (diagnostics:ping).
func parseBitbucket(h http.Header, body []byte) (event, error) {
	switch key := h.Get("X-Event-Key"); key {
	case "repo:push":
		return parseBitbucketCloud(body)
	case "repo:refs_changed":
		return parseBitbucketServer(body)
	case "diagnostics:ping":
		if !json.Valid(body) {
			return event{}, errors.New("decode JSON: ping body is not valid JSON")
		}
		return event{ping: true}, nil
	case "":
		return event{}, missingHeader("X-Event-Key", "Bitbucket")
	default:
		return event{ignore: fmt.Sprintf("Bitbucket event %q is not a push", key)}, nil
	}
}

func parseBitbucketCloud(body []byte) (event, error) {
	var p struct {
		Push struct {
			Changes []struct {
				New *struct {
					Type   string `json:"type"`
					Name   string `json:"name"`
					Target struct {
						Hash string `json:"hash"`
					} `json:"target"`
				} `json:"new"`
			} `json:"changes"`
		} `json:"push"`
		Repository struct {
			FullName string `json:"full_name"`
			Links    struct {
				HTML struct {
					Href string `json:"href"`
				} `json:"html"`
			} `json:"links"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return event{}, fmt.Errorf("decode JSON: %w", err)
	}
	var ev event
	if name := p.Repository.FullName; name != "" {
		ev.urls = append(ev.urls, "https://bitbucket.org/"+name) // Cloud lives on one host
	}
	ev.urls = append(ev.urls, nonEmpty(p.Repository.Links.HTML.Href)...)
	for _, c := range p.Push.Changes {
		switch {
		case c.New == nil: // the ref was deleted ("closed")
			ev.changes = append(ev.changes, change{deleted: true})
		case c.New.Name == "":
			continue // names no ref: nothing could follow it
		case c.New.Type == "branch":
			ev.changes = append(ev.changes, change{ref: "refs/heads/" + c.New.Name, commit: c.New.Target.Hash})
		case c.New.Type == "tag":
			ev.changes = append(ev.changes, change{ref: "refs/tags/" + c.New.Name, commit: c.New.Target.Hash})
		}
	}
	if len(ev.changes) == 0 {
		return event{}, errors.New(`push has no "push.changes"`)
	}
	return ev, nil
}

func parseBitbucketServer(body []byte) (event, error) {
	var p struct {
		Repository struct {
			Links struct {
				Clone []struct {
					Href string `json:"href"`
				} `json:"clone"`
			} `json:"links"`
		} `json:"repository"`
		Changes []struct {
			RefID  string `json:"refId"`
			ToHash string `json:"toHash"`
			Type   string `json:"type"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return event{}, fmt.Errorf("decode JSON: %w", err)
	}
	var ev event
	for _, l := range p.Repository.Links.Clone {
		ev.urls = append(ev.urls, nonEmpty(l.Href)...)
	}
	for _, c := range p.Changes {
		if c.RefID == "" {
			continue // names no ref: nothing could follow it
		}
		deleted := c.Type == "DELETE" || zeroSHA(c.ToHash)
		ev.changes = append(ev.changes, change{ref: c.RefID, commit: c.ToHash, deleted: deleted})
	}
	if len(ev.changes) == 0 {
		return event{}, errors.New(`push has no "changes"`)
	}
	return ev, nil
}

// parseGeneric reads the payload of senders without a provider of their own,
// such as a post-receive hook:
//
//	{"url": "https://git.example.com/org/repo.git", "ref": "refs/heads/main", "commit": "<sha>"}
//
// A bare ref name is a branch. The commit is optional (the repository then
// syncs the ref's head); an all-zero commit means the ref was deleted.
func parseGeneric(_ http.Header, body []byte) (event, error) {
	var p struct {
		URL    string `json:"url"`
		Ref    string `json:"ref"`
		Commit string `json:"commit"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return event{}, fmt.Errorf("decode JSON: %w", err)
	}
	if p.URL == "" || p.Ref == "" {
		return event{}, errors.New(`"url" and "ref" are required, as in {"url": "https://git.example.com/org/repo.git", "ref": "refs/heads/main"}`)
	}
	ref := p.Ref
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	return event{
		urls:    []string{p.URL},
		changes: []change{{ref: ref, commit: p.Commit, deleted: zeroSHA(p.Commit)}},
	}, nil
}
