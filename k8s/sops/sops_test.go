package sops_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/false-systems/alumiini/k8s/sops"
	"github.com/false-systems/alumiini/k8s/sops/sopstest"
)

const secretDoc = `apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2-plaintext
`

func TestDecrypt(t *testing.T) {
	k, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	other, err := sopstest.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		keys    map[string][]byte
		regex   string
		tamper  bool
		wantErr string
	}{
		{name: "age whole file", keys: map[string][]byte{"key.agekey": k.AgeFile}},
		{name: "pgp whole file", keys: map[string][]byte{"key.asc": k.PGPFile}},
		{name: "age encrypted_regex", keys: map[string][]byte{"key.agekey": k.AgeFile}, regex: "^(data|stringData)$"},
		{name: "wrong key", keys: map[string][]byte{"key.agekey": other.AgeFile, "key.asc": other.PGPFile}, wantErr: "no key in spec.decryption's Secret decrypts the data key"},
		{name: "tampered value", keys: map[string][]byte{"key.agekey": k.AgeFile}, regex: "^(data|stringData)$", tamper: true, wantErr: "MAC mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := k.Encrypt([]byte(secretDoc), true, tc.regex)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(enc, []byte("hunter2")) {
				t.Fatalf("encrypted document holds the plaintext:\n%s", enc)
			}
			if !sops.IsEncrypted(enc) {
				t.Fatal("IsEncrypted = false for a SOPS document")
			}
			if tc.tamper {
				// An unencrypted field changed after encryption: only the MAC notices.
				enc = bytes.Replace(enc, []byte("name: db"), []byte("name: dc"), 1)
			}
			d, err := sops.New(tc.keys)
			if err != nil {
				t.Fatal(err)
			}
			out, err := d.Decrypt(enc, false)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error leaks the plaintext: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(out, []byte("password: hunter2-plaintext")) || bytes.Contains(out, []byte("sops:")) {
				t.Fatalf("plaintext:\n%s", out)
			}
		})
	}
}

func TestNewAndIsEncrypted(t *testing.T) {
	if _, err := sops.New(map[string][]byte{"other": []byte("x")}); err == nil || !strings.Contains(err.Error(), "*.agekey") {
		t.Fatalf("New without keys: %v", err)
	}
	if _, err := sops.New(map[string][]byte{"key.agekey": []byte("AGE-SECRET-KEY-garbage")}); err == nil || !strings.Contains(err.Error(), "key.agekey") {
		t.Fatalf("New with a bad age key: %v", err)
	}
	if sops.IsEncrypted([]byte(secretDoc)) {
		t.Fatal("IsEncrypted = true for plain YAML")
	}
}
