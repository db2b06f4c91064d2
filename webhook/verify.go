package webhook

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// SecretKey is the key of a webhookSecretRef Secret that holds the secret.
const SecretKey = "token"

// secretTimeout bounds the Secret lookups of one request, so that a slow API
// server cannot hold a provider's delivery open.
const secretTimeout = 2 * time.Second

// Reasons a request is refused with 401. Their text is safe to send back: it
// names no repository, Secret or signature.
var (
	errBadSignature      = errors.New("signature does not verify")
	errNoSecret          = errors.New("no webhook secret is configured")
	errSecretUnavailable = errors.New("the webhook secret of a matching GitRepository cannot be read")
)

// unauthorizedMessage is the same whatever the cause, so that an unsigned
// sender cannot learn which repositories exist or how their secrets are
// set up; the controller's log names the cause.
func unauthorizedMessage(p provider, _ error) string {
	return fmt.Sprintf("%s is missing or does not verify, or no webhook secret applies to this repository; "+
		"check the secret configured at the provider against --webhook-secret-file or spec.webhookSecretRef "+
		"(the controller log says which)", p.signature)
}

// authenticate returns the candidates the request verifies for. Each
// candidate is checked against its own webhookSecretRef or, without one, the
// controller-wide secret. A request that names no known repository is checked
// against the controller-wide secret alone, so that an unsigned request
// cannot learn which repositories exist.
func (h *handler) authenticate(ctx context.Context, verify func(secret []byte) bool,
	candidates []*v1alpha1.GitRepository) ([]*v1alpha1.GitRepository, error) {
	if len(candidates) == 0 {
		return nil, h.accept(verify, h.cfg.Secret)
	}
	ctx, cancel := context.WithTimeout(ctx, secretTimeout)
	defer cancel()
	// Candidates often share a secret; an HMAC over a large body is the
	// costly part, so it is computed once per distinct secret.
	outcome := make(map[string]error, 1)
	var verified []*v1alpha1.GitRepository
	var firstErr error
	for _, repo := range candidates {
		secret, err := h.secretOf(ctx, repo)
		if err == nil {
			var seen bool
			if err, seen = outcome[string(secret)]; !seen {
				err = h.accept(verify, secret)
				outcome[string(secret)] = err
			}
		}
		if err != nil {
			h.log.Debug("webhook not verified for repository", zap.String("repository", repo.Key()), zap.Error(err))
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		verified = append(verified, repo)
	}
	if len(verified) == 0 {
		return nil, firstErr
	}
	return verified, nil
}

// accept decides a request against one secret. Without a secret only the
// insecure flag lets it through.
func (h *handler) accept(verify func(secret []byte) bool, secret []byte) error {
	switch {
	case len(secret) > 0 && verify(secret):
		return nil
	case len(secret) > 0:
		return errBadSignature
	case h.cfg.AllowInsecure:
		return nil
	default:
		return errNoSecret
	}
}

// secretOf returns the secret that verifies webhooks of repo: its
// webhookSecretRef when set, else the controller-wide secret. A
// webhookSecretRef that cannot be read never falls back to the
// controller-wide secret: the user asked for a narrower secret.
func (h *handler) secretOf(ctx context.Context, repo *v1alpha1.GitRepository) ([]byte, error) {
	ref := repo.Spec.WebhookSecretRef
	if ref == nil || ref.Name == "" {
		return h.cfg.Secret, nil
	}
	if h.secrets == nil {
		h.log.Error("webhookSecretRef set but the handler has no Secrets source", zap.String("repository", repo.Key()))
		return nil, errSecretUnavailable
	}
	secret, err := h.secrets.SecretValue(ctx, repo.Namespace, ref.Name, SecretKey)
	if err == nil && len(secret) == 0 {
		err = fmt.Errorf("key %q is missing or empty", SecretKey)
	}
	if err != nil {
		h.log.Warn("webhook secret unavailable", zap.String("repository", repo.Key()),
			zap.String("secret", repo.Namespace+"/"+ref.Name), zap.Error(err))
		return nil, errSecretUnavailable
	}
	return secret, nil
}

// signedBody verifies a header of the form "sha256=<hex>" holding the
// HMAC-SHA256 of the body (GitHub, Bitbucket, generic).
func signedBody(header string) func(h http.Header, body, secret []byte) bool {
	return func(h http.Header, body, secret []byte) bool {
		sig, ok := strings.CutPrefix(h.Get(header), "sha256=")
		if !ok {
			return false
		}
		got, err := hex.DecodeString(sig)
		if err != nil {
			return false
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		return hmac.Equal(got, mac.Sum(nil))
	}
}

// gitlabToken verifies X-Gitlab-Token, which carries the secret itself.
// Both sides are hashed first so that the comparison does not reveal the
// secret's length either.
func gitlabToken(h http.Header, _, secret []byte) bool {
	got := sha256.Sum256([]byte(h.Get("X-Gitlab-Token")))
	want := sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
