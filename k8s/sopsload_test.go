package k8s

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s/sops"
	"github.com/false-systems/alumiini/k8s/sops/sopstest"
)

func TestLoadManifestsDecrypting(t *testing.T) {
	k, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	plain := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2-plaintext\n"
	enc, err := k.Encrypt([]byte(plain), false, "^(data|stringData)$")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a-secret.yaml", enc)
	write("b-tampered.yaml", bytes.Replace(enc, []byte("name: db"), []byte("name: dx"), 1))
	write("c-config.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n"))

	dec, err := sops.New(map[string][]byte{"key.agekey": k.AgeFile})
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := LoadManifestsDecrypting(dir, dir, dec)
	if len(objs) != 2 || objs[0].GetName() != "db" || objs[1].GetName() != "plain" {
		t.Fatalf("objects = %v", objs)
	}
	if v, _, _ := unstructured.NestedString(objs[0].Object, "stringData", "password"); v != "hunter2-plaintext" {
		t.Fatalf("password = %q", v)
	}
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "b-tampered.yaml: ") || !strings.Contains(errs[0].Error(), "MAC mismatch") {
		t.Fatalf("errors = %v", errs)
	}
	objs, errs = LoadManifestsIn(dir, dir)
	if len(objs) != 1 || len(errs) != 2 {
		t.Fatalf("without a decryptor: objects %v, errors %v", objs, errs)
	}
	want := "a-secret.yaml: encrypted with SOPS but spec.decryption is not set; add spec.decryption {provider: sops, secretRef: {name: <Secret with .agekey or .asc keys>}}"
	if errs[0].Error() != want {
		t.Fatalf("error = %q, want %q", errs[0], want)
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), "hunter2") {
			t.Fatalf("error leaks the plaintext: %v", e)
		}
	}
}

// An object decrypted from a SOPS file carries the digest of the file's
// ciphertext, and its content hash follows that digest, never the
// decrypted values: the same values encrypted again hash differently (and
// are applied again, harmlessly), different values under one digest hash
// alike.
func TestDecryptedObjectsHashTheCiphertext(t *testing.T) {
	k, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := sops.New(map[string][]byte{"key.agekey": k.AgeFile})
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n")
	load := func() *unstructured.Unstructured {
		t.Helper()
		enc, err := k.Encrypt(plain, false, "")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "db.yaml"), enc, 0o600); err != nil {
			t.Fatal(err)
		}
		objs, errs := LoadManifestsDecrypting(dir, dir, dec)
		if len(objs) != 1 || len(errs) > 0 {
			t.Fatalf("load: %v %v", objs, errs)
		}
		sum := sha256.Sum256(enc)
		if got := objs[0].GetAnnotations()[v1alpha1.AnnotationSOPSDigest]; got != hex.EncodeToString(sum[:16]) {
			t.Fatalf("digest annotation %q, want the ciphertext's", got)
		}
		return objs[0]
	}
	first, again := load(), load()
	if contentHash(first) == contentHash(again) {
		t.Fatal("the same values encrypted twice hash alike: the hash follows the plaintext")
	}
	other := first.DeepCopy()
	if err := unstructured.SetNestedField(other.Object, "another-password", "stringData", "password"); err != nil {
		t.Fatal(err)
	}
	if contentHash(first) != contentHash(other) {
		t.Fatal("different decrypted values under one ciphertext digest hash differently: the hash covers the plaintext")
	}
}

// A kustomize secretGenerator reads SOPS-encrypted dotenv and binary files
// (and encrypted resources) decrypted in memory; the Secrets it makes
// carry a digest of the ciphertexts; without spec.decryption the build is
// refused naming the file.
func TestKustomizeSecretGeneratorDecrypts(t *testing.T) {
	k, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	env, err := k.EncryptDotenv([]byte("DB_PASSWORD=env-secret-41\nDB_USER=app\n"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := k.EncryptBinary([]byte("-----BEGIN KEY-----\nbinary-secret-77\n-----END KEY-----\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := k.Encrypt([]byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\nstringData:\n  token: resource-secret-19\n"), false, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{
		"kustomization.yaml": []byte("resources: [api.yaml]\ngeneratorOptions: {disableNameSuffixHash: true}\n" +
			"secretGenerator:\n- name: db\n  envs: [db.env]\n- name: tls\n  files: [tls.key=tls.key.enc]\n"),
		"db.env": env, "tls.key.enc": cert, "api.yaml": res,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dec, err := sops.New(map[string][]byte{"key.agekey": k.AgeFile})
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := LoadManifestsDecrypting(dir, dir, dec)
	if len(errs) > 0 || len(objs) != 3 {
		t.Fatalf("objects %v, errors %v", objs, errs)
	}
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byName[o.GetName()] = o
		if o.GetAnnotations()[v1alpha1.AnnotationSOPSDigest] == "" {
			t.Errorf("Secret %s carries no ciphertext digest", o.GetName())
		}
	}
	decoded := func(name, key string) string {
		v, _, _ := unstructured.NestedString(byName[name].Object, "data", key)
		b, _ := base64.StdEncoding.DecodeString(v)
		return string(b)
	}
	if got := decoded("db", "DB_PASSWORD"); got != "env-secret-41" {
		t.Errorf("db DB_PASSWORD = %q", got)
	}
	if got := decoded("tls", "tls.key"); !strings.Contains(got, "binary-secret-77") {
		t.Errorf("tls tls.key = %q", got)
	}
	if v, _, _ := unstructured.NestedString(byName["api"].Object, "stringData", "token"); v != "resource-secret-19" {
		t.Errorf("api token = %q", v)
	}

	_, errs = LoadManifestsIn(dir, dir)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "spec.decryption") || strings.Contains(errs[0].Error(), "secret-") {
		t.Fatalf("without a decryptor: %v; want one refusal naming spec.decryption, no plaintext", errs)
	}
}
