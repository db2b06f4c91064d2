package webhook

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		parse   func(http.Header, []byte) (event, error)
		header  http.Header
		body    string // a file in testdata, or inline JSON
		want    event
		wantErr string
	}{
		{
			name: "github push", parse: parseGitHub, header: hdr("X-GitHub-Event", "push"), body: "github-push.json",
			want: event{
				urls: []string{"https://github.com/False-Systems/platform-config", "https://github.com/False-Systems/platform-config.git",
					"git@github.com:False-Systems/platform-config.git", "git://github.com/False-Systems/platform-config.git"},
				changes: []change{{ref: "refs/heads/main", commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}},
			},
		},
		{
			name: "github annotated tag names the commit, not the tag object", parse: parseGitHub,
			header: hdr("X-GitHub-Event", "push"), body: "github-push-tag.json",
			want: event{changes: []change{{ref: "refs/tags/v1.4.0", commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}}},
		},
		{
			name: "github deleted branch", parse: parseGitHub, header: hdr("X-GitHub-Event", "push"), body: "github-delete.json",
			want: event{changes: []change{{ref: "refs/heads/main", commit: "0000000000000000000000000000000000000000", deleted: true}}},
		},
		{name: "github ping", parse: parseGitHub, header: hdr("X-GitHub-Event", "ping"), body: "github-ping.json", want: event{ping: true}},
		{
			name: "github other event", parse: parseGitHub, header: hdr("X-GitHub-Event", "issues"), body: `{}`,
			want: event{ignore: `GitHub event "issues" is not a push`},
		},
		{name: "github no event header", parse: parseGitHub, header: hdr(), body: `{}`, wantErr: "missing X-GitHub-Event header"},
		{name: "github push without ref", parse: parseGitHub, header: hdr("X-GitHub-Event", "push"), body: `{"after":"abc"}`, wantErr: `no "ref"`},
		{name: "github truncated JSON", parse: parseGitHub, header: hdr("X-GitHub-Event", "push"), body: `{"ref":`, wantErr: "decode JSON"},
		{
			name: "gitlab push", parse: parseGitLab, header: hdr("X-Gitlab-Event", "Push Hook"), body: "gitlab-push.json",
			want: event{
				urls: []string{"https://gitlab.example.com/platform/fleet-manifests", "https://gitlab.example.com/platform/fleet-manifests.git",
					"git@gitlab.example.com:platform/fleet-manifests.git", "https://gitlab.example.com/platform/fleet-manifests",
					"https://gitlab.example.com/platform/fleet-manifests.git", "git@gitlab.example.com:platform/fleet-manifests.git"},
				changes: []change{{ref: "refs/heads/production", commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}},
			},
		},
		{
			name: "gitlab tag push names checkout_sha", parse: parseGitLab, header: hdr("X-Gitlab-Event", "Tag Push Hook"), body: "gitlab-tag-push.json",
			want: event{changes: []change{{ref: "refs/tags/release-2026.01", commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}}},
		},
		{
			name: "gitlab system hook push", parse: parseGitLab, header: hdr("X-Gitlab-Event", "System Hook"), body: "gitlab-system-push.json",
			want: event{changes: []change{{ref: "refs/heads/main", commit: "1f0a54e9a4e0b1cf1a3d7d0a2c86bd8bb1f5b6a0"}}},
		},
		{
			name: "gitlab system hook other event", parse: parseGitLab, header: hdr("X-Gitlab-Event", "System Hook"),
			body: "gitlab-system-project-create.json", want: event{ignore: `GitLab event "project_create" is not a push`},
		},
		{
			name: "gitlab deleted branch", parse: parseGitLab, header: hdr("X-Gitlab-Event", "Push Hook"),
			body: `{"object_kind":"push","ref":"refs/heads/x","after":"0000000000000000000000000000000000000000","checkout_sha":null}`,
			want: event{changes: []change{{ref: "refs/heads/x", commit: "0000000000000000000000000000000000000000", deleted: true}}},
		},
		{
			name: "gitlab merge request", parse: parseGitLab, header: hdr("X-Gitlab-Event", "Merge Request Hook"), body: `{}`,
			want: event{ignore: `GitLab event "Merge Request Hook" is not a push`},
		},
		{name: "gitlab no event header", parse: parseGitLab, header: hdr(), body: `{}`, wantErr: "missing X-Gitlab-Event header"},
		{
			name: "bitbucket cloud push", parse: parseBitbucket, header: hdr("X-Event-Key", "repo:push"), body: "bitbucket-cloud-push.json",
			want: event{
				urls:    []string{"https://bitbucket.org/kaamos-labs/cluster-state", "https://bitbucket.org/kaamos-labs/cluster-state"},
				changes: []change{{ref: "refs/heads/main", commit: "4e2c8a9d1b0f7e6a5c3d2e1f0a9b8c7d6e5f4a3b"}},
			},
		},
		{
			name: "bitbucket cloud tag and closed branch", parse: parseBitbucket, header: hdr("X-Event-Key", "repo:push"),
			body: `{"push":{"changes":[{"new":{"type":"tag","name":"v2","target":{"hash":"abc1234"}}},{"new":null,"closed":true}]},"repository":{"full_name":"ws/r"}}`,
			want: event{urls: []string{"https://bitbucket.org/ws/r"}, changes: []change{{ref: "refs/tags/v2", commit: "abc1234"}, {deleted: true}}},
		},
		{
			name: "bitbucket cloud without changes", parse: parseBitbucket, header: hdr("X-Event-Key", "repo:push"),
			body: `{"push":{"changes":[]}}`, wantErr: "no \"push.changes\"",
		},
		{
			name: "bitbucket server push", parse: parseBitbucket, header: hdr("X-Event-Key", "repo:refs_changed"), body: "bitbucket-server-push.json",
			want: event{
				urls: []string{"ssh://git@bitbucket.corp.example:7999/plat/k8s-manifests.git", "https://bitbucket.corp.example/scm/plat/k8s-manifests.git"},
				changes: []change{
					{ref: "refs/heads/release", commit: "c8f2a1d7e4b3a6f5e0d9c8b7a6f5e4d3c2b1a0f9"},
					{ref: "refs/heads/old-experiment", commit: "0000000000000000000000000000000000000000", deleted: true},
				},
			},
		},
		{name: "bitbucket ping", parse: parseBitbucket, header: hdr("X-Event-Key", "diagnostics:ping"), body: "bitbucket-server-ping.json", want: event{ping: true}},
		{name: "bitbucket ping not JSON", parse: parseBitbucket, header: hdr("X-Event-Key", "diagnostics:ping"), body: `test`, wantErr: "not valid JSON"},
		{
			name: "bitbucket pull request", parse: parseBitbucket, header: hdr("X-Event-Key", "pullrequest:created"), body: `{}`,
			want: event{ignore: `Bitbucket event "pullrequest:created" is not a push`},
		},
		{name: "bitbucket no event header", parse: parseBitbucket, header: hdr(), body: `{}`, wantErr: "missing X-Event-Key header"},
		{
			name: "generic push", parse: parseGeneric, header: hdr(), body: "generic-push.json",
			want: event{urls: []string{"ssh://git@git.internal.example:2222/ops/cluster.git"},
				changes: []change{{ref: "refs/heads/main", commit: "e83c5163316f89bfbde7d9ab23ca2e25604af290"}}},
		},
		{
			name: "generic bare branch, no commit", parse: parseGeneric, header: hdr(), body: `{"url":"https://g/x","ref":"dev"}`,
			want: event{urls: []string{"https://g/x"}, changes: []change{{ref: "refs/heads/dev"}}},
		},
		{name: "generic without url", parse: parseGeneric, header: hdr(), body: `{"ref":"main"}`, wantErr: `"url" and "ref" are required`},
		{name: "generic not an object", parse: parseGeneric, header: hdr(), body: `[1,2]`, wantErr: "decode JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.header, payload(t, tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if tt.want.urls == nil {
				got.urls = nil // the case is about changes; URLs are checked elsewhere
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("event = %+v\nwant    %+v", got, tt.want)
			}
		})
	}
}

func TestParseGitHubForm(t *testing.T) {
	body := "payload=" + url.QueryEscape(string(payload(t, "github-push.json")))
	h := hdr("X-GitHub-Event", "push", "Content-Type", "application/x-www-form-urlencoded")
	ev, err := parseGitHub(h, []byte(body))
	if err != nil {
		t.Fatalf("parse form-encoded push: %v", err)
	}
	if len(ev.changes) != 1 || ev.changes[0].ref != "refs/heads/main" {
		t.Errorf("changes = %+v, want one update of refs/heads/main", ev.changes)
	}
}

// hdr builds a header from name, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// payload returns a testdata file's content, or s itself when it is not a
// file name.
func payload(t testing.TB, s string) []byte {
	t.Helper()
	if !strings.HasSuffix(s, ".json") {
		return []byte(s)
	}
	b, err := os.ReadFile(filepath.Join("testdata", s))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}
