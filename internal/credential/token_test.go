package credential

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"
)

func TestNewToken(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 100 {
		token, hash, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
		if err != nil || len(raw) != 32 || len(token) != 43 {
			t.Fatalf("token %q: %d bytes, %d characters, err %v; want 32 bytes in 43 base64url characters",
				token, len(raw), len(token), err)
		}
		if hash != sha256.Sum256([]byte(token)) || hash != HashToken(token) {
			t.Fatalf("hash of %q is not the SHA-256 of its text", token)
		}
		if seen[token] {
			t.Fatalf("token %q issued twice", token)
		}
		seen[token] = true
	}
}

func TestHashToken(t *testing.T) {
	t.Parallel()
	tests := []struct{ token, want string }{
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tt := range tests {
		got := HashToken(tt.token)
		if hex.EncodeToString(got[:]) != tt.want {
			t.Errorf("HashToken(%q) = %x, want %s", tt.token, got, tt.want)
		}
	}
}
