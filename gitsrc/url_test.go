package gitsrc

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRemote(t *testing.T) {
	tests := []struct {
		raw, fetch, display, kind, host, user string
	}{
		{"https://github.com/org/repo.git", "https://github.com/org/repo.git", "https://github.com/org/repo.git", "http", "github.com", ""},
		{"https://tok:x-oauth@github.com/org/repo", "https://github.com/org/repo", "https://github.com/org/repo", "http", "github.com", "tok"},
		{"http://127.0.0.1:8080/repo.git", "http://127.0.0.1:8080/repo.git", "http://127.0.0.1:8080/repo.git", "http", "127.0.0.1:8080", ""},
		{"ssh://git@example.com:2222/org/repo.git", "ssh://git@example.com:2222/org/repo.git", "ssh://git@example.com:2222/org/repo.git", "ssh", "example.com:2222", "git"},
		{"ssh://deploy:pw@example.com/repo", "ssh://deploy:pw@example.com/repo", "ssh://deploy@example.com/repo", "ssh", "example.com:22", "deploy"},
		{"ssh://example.com/repo", "ssh://example.com/repo", "ssh://example.com/repo", "ssh", "example.com:22", "git"},
		{"git@github.com:org/repo.git", "git@github.com:org/repo.git", "git@github.com:org/repo.git", "ssh", "github.com:22", "git"},
		{"file:///srv/git/repo.git", "file:///srv/git/repo.git", "file:///srv/git/repo.git", "file", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			r, err := parseRemote(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if r.fetch != tt.fetch || r.display != tt.display || r.kind != tt.kind || r.host != tt.host || r.user != tt.user {
				t.Fatalf("parseRemote = %+v, want fetch %s display %s kind %s host %s user %s", r, tt.fetch, tt.display, tt.kind, tt.host, tt.user)
			}
		})
	}
	for _, bad := range []string{"", "git://example.com/repo.git", "/srv/git/repo.git", "ftp://example.com/repo", "https://us:er:pa ss@[::1"} {
		if r, err := parseRemote(bad); err == nil {
			t.Errorf("parseRemote(%q) = %+v, want an error", bad, r)
		} else if strings.Contains(err.Error(), "pa ss") {
			t.Errorf("parse error echoes the URL: %v", err)
		}
	}
}

func TestKeyDir(t *testing.T) {
	f := NewFetcher("/cache")
	tests := map[string]string{
		"team-a/apps":   "team-a_apps",
		"ns/my.repo":    "ns_my.repo",
		"../etc":        "%2e._etc",
		"a_b/c":         "a%5fb_c",
		"a/b_c":         "a_b%5fc",
		"ns/Upper Case": "ns_%55pper%20%43ase",
	}
	for key, want := range tests {
		got, err := f.keyDir(key)
		if err != nil || got != filepath.Join("/cache", want) {
			t.Errorf("keyDir(%q) = %q, %v; want /cache/%s", key, got, err, want)
		}
	}
	if _, err := f.keyDir(""); err == nil {
		t.Error("keyDir accepted an empty key")
	}
}

func TestCheckRequest(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		req Request
		ok  bool
	}{
		{Request{Ref: Ref{Branch: "main"}}, true},
		{Request{Ref: Ref{Branch: "main"}, Path: "a/../b"}, true},
		{Request{Ref: Ref{Commit: sha}}, true},
		{Request{}, false},
		{Request{Ref: Ref{Commit: "0123abc"}}, false},
		{Request{Ref: Ref{Commit: "0123456789ABCDEF0123456789ABCDEF01234567"}}, false},
		{Request{Ref: Ref{Branch: "main"}, Path: "a/../../x"}, false},
		{Request{Ref: Ref{Branch: "main"}, Path: "/etc"}, false},
		{Request{Ref: Ref{Branch: "main"}, Path: ".."}, false},
	}
	for _, tt := range tests {
		if err := checkRequest(tt.req); (err == nil) != tt.ok {
			t.Errorf("checkRequest(%+v) = %v, want ok %v", tt.req, err, tt.ok)
		}
	}
}
