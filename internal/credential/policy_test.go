package credential

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func newTestPolicy(t testing.TB, cfg PolicyConfig) *Policy {
	t.Helper()
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatalf("NewPolicy(%+v): %v", cfg, err)
	}
	return p
}

// pw returns the first n characters of a phrase that is on no list and
// repeats no character in a row, in ASCII or in multi-byte characters.
func pw(t *testing.T, n int, multiByte bool) string {
	t.Helper()
	src := "Kv7#qL2!mZ9x$Rt4@wB8&nH3%pD6^sF1*gJ5(yC0)eU+iO-aT=bN?cM~dQ<fW>hX;jY:kZ,lV.oP/rS"
	if multiByte {
		src = "日本語のパスワードは長くて安全ですかтестовыйпарольΚωδικόςπρόσβασηςéàüöçñßøåæœÿ語句"
		src += src
	}
	r := []rune(src)
	if n > len(r) {
		t.Fatalf("pw(%d): phrase has only %d characters", n, len(r))
	}
	return string(r[:n])
}

type fieldCode struct{ Field, Code string }

func fieldCodes(vs []Violation) []fieldCode {
	var out []fieldCode
	for _, v := range vs {
		out = append(out, fieldCode{v.Field, v.Code})
	}
	return out
}

func TestNewPolicyConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     PolicyConfig
		want    PolicyConfig
		wantErr bool
	}{
		{name: "defaults", cfg: PolicyConfig{}, want: PolicyConfig{8, 64, 4, 10}},
		{name: "legacy limits", cfg: PolicyConfig{6, 30, 4, 8}, want: PolicyConfig{6, 30, 4, 8}},
		{name: "min equals max", cfg: PolicyConfig{12, 12, 6, 6}, want: PolicyConfig{12, 12, 6, 6}},
		{name: "password min above default max", cfg: PolicyConfig{PasswordMinLength: 65}, wantErr: true},
		{name: "password min above max", cfg: PolicyConfig{PasswordMinLength: 10, PasswordMaxLength: 9}, wantErr: true},
		{name: "password min negative", cfg: PolicyConfig{PasswordMinLength: -1}, wantErr: true},
		{name: "PIN min above max", cfg: PolicyConfig{PINMinLength: 6, PINMaxLength: 5}, wantErr: true},
		{name: "PIN min negative", cfg: PolicyConfig{PINMinLength: -4}, wantErr: true},
		{name: "PIN max negative", cfg: PolicyConfig{PINMaxLength: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewPolicy(tt.cfg)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("NewPolicy(%+v) error = %v, want ErrInvalidConfig", tt.cfg, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewPolicy(%+v): %v", tt.cfg, err)
			}
			if got := p.Config(); got != tt.want {
				t.Errorf("Config() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCheckPasswordLength(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	newLen := fieldCode{FieldNewPassword, CodePasswordLength}
	confirmLen := fieldCode{FieldConfirmPassword, CodeConfirmLength}

	tests := []struct {
		name string
		pw   string
		want []fieldCode
	}{
		{"empty", "", []fieldCode{newLen, confirmLen}},
		{"min-1", pw(t, 7, false), []fieldCode{newLen, confirmLen}},
		{"min", pw(t, 8, false), nil},
		{"max", pw(t, 64, false), nil},
		{"max+1", pw(t, 65, false), []fieldCode{newLen, confirmLen}},
		{"min-1 multi-byte", pw(t, 7, true), []fieldCode{newLen, confirmLen}},
		{"min multi-byte (24 bytes)", pw(t, 8, true), nil},
		{"max multi-byte (>64 bytes)", pw(t, 64, true), nil},
		{"max+1 multi-byte", pw(t, 65, true), []fieldCode{newLen, confirmLen}},
		{"emoji count once each", "🔑🚪🏠🌙⭐🎲🎯🧩", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fieldCodes(p.CheckPassword(tt.pw, tt.pw, Identity{}))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CheckPassword(%q) = %v, want %v (%d code points)", tt.pw, got, tt.want,
					utf8.RuneCountInString(tt.pw))
			}
		})
	}
}

func TestCheckPasswordConfirmation(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	good := pw(t, 12, false)
	mismatch := fieldCode{FieldConfirmPassword, CodePasswordMismatch}

	tests := []struct {
		name, newPW, confirm string
		want                 []fieldCode
	}{
		{"same", good, good, nil},
		{"different", good, pw(t, 13, false), []fieldCode{mismatch}},
		{"differs in case", good, strings.ToUpper(good), []fieldCode{mismatch}},
		{"trailing space in confirmation", good, good + " ", []fieldCode{mismatch}},
		{"confirmation empty", good, "", []fieldCode{{FieldConfirmPassword, CodeConfirmLength}}},
		{"confirmation too long", good, pw(t, 65, false), []fieldCode{{FieldConfirmPassword, CodeConfirmLength}}},
		{"new too short, confirmation fine", "short", good, []fieldCode{{FieldNewPassword, CodePasswordLength}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fieldCodes(p.CheckPassword(tt.newPW, tt.confirm, Identity{}))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CheckPassword(%q, %q) = %v, want %v", tt.newPW, tt.confirm, got, tt.want)
			}
		})
	}
}

