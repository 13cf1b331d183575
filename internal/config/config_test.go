package config_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/config"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	cfg, err := config.Load(env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResetTTL != 30*time.Minute || cfg.WelcomeTTL != 72*time.Hour || cfg.PasswordMinLength != 8 ||
		cfg.PasswordMaxLength != 64 || cfg.PINMinLength != 4 || cfg.PINMaxLength != 10 ||
		cfg.Disclosure != config.DisclosureExplicit || cfg.UnlockOnReset || !cfg.LoginAfterReset ||
		cfg.NATSURL != "" || cfg.LogFormat != "json" || cfg.MaxBodyBytes != 64<<10 {
		t.Fatalf("defaults = %+v", cfg)
	}
	if cfg.RateLimitPerAccount != (config.Rate{Count: 5, Window: 15 * time.Minute}) {
		t.Fatalf("rate = %v", cfg.RateLimitPerAccount)
	}
}

func TestLegacyAliasesAndPrecedence(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{
		"DELTACONTROL_RESET_TIMEOUT":        "45",
		"DELTACONTROL_RESET_UNLOCK_ACCOUNT": "YES",
		"APPSERVER_BASEURL":                 "http://netscaler_host:666/",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResetTTL != 45*time.Minute || !cfg.UnlockOnReset || cfg.PublicBaseURL.String() != "http://netscaler_host:666" {
		t.Fatalf("aliases: ttl %v unlock %v base %v", cfg.ResetTTL, cfg.UnlockOnReset, cfg.PublicBaseURL)
	}
	// The LATCHKEY_ variable wins over the alias, and a flag over both.
	cfg, err = config.Load(env(map[string]string{"DELTACONTROL_RESET_TIMEOUT": "45", "LATCHKEY_RESET_TTL": "10m"}), nil)
	if err != nil || cfg.ResetTTL != 10*time.Minute {
		t.Fatalf("LATCHKEY_RESET_TTL over alias: %v %v", cfg.ResetTTL, err)
	}
	cfg, err = config.Load(env(map[string]string{"LATCHKEY_RESET_TTL": "10m"}), map[string]string{"RESET_TTL": "20m"})
	if err != nil || cfg.ResetTTL != 20*time.Minute {
		t.Fatalf("flag over env: %v %v", cfg.ResetTTL, err)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LATCHKEY_RESET_TTL": "soon"}, "LATCHKEY_RESET_TTL"},
		{map[string]string{"LATCHKEY_DISCLOSURE": "loud"}, "LATCHKEY_DISCLOSURE"},
		{map[string]string{"LATCHKEY_PASSWORD_MIN_LENGTH": "ten"}, "LATCHKEY_PASSWORD_MIN_LENGTH"},
		{map[string]string{"LATCHKEY_PASSWORD_MIN_LENGTH": "70"}, "LATCHKEY_PASSWORD_MIN_LENGTH"},
		{map[string]string{"LATCHKEY_RATE_LIMIT_PER_ACCOUNT": "5 per hour"}, "LATCHKEY_RATE_LIMIT_PER_ACCOUNT"},
		{map[string]string{"LATCHKEY_PUBLIC_BASE_URL": "ftp://x"}, "LATCHKEY_PUBLIC_BASE_URL"},
		{map[string]string{"LATCHKEY_PUBLIC_BASE_URL": "/relative"}, "LATCHKEY_PUBLIC_BASE_URL"},
		{map[string]string{"LATCHKEY_SMTP_URL": "http://mail"}, "LATCHKEY_SMTP_URL"},
		{map[string]string{"LATCHKEY_MAIL_FROM_ADDRESS": "Latchkey <x@y>"}, "LATCHKEY_MAIL_FROM_ADDRESS"},
		{map[string]string{"LATCHKEY_HTTP_ADDR": "8080"}, "LATCHKEY_HTTP_ADDR"},
		{map[string]string{"LATCHKEY_ADMIN_TOKEN": "short"}, "LATCHKEY_ADMIN_TOKEN"},
		{map[string]string{"LATCHKEY_LOG_LEVEL": "verbose"}, "LATCHKEY_LOG_LEVEL"},
		{map[string]string{"DELTACONTROL_RESET_TIMEOUT": "thirty"}, "DELTACONTROL_RESET_TIMEOUT"},
		{map[string]string{"DELTACONTROL_RESET_UNLOCK_ACCOUNT": "maybe"}, "DELTACONTROL_RESET_UNLOCK_ACCOUNT"},
		{map[string]string{"LATCHKEY_PIN_MIN_LENGTH": "8", "LATCHKEY_PIN_MAX_LENGTH": "6"}, "LATCHKEY_PIN_MIN_LENGTH"},
		// Settings that contradict each other or what login accepts.
		{map[string]string{"LATCHKEY_PASSWORD_MAX_LENGTH": "1025"}, "LATCHKEY_PASSWORD_MAX_LENGTH"},
		{map[string]string{"LATCHKEY_PASSWORD_MAX_LENGTH": "1024", "LATCHKEY_MAX_BODY_BYTES": "16384"}, "LATCHKEY_MAX_BODY_BYTES"},
	}
	for _, c := range cases {
		_, err := config.Load(env(c.env), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v does not name %s", c.env, err, c.want)
		}
	}
}

func TestSecretsAreNotEchoedInErrors(t *testing.T) {
	_, err := config.Load(env(map[string]string{
		"LATCHKEY_SMTP_URL":    "http://user:hunter2secret@mail",
		"LATCHKEY_ADMIN_TOKEN": "tooshort",
	}), nil)
	if err == nil {
		t.Fatal("bad values accepted")
	}
	if strings.Contains(err.Error(), "hunter2secret") || strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("error leaks a secret: %v", err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]config.Rate{"5/15m": {5, 15 * time.Minute}, "100/1s": {100, time.Second}} {
		got, err := config.ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "5", "0/1m", "-1/1m", "5/0s", "x/1m", "5/1ms"} {
		if _, err := config.ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

// The README documents every setting; a new one must be added there too.
func TestEverySettingIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range config.Settings() {
		if !strings.Contains(string(readme), "`"+s.Env()+"`") {
			t.Errorf("README.md does not document %s", s.Env())
		}
	}
}

func TestBooleansAcceptTheUsualSpellings(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"true", true}, {"TRUE", true}, {"True", true}, {"tRuE", true}, {" yes ", true}, {"YES", true}, {"Yes", true},
		{"1", true}, {"t", true}, {"false", false}, {"FALSE", false}, {"no", false}, {"No", false}, {"NO", false},
		{"0", false}, {"F", false},
	} {
		got, err := config.ParseBool(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseBool(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "maybe", "2", "on", "y", "truee", "ja"} {
		if _, err := config.ParseBool(in); err == nil {
			t.Errorf("ParseBool(%q) accepted", in)
		}
	}
	// Every boolean setting, and the legacy alias, reads them so.
	cfg, err := config.Load(env(map[string]string{
		"LATCHKEY_LOGIN_AFTER_RESET":   "No",
		"LATCHKEY_LEGACY_CONFIRM_PAGE": "YES",
		"LATCHKEY_UNLOCK_ON_RESET":     "1",
	}), nil)
	if err != nil || cfg.LoginAfterReset || !cfg.LegacyConfirmPage || !cfg.UnlockOnReset {
		t.Fatalf("booleans from the environment: %+v, %v", cfg, err)
	}
	for in, want := range map[string]bool{"yes": true, "Yes": true, "no": false, "TRUE": true, "0": false} {
		cfg, err := config.Load(env(map[string]string{"DELTACONTROL_RESET_UNLOCK_ACCOUNT": in}), nil)
		if err != nil || cfg.UnlockOnReset != want {
			t.Errorf("DELTACONTROL_RESET_UNLOCK_ACCOUNT=%s: %v, %v", in, cfg.UnlockOnReset, err)
		}
	}
	cfg, err = config.Load(env(nil), map[string]string{"LOGIN_AFTER_RESET": "NO"})
	if err != nil || cfg.LoginAfterReset {
		t.Fatalf("--login-after-reset=NO: %v, %v", cfg.LoginAfterReset, err)
	}
	_, err = config.Load(env(map[string]string{"LATCHKEY_UNLOCK_ON_RESET": "sometimes"}), nil)
	if err == nil || !strings.Contains(err.Error(), "LATCHKEY_UNLOCK_ON_RESET") || !strings.Contains(err.Error(), "yes/no") {
		t.Fatalf("a bad boolean: %v", err)
	}
}

func TestIsDefault(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{"LATCHKEY_HTTP_ADDR": "127.0.0.1:9090"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.IsDefault("PUBLIC_BASE_URL") || cfg.IsDefault("HTTP_ADDR") {
		t.Fatalf("IsDefault: PUBLIC_BASE_URL %v, HTTP_ADDR %v", cfg.IsDefault("PUBLIC_BASE_URL"), cfg.IsDefault("HTTP_ADDR"))
	}
	for _, set := range []struct {
		env      map[string]string
		override map[string]string
	}{
		{map[string]string{"LATCHKEY_PUBLIC_BASE_URL": "http://127.0.0.1:8080"}, nil},
		{map[string]string{"APPSERVER_BASEURL": "http://portal.example"}, nil},
		{nil, map[string]string{"PUBLIC_BASE_URL": "http://portal.example"}},
	} {
		cfg, err := config.Load(env(set.env), set.override)
		if err != nil || cfg.IsDefault("PUBLIC_BASE_URL") {
			t.Errorf("%v %v: IsDefault = true (%v), though it was set", set.env, set.override, err)
		}
	}
}

func TestUnknownVariables(t *testing.T) {
	warnings, err := config.CheckNames([]string{
		"PATH=/usr/bin", "LATCHKEY_RESET_TTL=30m", "LATCHKEY_TEST_DATABASE_URL=x", "LATCHKEY_PG_PORT=1",
		"DELTACONTROL_RESET_TIMEOUT=5", "LATCHKEY_RESTE_TTL=10m", "LATCHKEY_DISCLOSRE=uniform",
		"LATCHKEY_PIN_MAN_LENGTH=5", "LATCHKEY_MAILDEV_WEB_PRT=1", "LATCHKEY_FEATURE_FROM_THE_FUTURE=on", "LATCHKEY_RESET_TIMEOUT=15m",
	})
	if err == nil {
		t.Fatal("typos accepted")
	}
	for _, want := range []string{
		"LATCHKEY_RESTE_TTL is not a setting: did you mean LATCHKEY_RESET_TTL?",
		"LATCHKEY_DISCLOSRE is not a setting: did you mean LATCHKEY_DISCLOSURE?",
		"did you mean LATCHKEY_PIN_MIN_LENGTH or LATCHKEY_PIN_MAX_LENGTH?",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "uniform") || strings.Contains(err.Error(), "10m") {
		t.Errorf("the error echoes a value: %v", err)
	}
	want := []string{
		"LATCHKEY_FEATURE_FROM_THE_FUTURE is not a setting of this version; it is ignored",
		"LATCHKEY_MAILDEV_WEB_PRT is not a setting of this version; it is ignored (did you mean LATCHKEY_MAILDEV_WEB_PORT?)",
		"LATCHKEY_RESET_TIMEOUT is not a setting of this version; it is ignored",
	}
	if strings.Join(warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings = %q, want %q", warnings, want)
	}
	warnings, err = config.CheckNames([]string{"LATCHKEY_FEATURE_FROM_THE_FUTURE=on"})
	if err != nil || len(warnings) != 1 {
		t.Fatalf("a far unknown name alone: %v %v", warnings, err)
	}
	var all []string
	for _, s := range config.Settings() {
		all = append(all, s.Env()+"=x")
	}
	for _, v := range config.ToolVariables() {
		all = append(all, v+"=x")
	}
	if warnings, err := config.CheckNames(all); err != nil || len(warnings) != 0 {
		t.Fatalf("known names reported: %v %v", warnings, err)
	}
}

// The scripts, compose file and tests may only use LATCHKEY_ variables that
// are settings or known tool variables, or start-up would report them.
func TestToolVariablesAreComplete(t *testing.T) {
	known := map[string]bool{}
	for _, s := range config.Settings() {
		known[s.Env()] = true
	}
	for _, v := range config.ToolVariables() {
		known[v] = true
	}
	// Not variables: the stream that keeps max-deliveries advisories, and
	// the typo that the help and the README show as an example.
	known["LATCHKEY_ADVISORIES"] = true
	known["LATCHKEY_RESTE_TTL"] = true
	name := regexp.MustCompile(`LATCHKEY_[A-Z0-9_]*[A-Z0-9]`)
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".local" || d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "bench-out") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".sh") || strings.HasSuffix(path, ".yaml") ||
			strings.HasSuffix(path, "Makefile") || strings.HasSuffix(path, "Dockerfile") || strings.HasSuffix(path, ".md")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range name.FindAllString(string(b), -1) {
			if !known[m] && !strings.HasSuffix(path, "_test.go") {
				t.Errorf("%s uses %s, which is neither a setting nor in config.ToolVariables", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSettingsOf(t *testing.T) {
	names := func(parts config.Part) string {
		var out []string
		for _, s := range config.SettingsOf(parts) {
			out = append(out, s.Name)
		}
		return strings.Join(out, " ")
	}
	if got := names(config.PartLog | config.PartDatabase | config.PartPool); got != "DATABASE_URL DB_MAX_CONNS LOG_LEVEL LOG_FORMAT" {
		t.Errorf("migrate's settings = %s", got)
	}
	var every config.Part
	for _, s := range config.Settings() {
		if s.Used == 0 || s.Type == "" {
			t.Errorf("%s has no part or no type", s.Name)
		}
		every |= s.Used
		if strings.Contains(s.Type, " ") {
			t.Errorf("%s: type %q has a space, which would garble the help", s.Name, s.Type)
		}
	}
	if got := len(config.SettingsOf(every)); got != len(config.Settings()) {
		t.Errorf("SettingsOf(every part) = %d settings, want %d", got, len(config.Settings()))
	}
}
