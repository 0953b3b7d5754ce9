package main

import (
	"encoding/json"
	"io"
)

// writeJSON writes v as indented JSON, for -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