func TestCheckPasswordIdentity(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	id := Identity{LoginName: "jdoe.sales@acme.11111.service", Extension: "10012345", Email: "Jane.Doe-42@Example.com"}
	isID := []fieldCode{{FieldNewPassword, CodePasswordIsIdentity}}

	tests := []struct {
		name string
		pw   string
		id   Identity
		want []fieldCode
	}{
		{"login name", "jdoe.sales@acme.11111.service", id, isID},
		{"login name, other case and spaces", "  JDoe.Sales@ACME.11111.service ", id, isID},
		{"login name local part", "jdoe.sales", id, isID},
		{"extension", "10012345", id, isID},
		{"email", "jane.doe-42@example.com", id, isID},
		{"email local part", "JANE.DOE-42", id, isID},
		{"contains the login name", "jdoe.sales!2024", id, nil},
		{"email of someone else", "john.doe-42@example.com", id, nil},
		{"identity value padded", "extension", Identity{Extension: " extension "}, isID},
		{"empty identity matches nothing", pw(t, 10, false), Identity{}, nil},
		{"login name without @", "jdoe.sales.team", Identity{LoginName: "JDOE.SALES.TEAM"}, isID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fieldCodes(p.CheckPassword(tt.pw, tt.pw, tt.id))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CheckPassword(%q, %+v) = %v, want %v", tt.pw, tt.id, got, tt.want)
			}
		})
	}
}

func TestCheckPasswordCommon(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	common := []fieldCode{{FieldNewPassword, CodePasswordCommon}}

	tests := []struct {
		pw   string
		want []fieldCode
	}{
		{"password", common},
		{"PassWord", common},
		{"  password  ", common},
		{"12345678", common},
		{"baseball", common},
		{"iloveyou", common},
		{"p@ssw0rd", common},
		{"qwerty123", common},
		{"trustno1", common},
		{"aaaaaaaa", common},
		{"AAAAaaaa", common},
		{"ÄÄÄÄÄÄÄÄ", common},
		{"          ", common},
		{"password-is-long-enough", nil},
		{"aaaaaaab", nil},
		{pw(t, 16, false), nil},
	}
	for _, tt := range tests {
		t.Run(tt.pw, func(t *testing.T) {
			t.Parallel()
			got := fieldCodes(p.CheckPassword(tt.pw, tt.pw, Identity{}))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CheckPassword(%q) = %v, want %v", tt.pw, got, tt.want)
			}
		})
	}
}

