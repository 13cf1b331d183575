package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testkit"
)

// TestInTxRunsADeadlockVictimAgain: two transactions lock two rows in
// opposite orders, so PostgreSQL aborts one of them. InTx runs the victim
// again, and both succeed, where one used to fail with SQLSTATE 40P01.
func TestInTxRunsADeadlockVictimAgain(t *testing.T) {
	ctx := context.Background()
	db := testkit.NewDB(t)
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE deadlock_probe (id int PRIMARY KEY, n int NOT NULL);
		INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)`); err != nil {
		t.Fatal(err)
	}
	s := store.New(db.Pool)
	var runs atomic.Int32
	var bothHoldOne sync.WaitGroup
	bothHoldOne.Add(2)
	first := [2]sync.Once{}
	lock := func(tx pgx.Tx, id int) error {
		_, err := tx.Exec(ctx, "UPDATE deadlock_probe SET n = n + 1 WHERE id = $1", id)
		return err
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, order := range [2][2]int{{1, 2}, {2, 1}} {
		wg.Go(func() {
			errs[i] = s.InTx(ctx, func(tx pgx.Tx) error {
				runs.Add(1)
				if err := lock(tx, order[0]); err != nil {
					return err
				}
				first[i].Do(func() { bothHoldOne.Done(); bothHoldOne.Wait() })
				return lock(tx, order[1])
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("transaction %d: %v", i, err)
		}
	}
	if n := runs.Load(); n != 3 {
		t.Errorf("%d runs, want 3 (the deadlock victim once more)", n)
	}
	var total int
	if err := db.Pool.QueryRow(ctx, "SELECT sum(n) FROM deadlock_probe").Scan(&total); err != nil || total != 4 {
		t.Fatalf("rows updated %d times (%v), want 4: each transaction's effect once", total, err)
	}
}
