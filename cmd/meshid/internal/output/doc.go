// Package output owns how the meshid CLI writes what it produces: JSON for
// -o json, and files (keys, certificates) replaced atomically with their
// mode set before any byte is written.
//
// It imports nothing from meshid.
package output
