// Package templates holds Latchkey's built-in templates, compiled into the
// binary so a deployment needs no template files on disk (SPEC §1, §5.5).
//
// Email templates live under email/<name>/<locale>/ as three parts:
// subject.txt (one line), text.txt (the text/plain part) and html.html (the
// text/html part). Names are those of SPEC §5.7 (password_reset, ...);
// locales are canonical BCP 47 tags (en, fr, pt-BR, ...). Every locale must
// have every template: package mailtmpl parses the tree once at start-up,
// refuses an incomplete or malformed one, and its tests fail on it.
package templates

import "embed"

// Email is the tree of built-in email templates, rooted at "email"
// (email/<name>/<locale>/{subject.txt,text.txt,html.html}). Use
// mailtmpl.Builtin to parse it.
//
//go:embed email
var Email embed.FS
