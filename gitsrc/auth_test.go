package gitsrc

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/false-systems/alumiini/test/gitserver"
)

func TestAuthFromSecretErrors(t *testing.T) {
	plain, _ := sshKey(t, "")
	encrypted, _ := sshKey(t, "right-pass-123")
	const hosts = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
	tests := []struct {
		name string
		data map[string]string
		want string // "" means success
	}{
		{"basic", map[string]string{"username": "u", "password": "pw-123"}, ""},
		{"bearer", map[string]string{"bearerToken": "tok-123"}, ""},
		{"ca only", map[string]string{"ca.crt": testCA(t)}, ""},
		{"ssh", map[string]string{"identity": string(plain), "known_hosts": hosts}, ""},
		{"encrypted ssh", map[string]string{"identity": string(encrypted), "password": "right-pass-123", "known_hosts": hosts}, ""},
		{"empty", map[string]string{"other": "x"}, `secret "creds" has no git credentials`},
		{"username only", map[string]string{"username": "u"}, `secret "creds", key "password": missing`},
		{"password only", map[string]string{"password": "pw-123"}, `secret "creds", key "username": missing`},
		{"bearer and basic", map[string]string{"bearerToken": "tok-123", "username": "u", "password": "pw-123"}, `key "bearerToken": set either`},
		{"bad identity", map[string]string{"identity": "not a key", "known_hosts": hosts}, `secret "creds", key "identity": not a usable SSH private key`},
		{"encrypted without passphrase", map[string]string{"identity": string(encrypted), "known_hosts": hosts}, `key "identity": the private key is encrypted`},
		{"wrong passphrase", map[string]string{"identity": string(encrypted), "password": "bad-pass-456", "known_hosts": hosts}, `secret "creds", key "password": wrong passphrase`},
		{"no known_hosts", map[string]string{"identity": string(plain)}, `secret "creds", key "known_hosts": missing or empty`},
		{"bad known_hosts", map[string]string{"identity": string(plain), "known_hosts": "# ok\ngithub.com ssh-ed25519 garbage\n"}, `key "known_hosts": line 2:`},
		{"bad ca", map[string]string{"ca.crt": "hello"}, `secret "creds", key "ca.crt": no valid PEM certificate`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range tt.data {
				data[k] = []byte(v)
			}
			a, err := AuthFromSecret("creds", data)
			switch {
			case tt.want == "" && (err != nil || a == nil):
				t.Fatalf("AuthFromSecret: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("AuthFromSecret error = %v, want it to contain %q", err, tt.want)
			}
			shown := fmt.Sprintf("%v %+v %#v", a, a, a)
			if err != nil {
				shown = err.Error()
			}
			for _, k := range []string{"password", "bearerToken", "identity"} {
				if v := tt.data[k]; v != "" && strings.Contains(shown, v) {
					t.Fatalf("key %s leaks into %q", k, shown)
				}
			}
		})
	}
}

func testCA(t *testing.T) string {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

// TestBearerTokenAndCustomCA puts a TLS front end that wants a bearer token
// before the git server, as a hosting service with access tokens would.
func TestBearerTokenAndCustomCA(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	sha := repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	backend, _ := url.Parse(srv.BaseURL())
	proxy := httputil.NewSingleHostReverseProxy(backend)
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok3n" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}))

	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: front.URL + "/apps.git", Ref: Ref{Branch: "main"}}
	req.Auth = authFrom(t, map[string]string{"bearerToken": "tok3n"})
	fetchErr(t, f, req, "not signed by a trusted CA", `key "ca.crt"`)

	req.Auth = authFrom(t, map[string]string{"bearerToken": "wrong", "ca.crt": ca})
	err := fetchErr(t, f, req, `refused the credentials in secret "deploy-key"`)
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error leaks the token: %v", err)
	}

	req.Auth = authFrom(t, map[string]string{"bearerToken": "tok3n", "ca.crt": ca})
	if res := mustFetch(t, f, req); res.Commit != sha {
		t.Fatalf("commit %s, want %s", res.Commit, sha)
	}

	// A push: the pack request made beside the listing carries the token
	// and trusts the CA too (a fallback would cost two of each).
	second := repo.CommitStrings("second", map[string]string{"a.yaml": "a: 2\n"})
	req.Expect, req.RefsNotBefore = second, time.Now()
	before := snapshot(srv)
	if res := mustFetch(t, f, req); res.Commit != second {
		t.Fatalf("push: commit %s, want %s", res.Commit, second)
	}
	if got := snapshot(srv).since(before); got != (counts{1, 1}) {
		t.Fatalf("the push cost %d listings and %d pack requests, want 1 and 1", got.listings, got.packs)
	}
}
