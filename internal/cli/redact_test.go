package cli

import "testing"

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://postgres@127.0.0.1:55432/latchkey?sslmode=disable": "postgres://postgres@127.0.0.1:55432/latchkey?sslmode=disable",
		"postgres://app:hunter2@db:5432/latchkey":                      "postgres://app:xxxxx@db:5432/latchkey",
		"smtps://mailer:hunter2@relay.example:465":                     "smtps://mailer:xxxxx@relay.example:465",
		"nats://s3cr3t-token@n1:4222,nats://u:p@n2:4222":               "nats://redacted@n1:4222,nats://redacted@n2:4222",
		"nats://127.0.0.1:4222":                                        "nats://127.0.0.1:4222",
		"host=db user=app password=hunter2":                            "(set)",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
