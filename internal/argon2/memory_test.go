package argon2

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	upstream "golang.org/x/crypto/argon2"
)

// One Memory reused across the known-answer vectors, in both orders so it
// shrinks and grows: a block left over from the previous hash must never
// change a result.
func TestMemoryReuseMatchesVectors(t *testing.T) {
	password, salt := []byte("password"), []byte("somesalt")
	var m Memory
	for _, order := range [][]int{forward(len(testVectors)), backward(len(testVectors))} {
		for _, i := range order {
			v := testVectors[i]
			want, err := hex.DecodeString(v.hash)
			if err != nil {
				t.Fatal(err)
			}
			got := deriveKey(v.mode, &m, password, salt, nil, nil, v.time, v.memory, v.threads, uint32(len(want)))
			if !bytes.Equal(got, want) {
				t.Errorf("vector %d in reused memory: got %x, want %x", i, got, want)
			}
		}
	}
}

// The hasher's real cost, on a dirty buffer, against upstream's fresh one.
func TestMemoryIDKeyMatchesUpstream(t *testing.T) {
	var m Memory
	for i := range 3 {
		password := fmt.Appendf(nil, "password %d", i)
		salt := fmt.Appendf(nil, "sixteen byte s%02d", i)
		want := upstream.IDKey(password, salt, 2, 19*1024, 1, 32)
		if got := m.IDKey(password, salt, 2, 19*1024, 1, 32); !bytes.Equal(got, want) {
			t.Fatalf("hash %d: got %x, want %x", i, got, want)
		}
	}
}

func forward(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func backward(n int) []int {
	out := forward(n)
	for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// The login cost (19 MiB, t=2), fresh memory against reused.
func BenchmarkIDKeyLoginCost(b *testing.B) {
	password, salt := []byte("password"), []byte("sixteen byte sal")
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			IDKey(password, salt, 2, 19*1024, 1, 32)
		}
	})
	b.Run("reused", func(b *testing.B) {
		b.ReportAllocs()
		var m Memory
		for b.Loop() {
			m.IDKey(password, salt, 2, 19*1024, 1, 32)
		}
	})
}