func TestCheckPasswordIdentityAndCommon(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	got := fieldCodes(p.CheckPassword("baseball", "baseball", Identity{LoginName: "baseball"}))
	want := []fieldCode{{FieldNewPassword, CodePasswordIsIdentity}, {FieldNewPassword, CodePasswordCommon}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// The English texts are part of the contract (SPEC §4); numbers come from
// the configuration.
func TestPasswordMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		cfg           PolicyConfig
		newPW, confrm string
		id            Identity
		want          []Violation
	}{
		{
			name: "lengths, defaults", newPW: "short", confrm: "",
			want: []Violation{
				{FieldNewPassword, CodePasswordLength, "New password must be between 8 and 64 characters long.",
					map[string]any{"min": 8, "max": 64}},
				{FieldConfirmPassword, CodeConfirmLength, "Confirm password must be between 8 and 64 characters long.",
					map[string]any{"min": 8, "max": 64}},
			},
		},
		{
			name: "lengths, legacy configuration", cfg: PolicyConfig{PasswordMinLength: 6, PasswordMaxLength: 30},
			newPW: "short", confrm: "short",
			want: []Violation{
				{FieldNewPassword, CodePasswordLength, "New password must be between 6 and 30 characters long.",
					map[string]any{"min": 6, "max": 30}},
				{FieldConfirmPassword, CodeConfirmLength, "Confirm password must be between 6 and 30 characters long.",
					map[string]any{"min": 6, "max": 30}},
			},
		},
		{
			name: "mismatch", newPW: "Kv7#qL2!mZ9x", confrm: "Kv7#qL2!mZ9y",
			want: []Violation{{FieldConfirmPassword, CodePasswordMismatch,
				"New password and Confirm new password must be the same.", nil}},
		},
		{
			name: "identity", newPW: "1001@acme", confrm: "1001@acme", id: Identity{LoginName: "1001@acme"},
			want: []Violation{{FieldNewPassword, CodePasswordIsIdentity,
				"The password must not be your login name, extension or email address.", nil}},
		},
		{
			name: "common", newPW: "football", confrm: "football",
			want: []Violation{{FieldNewPassword, CodePasswordCommon,
				"This password is too common. Choose another one.", nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestPolicy(t, tt.cfg)
			got := p.CheckPassword(tt.newPW, tt.confrm, tt.id)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CheckPassword(%q, %q) =\n%#v\nwant\n%#v", tt.newPW, tt.confrm, got, tt.want)
			}
		})
	}
}

func TestCheckPasswordField(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	tests := []struct {
		pw   string
		want []fieldCode
	}{
		{"Kv7#qL2!mZ9x", nil},
		{"short", []fieldCode{{"password", CodePasswordLength}}},
		{"password", []fieldCode{{"password", CodePasswordCommon}}},
		{"1001@acme", []fieldCode{{"password", CodePasswordIsIdentity}}},
	}
	for _, tt := range tests {
		got := fieldCodes(p.CheckPasswordField("password", tt.pw, Identity{LoginName: "1001@acme"}))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("CheckPasswordField(%q) = %v, want %v", tt.pw, got, tt.want)
		}
	}
}

func TestCheckPIN(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	id := Identity{LoginName: "1001@acme", Extension: "4711", Email: "a@example.com"}
	digits := fieldCode{FieldNewPIN, CodePINDigits}
	length := fieldCode{FieldNewPIN, CodePINLength}
	black := fieldCode{FieldNewPIN, CodePINBlacklisted}

	tests := []struct {
		name string
		pin  string
		want []fieldCode
	}{
		// Length: both ends accepted.
		{"empty", "", []fieldCode{length}},
		{"min-1", "482", []fieldCode{length}},
		{"min", "4829", nil},
		{"between", "402817", nil},
		{"max", "4829105736", nil},
		{"max+1", "48291057362", []fieldCode{length}},
		// Digits only.
		{"letter", "48a9", []fieldCode{digits}},
		{"space", "4829 ", []fieldCode{digits}},
		{"sign", "-4829", []fieldCode{digits}},
		{"arabic-indic digits counted as characters", "٤٨٢٩", []fieldCode{digits}},
		{"fullwidth digits", "４８２９", []fieldCode{digits}},
		{"short and not digits", "4a", []fieldCode{digits, length}},
		{"too long and not digits", "48291057362x", []fieldCode{digits, length}},
		// Repeated digit, every digit and length.
		{"1111", "1111", []fieldCode{black}},
		{"0000", "0000", []fieldCode{black}},
		{"000000", "000000", []fieldCode{black}},
		{"77777", "77777", []fieldCode{black}},
		{"9999999999", "9999999999", []fieldCode{black}},
		{"repeated but too long", "11111111111", []fieldCode{length}},
		// Runs, ascending and descending, without wrapping.
		{"1234", "1234", []fieldCode{black}},
		{"0123", "0123", []fieldCode{black}},
		{"4321", "4321", []fieldCode{black}},
		{"3456789", "3456789", []fieldCode{black}},
		{"9876", "9876", []fieldCode{black}},
		{"56789", "56789", []fieldCode{black}},
		{"0123456789", "0123456789", []fieldCode{black}},
		{"9876543210", "9876543210", []fieldCode{black}},
		{"run with one step off", "12346", nil},
		{"wrapping is not a run", "8901", nil},
		// The user's extension.
		{"extension", "4711", []fieldCode{black}},
		// The shipped list.
		{"1212", "1212", []fieldCode{black}},
		{"2580", "2580", []fieldCode{black}},
		{"1004", "1004", []fieldCode{black}},
		{"2000", "2000", []fieldCode{black}},
		{"6969", "6969", []fieldCode{black}},
		{"1122", "1122", []fieldCode{black}},
		{"121212", "121212", []fieldCode{black}},
		{"112233", "112233", []fieldCode{black}},
		{"123123", "123123", []fieldCode{black}},
		{"696969", "696969", []fieldCode{black}},
		{"159753", "159753", []fieldCode{black}},
		{"8675309", "8675309", []fieldCode{black}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fieldCodes(p.CheckPIN(tt.pin, id))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CheckPIN(%q) = %v, want %v", tt.pin, got, tt.want)
			}
		})
	}
}

