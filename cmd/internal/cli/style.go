package cli

import (
	"io"
	"os"

	"golang.org/x/term"
)

// Style marks results for a reader: on a terminal, "✔ text" in green and
// "× text" in red; piped, or with $NO_COLOR set (https://no-color.org), the
// text alone, so scripts and logs see plain words.
type Style struct{ marks bool }

// StyleFor is the style for output written to w: marks only when w is a
// terminal and $NO_COLOR is unset or empty.
func StyleFor(w io.Writer) Style {
	f, ok := w.(*os.File)
	return NewStyle(ok && term.IsTerminal(int(f.Fd())), os.Getenv("NO_COLOR"))
}

// NewStyle is the style for a terminal (or not) given $NO_COLOR's value.
func NewStyle(terminal bool, noColor string) Style {
	return Style{marks: terminal && noColor == ""}
}

// Marks reports whether the style adds marks and colour.
func (s Style) Marks() bool { return s.marks }

// Good marks text as a result that is fine.
func (s Style) Good(text string) string {
	if !s.marks {
		return text
	}
	return "\x1b[32m✔ " + text + "\x1b[0m"
}

// Bad marks text as a problem.
func (s Style) Bad(text string) string {
	if !s.marks {
		return text
	}
	return "\x1b[31m× " + text + "\x1b[0m"
}

// Mark is Good(text) when ok, else Bad(text).
func (s Style) Mark(ok bool, text string) string {
	if ok {
		return s.Good(text)
	}
	return s.Bad(text)
}
