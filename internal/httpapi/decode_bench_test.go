package httpapi

import (
	"fmt"
	"testing"
)

// BenchmarkDecodeForgot decodes the body of POST /v1/password/forgot, the
// hottest unauthenticated request the ingress takes.
func BenchmarkDecodeForgot(b *testing.B) {
	body := []byte(`{"identifier":"1001@acme.11111.service"}`)
	b.ReportAllocs()
	for b.Loop() {
		var in struct {
			Identifier string `json:"identifier"`
		}
		if err := decodeStrict(body, &in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeLogin decodes the body of POST /v1/login.
func BenchmarkDecodeLogin(b *testing.B) {
	body := []byte(`{"login_name":"1001@acme.11111.service","secret":"correct horse battery staple"}`)
	b.ReportAllocs()
	for b.Loop() {
		var in struct {
			LoginName string `json:"login_name"`
			Secret    string `json:"secret"`
		}
		if err := decodeStrict(body, &in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRefused decodes a forgot body with a name sent twice, the
// path that walks the body again to list every fault.
func BenchmarkDecodeRefused(b *testing.B) {
	body := []byte(`{"identifier":"1001@acme.11111.service","identifier":"1002@acme.11111.service"}`)
	b.ReportAllocs()
	for b.Loop() {
		var in struct {
			Identifier string `json:"identifier"`
		}
		_ = decodeStrict(body, &in)
	}
}

// BenchmarkDecodeWorstRefusal walks a 64 KiB body of unknown members, the
// most a client can make the walk do for one request.
func BenchmarkDecodeWorstRefusal(b *testing.B) {
	body := []byte{'{'}
	for i := 0; len(body) < 64<<10-16; i++ {
		body = fmt.Appendf(body, `"a%d":0,`, i)
	}
	body = append(body[:len(body)-1], '}')
	b.ReportAllocs()
	for b.Loop() {
		var in struct {
			Identifier string `json:"identifier"`
		}
		if decodeStrict(body, &in) == nil {
			b.Fatal("accepted")
		}
	}
}
