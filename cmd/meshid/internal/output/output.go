package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// JSON writes v as indented JSON, for -o json.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// JSONLine writes v as one line of JSON, for a stream of -o json events.
func JSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// ErrExists is returned for a file that is already there: a key file is
// never replaced (it may be the only copy of a key still in use).
var ErrExists = errors.New("already exists")

// CheckNew says whether CreateFile(p) can work: the directory exists and p
// does not. flag names the flag p came from, for the message. Commands call
// it before they generate anything, so a bad path costs nothing.
func CheckNew(flag, p string) error {
	dir := filepath.Dir(p)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: the directory %s does not exist; create it first (mkdir -p %s)", flag, p, dir, dir)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, p, err)
	case !fi.IsDir():
		return fmt.Errorf("%s %s: %s is not a directory", flag, p, dir)
	}
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("%s %s: %w; it is never overwritten (it may hold a key still in use): move it away or choose another file", flag, p, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s: %w", flag, p, err)
	}
	return nil
}

// CreateFile writes data to p, which must not exist (O_EXCL), created at
// mode, so a key is never readable by others and never replaces another.
// A failed write removes what it created.
func CreateFile(p string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("write %s: %w; it is never overwritten", p, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	err = f.Chmod(mode) // the umask may have narrowed it; never widened past mode
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}
