package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a flag value that also takes days: "60d", "36h", "90m".
type Duration struct{ D *time.Duration }

// String implements pflag.Value. Zero is "0", which pflag takes for no
// default (it does not know "0s" is zero for a type not its own), so a
// flag whose usage says its default shows it once.
func (d Duration) String() string {
	if d.D == nil || *d.D == 0 {
		return "0"
	}
	if *d.D%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *d.D/(24*time.Hour))
	}
	return d.D.String()
}

// Set implements pflag.Value.
func (d Duration) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return fmt.Errorf("%q: want a number of days such as 60d, or a duration such as 36h", s)
		}
		*d.D = time.Duration(days) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q: want a duration such as 60d, 36h or 90m", s)
	}
	*d.D = v
	return nil
}

// Type implements pflag.Value.
func (Duration) Type() string { return "duration" }