func TestCheckPINExtension(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{})
	tests := []struct {
		name string
		ext  string
		want bool
	}{
		{"equal", "4829", true},
		{"padded", " 4829 ", true},
		{"other", "4830", false},
		{"empty", "", false},
		{"longer", "48291", false},
	}
	for _, tt := range tests {
		got := len(p.CheckPIN("4829", Identity{Extension: tt.ext})) > 0
		if got != tt.want {
			t.Errorf("%s: CheckPIN(4829, extension %q) rejected = %v, want %v", tt.name, tt.ext, got, tt.want)
		}
	}
}

func TestPINMessages(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, PolicyConfig{PINMinLength: 6, PINMaxLength: 8})
	tests := []struct {
		pin  string
		want []Violation
	}{
		{"12a", []Violation{
			{"pin", CodePINDigits, "The PIN must contain digits only.", nil},
			{"pin", CodePINLength, "The PIN must be between 6 and 8 digits long.", map[string]any{"min": 6, "max": 8}},
		}},
		{"123456", []Violation{{"pin", CodePINBlacklisted, "This PIN is too easy to guess. Choose another one.", nil}}},
		{"402817", nil},
	}
	for _, tt := range tests {
		got := p.CheckPINField("pin", tt.pin, Identity{})
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("CheckPINField(pin, %q) =\n%#v\nwant\n%#v", tt.pin, got, tt.want)
		}
	}
}

func TestPatterns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s             string
		same, digitRn bool
	}{
		{"", false, false},
		{"1", false, false},
		{"11", true, false},
		{"12", false, true},
		{"21", false, true},
		{"13", false, false},
		{"90", false, false},
		{"09", false, false},
		{"1233", false, false},
		{"ééé", true, false},
		{"éèé", false, false},
		{"aaab", false, false},
	}
	for _, tt := range tests {
		if got := sameRune(tt.s); got != tt.same {
			t.Errorf("sameRune(%q) = %v, want %v", tt.s, got, tt.same)
		}
		if got := isDigitRun(tt.s); got != tt.digitRn {
			t.Errorf("isDigitRun(%q) = %v, want %v", tt.s, got, tt.digitRn)
		}
	}
}

var (
	passwordCodes = map[string]string{
		CodePasswordLength:     FieldNewPassword,
		CodePasswordIsIdentity: FieldNewPassword,
		CodePasswordCommon:     FieldNewPassword,
		CodeConfirmLength:      FieldConfirmPassword,
		CodePasswordMismatch:   FieldConfirmPassword,
	}
	pinCodes = map[string]bool{CodePINDigits: true, CodePINLength: true, CodePINBlacklisted: true}
)

