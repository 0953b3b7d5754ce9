// Package output owns how the meshid CLI writes what it produces: JSON for
// -o json (one document, or one line per event), and files (keys,
// certificates) that are created at their mode and never replace one that
// exists.
//
// It imports nothing from meshid.
package output
