package mailer_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its Sender and server; a goroutine left behind is a
// leak in Close or in the idle reaper.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
