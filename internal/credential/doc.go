// Package credential holds the secret primitives of Latchkey: the argon2id
// hasher for passwords and voicemail PINs (SPEC §3), the password and PIN
// policy (SPEC §4), and the random tokens used in links.
//
// Nothing here touches storage or the network; callers persist the PHC
// strings and token hashes this package produces.
package credential

import "errors"

// ErrInvalidConfig is wrapped by NewHasher and NewPolicy when a configuration
// value is out of range, so start-up can report it.
var ErrInvalidConfig = errors.New("credential: invalid configuration")
