package testkit

import (
	"crypto/rand"
	"math/big"
	"testing"

	"github.com/latchkey/latchkey/internal/credential"
)

// Secret returns a password that every default policy accepts and that no
// output can hold by chance: a test that searches an answer, a log or an
// event for it finds it only if it leaked. (A short fixed secret such as the
// PIN "8264" turns up inside a random UUID once in a few thousand runs.)
func Secret(t testing.TB) string {
	t.Helper()
	return "secret-" + randomHex(16)
}

// PIN returns a random 10-digit voicemail PIN that the default policy
// accepts for any extension shorter than 10 characters. Ten given digits
// occur in a UUID's 32 hex digits about once in 10^10 runs.
func PIN(t testing.TB) string {
	t.Helper()
	policy, err := credential.NewPolicy(credential.PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := rand.Int(rand.Reader, big.NewInt(9_000_000_000))
		if err != nil {
			t.Fatal(err)
		}
		pin := new(big.Int).Add(n, big.NewInt(1_000_000_000)).String()
		if len(policy.CheckPIN(pin, credential.Identity{})) == 0 {
			return pin
		}
	}
}
