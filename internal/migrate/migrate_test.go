package migrate_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/testkit"
)

func TestUpFromEmptyThenNothingPending(t *testing.T) {
	db := testkit.EmptyDB(t)
	ctx := context.Background()
	if err := migrate.Check(ctx, db.Pool); !errors.Is(err, migrate.ErrSchemaOutdated) {
		t.Fatalf("Check on an empty database = %v, want ErrSchemaOutdated", err)
	}
	res, err := migrate.Up(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 0 || res.Applied == 0 || res.To < 1 {
		t.Fatalf("first Up = %+v", res)
	}
	for _, table := range []string{"domains", "users", "tokens", "sessions", "audit_events", "mail_deliveries",
		"dead_letters", "processed_events", "rollout_schedules", "template_overrides", "mail_settings", "admin_keys"} {
		var exists bool
		if err := db.Pool.QueryRow(ctx, "SELECT to_regclass('public.'||$1) IS NOT NULL", table).Scan(&exists); err != nil || !exists {
			t.Errorf("table %s missing after migrate (err %v)", table, err)
		}
	}
	if err := migrate.Check(ctx, db.Pool); err != nil {
		t.Fatalf("Check after Up = %v", err)
	}
	again, err := migrate.Up(ctx, db.Pool)
	if err != nil || again.Applied != 0 || again.To != res.To {
		t.Fatalf("second Up = %+v, %v; want nothing applied", again, err)
	}
}

// Every process may run migrations at start-up; the advisory lock makes
// concurrent runs apply each migration once.
func TestConcurrentUpIsSerialised(t *testing.T) {
	db := testkit.EmptyDB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]migrate.Result, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = migrate.Up(ctx, db.Pool)
		}()
	}
	wg.Wait()
	applied := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Up %d: %v", i, err)
		}
		applied += results[i].Applied
	}
	var versions int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if applied != versions {
		t.Fatalf("migrations applied %d times in all, %d recorded", applied, versions)
	}
}

// The down migrations must work too, or a rollback in production fails.
func TestDownAndUpAgain(t *testing.T) {
	db := testkit.EmptyDB(t)
	ctx := context.Background()
	if _, err := migrate.Up(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := migrate.DownTo(ctx, db.Pool, 0); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := db.Pool.QueryRow(ctx, "SELECT to_regclass('public.users') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Fatalf("users table still there after down (err %v)", err)
	}
	if _, err := migrate.Up(ctx, db.Pool); err != nil {
		t.Fatalf("up after down: %v", err)
	}
}
