// Package schema holds the database migrations. They are the single source of
// truth for the schema: goose applies them, and sqlc reads them to type the
// queries in queries/.
package schema

import "embed"

// Migrations are the goose migration files, embedded so the binary can
// migrate a database without the source tree.
//
//go:embed *.sql
var Migrations embed.FS