// FuzzCheckPassword: never panics, and every answer is consistent with the
// rules it claims to apply.
func FuzzCheckPassword(f *testing.F) {
	p := newTestPolicy(f, PolicyConfig{})
	f.Add("password", "password", "jdoe@acme", "1001", "jane@example.com")
	f.Add("Kv7#qL2!mZ9x", "Kv7#qL2!mZ9y", "", "", "")
	f.Add("日本語のパスワード", "日本語のパスワード", "日本語のパスワード@x", "", "@")
	f.Add("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", "", "@", "@", "@@")
	f.Add("        ", "        ", " ", " ", " ")
	f.Fuzz(func(t *testing.T, newPW, confirm, login, ext, email string) {
		vs := p.CheckPassword(newPW, confirm, Identity{LoginName: login, Extension: ext, Email: email})
		n := utf8.RuneCountInString(newPW)
		lengthOK := n >= 8 && n <= 64
		for _, v := range vs {
			if field, ok := passwordCodes[v.Code]; !ok || field != v.Field || v.Message == "" {
				t.Fatalf("unexpected violation %+v", v)
			}
			if v.Code == CodePasswordLength && lengthOK {
				t.Fatalf("length violation for %d code points", n)
			}
			if v.Code == CodePasswordMismatch && newPW == confirm {
				t.Fatalf("mismatch reported for equal passwords %q", newPW)
			}
		}
		if len(vs) == 0 && (!lengthOK || newPW != confirm) {
			t.Fatalf("CheckPassword(%q, %q) accepted", newPW, confirm)
		}
	})
}

// FuzzPolicyAcceptsOnlyPlausibleSecrets: login refuses what is not a
// PlausibleSecret without hashing it, so nothing the policy accepts, under
// the widest limits configuration allows, may fall outside it. (Before,
// login counted bytes while the policy counted code points.)
func FuzzPolicyAcceptsOnlyPlausibleSecrets(f *testing.F) {
	p := newTestPolicy(f, PolicyConfig{PasswordMinLength: 1, PasswordMaxLength: MaxSecretLength, PINMinLength: 1, PINMaxLength: 64})
	f.Add(" \t \t \t \t")
	f.Add(strings.Repeat("😀😺🦊", 341) + "😀")
	f.Add("4829")
	f.Fuzz(func(t *testing.T, secret string) {
		if len(p.CheckPasswordField("password", secret, Identity{})) == 0 && !PlausibleSecret(secret) {
			t.Fatalf("the policy accepts a password login refuses: %d code points", utf8.RuneCountInString(secret))
		}
		if len(p.CheckPIN(secret, Identity{})) == 0 && !PlausibleSecret(secret) {
			t.Fatalf("the policy accepts a PIN login refuses: %q", secret)
		}
	})
}

func TestPlausibleSecretCountsCodePoints(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"":                                   false,
		" ":                                  true,
		strings.Repeat("😀", MaxSecretLength): true,
		strings.Repeat("😀", MaxSecretLength+1): false,
		strings.Repeat("a", MaxSecretLength+1): false,
	} {
		if got := PlausibleSecret(s); got != want {
			t.Errorf("PlausibleSecret(%d code points) = %v", utf8.RuneCountInString(s), got)
		}
	}
	if _, err := NewPolicy(PolicyConfig{PasswordMaxLength: MaxSecretLength + 1}); err == nil {
		t.Fatal("a policy accepting secrets longer than MaxSecretLength was built")
	}
}

// FuzzCheckPIN: never panics, and an accepted PIN obeys every rule.
func FuzzCheckPIN(f *testing.F) {
	p := newTestPolicy(f, PolicyConfig{})
	for _, s := range []string{"4829", "1234", "0000", "12a4", "", "٤٨٢٩", "98765432109", "4711"} {
		f.Add(s, "4711")
	}
	f.Fuzz(func(t *testing.T, pin, ext string) {
		vs := p.CheckPIN(pin, Identity{Extension: ext})
		for _, v := range vs {
			if !pinCodes[v.Code] || v.Field != FieldNewPIN || v.Message == "" {
				t.Fatalf("unexpected violation %+v", v)
			}
		}
		if len(vs) > 0 {
			return
		}
		if !isDigits(pin) || len(pin) < 4 || len(pin) > 10 || sameRune(pin) || isDigitRun(pin) ||
			pin == strings.TrimSpace(ext) || p.commonPINs.contains(pin) {
			t.Fatalf("CheckPIN(%q, extension %q) accepted a PIN that breaks a rule", pin, ext)
		}
	})
}
