package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// FuzzSignedBody: an HMAC signature header verifies exactly when it
// carries the HMAC-SHA256 of the body under the secret.
func FuzzSignedBody(f *testing.F) {
	f.Add("sha256=00", []byte(`{"ref":"refs/heads/main"}`), []byte("s3cret"))
	f.Add(sign("s3cret", []byte("body")), []byte("body"), []byte("s3cret"))
	f.Add("sha1=abc", []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, header string, body, secret []byte) {
		verify := signedBody("X-Hub-Signature-256")
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		want := mac.Sum(nil)
		got, err := hex.DecodeString(strings.TrimPrefix(header, "sha256="))
		correct := strings.HasPrefix(header, "sha256=") && err == nil && hmac.Equal(got, want)
		h := http.Header{}
		h.Set("X-Hub-Signature-256", header)
		// http.Header trims and may drop values it cannot carry: compare
		// with what the handler would read.
		if h.Get("X-Hub-Signature-256") == header && verify(h, body, secret) != correct {
			t.Fatalf("signature %q verified %v, want %v", header, !correct, correct)
		}
		h.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(want))
		if !verify(h, body, secret) {
			t.Fatal("the correct signature does not verify")
		}
		if gitlabToken(http.Header{"X-Gitlab-Token": {header}}, body, secret) != (header == string(secret)) {
			t.Fatalf("GitLab token %q against secret %q: wrong verdict", header, secret)
		}
	})
}

// FuzzHandler sends any body, headers and path to the whole handler, with
// a repository that has its own secret: it never panics, always answers
// JSON with a known status, and triggers a sync only for a request signed
// with the right secret.
func FuzzHandler(f *testing.F) {
	push := []byte(`{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","repository":{"clone_url":"https://github.com/org/apps.git"}}`)
	f.Add("github", "push", push, true)
	f.Add("gitlab", "Push Hook", []byte(`{"object_kind":"push","ref":"refs/heads/main","project":{"git_http_url":"https://github.com/org/apps.git"}}`), true)
	f.Add("bitbucket", "repo:refs_changed", push, false)
	f.Add("generic", "", []byte(`{"url":"https://github.com/org/apps.git","commit":"abc"}`), true)
	f.Add("nope", "push", []byte("{"), false)
	f.Fuzz(func(t *testing.T, provider, event string, body []byte, rightSecret bool) {
		repo := gitRepo("apps", "apps", "https://github.com/org/apps.git", func(s *v1alpha1.GitRepositorySpec) {
			s.WebhookSecretRef = &v1alpha1.LocalObjectReference{Name: "hook"}
		})
		sink := &recordingSink{}
		h := NewHandler(Config{Secret: []byte(globalSecret), MaxBodyBytes: 4096}, repoList{repo},
			secretMap{"apps/hook": []byte(repoSecret)}, sink)
		secret := "wrong-secret"
		if rightSecret {
			secret = repoSecret
		}
		req := httptest.NewRequest(http.MethodPost, "/webhook/"+url.PathEscape(provider), bytes.NewReader(body))
		for _, k := range []string{"X-GitHub-Event", "X-Gitlab-Event", "X-Event-Key"} {
			req.Header.Set(k, event)
		}
		req.Header.Set("Content-Type", "application/json")
		for _, k := range []string{"X-Hub-Signature-256", "X-Hub-Signature", "X-Signature"} {
			req.Header.Set(k, sign(secret, body))
		}
		req.Header.Set("X-Gitlab-Token", secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusAccepted, http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound,
			http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType,
			http.StatusServiceUnavailable, http.StatusInternalServerError,
			// ServeMux redirects a path it cleans ("/webhook/." found by
			// fuzzing, kept in testdata): no handler runs.
			http.StatusMovedPermanently, http.StatusTemporaryRedirect:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body)
		}
		if n := len(sink.triggers()); n > 0 && !rightSecret {
			t.Fatalf("a request signed with the wrong secret triggered %d syncs", n)
		}
	})
}
