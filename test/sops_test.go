package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s/sops/sopstest"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// Issue 20: Secrets kept in git encrypted with SOPS.

// secretManifest is a Secret holding password in stringData.
func secretManifest(name, ns, password string) []byte {
	return []byte(fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\nstringData:\n  password: %s\n", name, ns, password))
}

// secretJSON is secretManifest as JSON, with the password in data.
func secretJSON(name, ns, password string) []byte {
	return []byte(fmt.Sprintf(`{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": %q, "namespace": %q}, "data": {"password": %q}}`,
		name, ns, base64.StdEncoding.EncodeToString([]byte(password))))
}

// encryptAll encrypts the Secrets of the test with keys: db.yaml
// whole-file for age, api.yaml with encrypted_regex for age and PGP,
// token.json as JSON for PGP (and age), and the dotenv file of a kustomize
// secretGenerator (Secret gen).
func encryptAll(t *testing.T, keys *sopstest.Keys, ns string, pw map[string]string) map[string]string {
	t.Helper()
	db, err := keys.Encrypt(secretManifest("db", ns, pw["db"]), false, "")
	if err != nil {
		t.Fatal(err)
	}
	api, err := keys.Encrypt(secretManifest("api", ns, pw["api"]), true, "^(data|stringData)$")
	if err != nil {
		t.Fatal(err)
	}
	token, err := keys.EncryptJSON(secretJSON("token", ns, pw["token"]), true, "")
	if err != nil {
		t.Fatal(err)
	}
	envFile, err := keys.EncryptDotenv([]byte("password=" + pw["gen"] + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"db.yaml": string(db), "api.yaml": string(api), "token.json": string(token),
		"gen/kustomization.yaml": "namespace: " + ns + "\ngeneratorOptions: {disableNameSuffixHash: true}\n" +
			"secretGenerator:\n- name: gen\n  envs: [app.env]\n",
		"gen/app.env": string(envFile)}
}

// keySecret creates or replaces the Secret of spec.decryption.
func keySecret(t *testing.T, ns string, keys *sopstest.Keys, pgp bool) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sops-keys", Namespace: ns},
		Data: map[string][]byte{"team.agekey": keys.AgeFile}}
	if pgp {
		s.Data["team.asc"] = keys.PGPFile
	}
	secrets := env.Kube.CoreV1().Secrets(ns)
	if _, err := secrets.Update(context.Background(), s, metav1.UpdateOptions{}); err == nil {
		return
	}
	if _, err := secrets.Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// secretValue reads one key of a Secret ("" when it does not exist).
func secretValue(ns, name, key string) string {
	s, err := env.Kube.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return string(s.Data[key])
}

func waitSecrets(t *testing.T, ns string, want map[string]string) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() error {
		for name, pw := range want {
			if got := secretValue(ns, name, "password"); got != pw {
				return fmt.Errorf("Secret %s has password %q, want the decrypted value", name, got)
			}
		}
		return nil
	})
}

