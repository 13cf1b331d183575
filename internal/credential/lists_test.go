package credential

import (
	"reflect"
	"strings"
	"testing"
)

func TestEmbeddedLists(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})

	if n := len(p.commonPasswords); n < 40000 {
		t.Errorf("%d common passwords embedded, want the full zxcvbn list (47,023)", n)
	}
	for _, s := range p.commonPasswords {
		if s != strings.ToLower(s) || strings.ContainsAny(s, " \t\r") {
			t.Errorf("common password %q is not lower case without spaces; lookups would miss it", s)
		}
	}
	for _, s := range []string{"password", "123456", "qwerty", "dragon", "#name?", "zxcvbnm"} {
		if !p.commonPasswords.contains(s) {
			t.Errorf("common passwords lack %q", s)
		}
	}

	if n := len(p.commonPINs); n < 1500 {
		t.Errorf("%d common PINs embedded, want about 1,941", n)
	}
	for _, s := range p.commonPINs {
		if !isDigits(s) {
			t.Errorf("common PIN %q is not all digits", s)
		}
	}
	// The hand-added entries of the file header, which the zxcvbn corpus lacks.
	for _, s := range []string{"1111", "1212", "2000", "2001", "4321", "2580", "121212", "101010", "520520"} {
		if !p.commonPINs.contains(s) {
			t.Errorf("common PINs lack %q", s)
		}
	}
}

func TestParseSortedList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		data    string
		want    sortedList
		wantErr bool
	}{
		{name: "empty", data: "", want: sortedList{}},
		{name: "comments and blanks", data: "# header\n#\n\na\nb\n", want: sortedList{"a", "b"}},
		{name: "hash entry is not a comment", data: "#name?\nabc\n", want: sortedList{"#name?", "abc"}},
		{name: "CRLF and no final newline", data: "a\r\nb\r\nc", want: sortedList{"a", "b", "c"}},
		{name: "byte order", data: "1\nA\na\n", want: sortedList{"1", "A", "a"}},
		{name: "unsorted", data: "b\na\n", wantErr: true},
		{name: "duplicate", data: "a\na\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseSortedList("test", tt.data)
			if tt.wantErr != (err != nil) {
				t.Fatalf("parseSortedList error = %v, want error: %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseSortedList = %q, want %q", got, tt.want)
			}
		})
	}
}