// TestSOPSSecrets: encrypted Secrets (whole-file and encrypted_regex, YAML
// and JSON, age and PGP, and a kustomize secretGenerator's dotenv file)
// are applied with their values; a rotated key
// decrypts the re-encrypted files; a tampered file fails alone, named,
// with the rest applied and nothing pruned; a repository without
// spec.decryption refuses the files, saying how to enable it; and no
// plaintext reaches the controller's logs, the Events or the status.
func TestSOPSSecrets(t *testing.T) {
	ns := env.Namespace(t)
	keys, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	keySecret(t, ns, keys, true)
	pw := map[string]string{"db": "db-pw-7d1f0c", "api": "api-pw-92be44", "token": "token-pw-3a58e1", "gen": "gen-pw-e40b17"}
	files := encryptAll(t, keys, ns, pw)
	files["cm.yaml"] = configMapYAML("settings", ns, "1")
	repo := gitserver.New(t).CreateRepo(t, "secrets")
	first := repo.CommitStrings("encrypted secrets", files)
	ctrl := startController(t, "--watch-namespace", ns)
	ctrl.waitReady(t)

	decryption := map[string]any{"provider": "sops", "secretRef": map[string]any{"name": "sops-keys"}}
	createRepo(t, ns, "secrets", map[string]any{"url": repo.URL(), "interval": "1h", "decryption": decryption})
	waitPhase(t, ns, "secrets", v1alpha1.PhaseSynced, first, 60*time.Second)
	waitSecrets(t, ns, pw)
	plaintexts := []string{pw["db"], pw["api"], pw["token"], pw["gen"]}

	// Rotation: new keys in the Secret, the files encrypted again for them.
	rotated, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	keySecret(t, ns, rotated, true)
	pw = map[string]string{"db": "db-pw-rotated-51c2", "api": "api-pw-rotated-0f9d", "token": "token-pw-rotated-c77e", "gen": "gen-pw-rotated-8812"}
	plaintexts = append(plaintexts, pw["db"], pw["api"], pw["token"], pw["gen"])
	second := repo.CommitStrings("rotate", encryptAll(t, rotated, ns, pw))
	requestSync(t, ns, "secrets")
	waitPhase(t, ns, "secrets", v1alpha1.PhaseSynced, second, 60*time.Second)
	waitSecrets(t, ns, pw)

	// kubectl alumiini diff decrypts with the keys of spec.decryption: the
	// cluster matches, and no value is printed.
	cli := plugin{t: t, kubeconfig: adminKubeconfig(t), ns: ns}
	out, errOut, code := cli.run("diff", "secrets")
	if code != 0 {
		t.Fatalf("diff exit %d, want 0 (in sync)\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, p := range pw {
		if strings.Contains(out+errOut, p) {
			t.Fatalf("diff printed a decrypted value:\n%s%s", out, errOut)
		}
	}

	// Tamper with db.yaml's ciphertext; change the ConfigMap beside it.
	files = encryptAll(t, rotated, ns, pw)
	files["db.yaml"] = tamper(t, files["db.yaml"])
	files["cm.yaml"] = configMapYAML("settings", ns, "2")
	third := repo.CommitStrings("tampered", files)
	requestSync(t, ns, "secrets")
	failed := waitPhase(t, ns, "secrets", v1alpha1.PhaseFailed, third, 60*time.Second)
	if msg := failed.Status.Message; !strings.Contains(msg, "db.yaml") || !strings.Contains(msg, "SOPS decryption failed") {
		t.Fatalf("status %q, want it to name db.yaml and the decryption failure", msg)
	}
	if v, _ := configMapValue(ns, "settings"); v != "2" {
		t.Fatalf("ConfigMap settings = %q: the rest was not applied beside the tampered file", v)
	}
	if got := secretValue(ns, "db", "password"); got != pw["db"] {
		t.Fatalf("Secret db = %q after a tampered commit: it must stay (no prune) with its last value", got)
	}

	// A repository without spec.decryption refuses the files.
	createRepo(t, ns, "plain", map[string]any{"url": repo.URL(), "interval": "1h", "targetNamespace": ns})
	refused := waitPhase(t, ns, "plain", v1alpha1.PhaseFailed, third, 60*time.Second)
	if msg := refused.Status.Message; !strings.Contains(msg, "spec.decryption") || !strings.Contains(msg, "api.yaml") {
		t.Fatalf("status %q, want api.yaml refused with how to set spec.decryption", msg)
	}

	assertNoPlaintext(t, ctrl, ns, plaintexts)
}

// tamper changes one character inside the first encrypted value.
func tamper(t *testing.T, doc string) string {
	t.Helper()
	i := strings.Index(doc, "ENC[AES256_GCM,data:")
	if i < 0 {
		t.Fatalf("no encrypted value in %q", doc)
	}
	j := i + len("ENC[AES256_GCM,data:")
	b := []byte(doc)
	if b[j] == 'A' {
		b[j] = 'B'
	} else {
		b[j] = 'A'
	}
	return string(b)
}

// assertNoPlaintext searches the controller's logs, every Event of the
// namespace and the GitRepositories' status for the decrypted values and
// their base64 forms.
func assertNoPlaintext(t *testing.T, ctrl *proc, ns string, plaintexts []string) {
	t.Helper()
	var where bytes.Buffer
	where.WriteString(ctrl.Logs())
	events, err := env.Kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		where.WriteString(e.Reason + " " + e.Message + "\n")
	}
	for _, name := range []string{"secrets", "plain"} {
		r := getRepo(t, ns, name)
		fmt.Fprintf(&where, "%+v\n", r.Status)
	}
	if where.Len() < 1000 {
		t.Fatalf("only %d bytes of logs, Events and status to search: the search would prove nothing", where.Len())
	}
	for _, p := range plaintexts {
		for _, form := range []string{p, base64.StdEncoding.EncodeToString([]byte(p))} {
			if bytes.Contains(where.Bytes(), []byte(form)) {
				t.Errorf("the decrypted value %q appears in the logs, Events or status", form)
			}
		}
	}
}
