package fleet

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"k8s.io/utils/clock"
)

// Defaults for WriterConfig.
const (
	// DefaultBytesPerMinute bounds the shard bytes one replica writes a
	// minute (a burst of one minute's worth).
	DefaultBytesPerMinute = 2 << 20
	// DefaultDisplayLag is how long a shard whose only change is a leaf's
	// serial or NotAfter (a renewal) may wait to be written: the gate does
	// not read them. A shard is written again at least this often even
	// when unchanged, so one deleted or overwritten by hand comes back.
	DefaultDisplayLag = 30 * time.Minute
	// DefaultSettle is how long a written shard whose proxies keep
	// changing (a rollout reaching them over several ticks) waits for a
	// tick without change before it is written anyway: it is written
	// once, not at every tick.
	DefaultSettle = 10 * time.Second
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Name is the manifest's ConfigMap name; the shards are
	// ShardName(Name, i). Required.
	Name string
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// BytesPerMinute bounds the shard bytes written a minute; 0 means
	// DefaultBytesPerMinute. It must be at least MaxShardBytes.
	BytesPerMinute int
	// DisplayLag: 0 means DefaultDisplayLag.
	DisplayLag time.Duration
	// Settle: 0 means DefaultSettle.
	Settle time.Duration
}

// Writer decides what a replica writes of its Report: the shards that
// changed, as the byte budget allows, then the manifest. Each round is
// Next, Written for each shard written, then Manifest. It is not safe for
// concurrent use.
type Writer struct {
	cfg    WriterConfig
	of     int
	grow   bool // a shard was over MaxShardBytes: double at the next round
	shards []shardState
	tokens float64
	filled time.Time
	now    time.Time // of the last Next
	report Report
}

// shardState is what was written of one shard, and what is pending.
type shardState struct {
	sha     string    // of the ShardKey written; "" when empty
	gate    string    // gateSum of what was written
	proxies int       // in what was written
	written time.Time // when written
	trueAt  time.Time // when what was written was last true for the gate
	due     time.Time // when the gate first differed from what was written; zero: it does not
	last    string    // sha of the content at the last Next
	err     string    // why the current content is not written
}

// Object is one shard to write: Data under ShardKey of ConfigMap Name.
type Object struct {
	Name string
	Data []byte

	index   int
	gate    string
	proxies int
}

// NewWriter returns a Writer that has written nothing.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("fleet: a writer needs the manifest's name")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.BytesPerMinute == 0 {
		cfg.BytesPerMinute = DefaultBytesPerMinute
	}
	if cfg.BytesPerMinute < MaxShardBytes {
		return nil, fmt.Errorf("fleet: %d bytes per minute is less than one shard may be (%d); raise meshid-ca --fleet-report-bytes-per-minute", cfg.BytesPerMinute, MaxShardBytes)
	}
	if cfg.DisplayLag == 0 {
		cfg.DisplayLag = DefaultDisplayLag
	}
	if cfg.Settle == 0 {
		cfg.Settle = DefaultSettle
	}
	return &Writer{cfg: cfg, of: 1, shards: make([]shardState, 1), tokens: float64(cfg.BytesPerMinute), filled: cfg.Clock.Now()}, nil
}

// Next takes r (its Proxies as Registry.Live returns them) and returns the
// shards to write now: those the gate would read differently (once they
// have not changed for a round, or have waited Settle), oldest change
// first, and those whose leaf serials or NotAfters are older than
// DisplayLag, as far as the byte budget allows.
func (w *Writer) Next(r Report) []Object {
	now := w.cfg.Clock.Now()
	w.tokens = min(float64(w.cfg.BytesPerMinute), w.tokens+now.Sub(w.filled).Minutes()*float64(w.cfg.BytesPerMinute))
	w.filled, w.now = now, now
	r.Updated = now

	var standIns, proxies []Proxy
	for _, p := range r.Proxies {
		switch {
		case p.OverCap:
			standIns = append(standIns, p)
		case !p.Silent(now):
			p.LastSeen = time.Time{} // heard from at the manifest's time: a heartbeat changes nothing
			fallthrough
		default:
			proxies = append(proxies, p)
		}
	}
	r.Proxies = standIns
	w.report = r

	of := w.of
	for len(proxies) > of*ShardProxies || w.grow {
		of *= 2
		w.grow = false
	}
	if of != w.of {
		w.of = of
		w.shards = append(w.shards, make([]shardState, of-len(w.shards))...)
	}
	parts := make([][]Proxy, of)
	for _, p := range proxies {
		i := shardOf(p.Key(), of)
		parts[i] = append(parts[i], p)
	}

	type candidate struct {
		o     Object
		gate  bool
		since time.Time
	}
	var todo []candidate
	for i, ps := range parts {
		st := &w.shards[i]
		gate := gateSum(ps)
		if len(ps) == 0 {
			*st = shardState{gate: gate, trueAt: now, written: now} // nothing to read, nothing to write
			continue
		}
		data, err := encodeShard(r.Replica, i, of, ps)
		if err != nil {
			st.err = err.Error()
			continue
		}
		sha := shardSHA256(data)
		still := sha == st.last // no change since the last round
		st.last = sha
		c := candidate{o: Object{Name: ShardName(w.cfg.Name, i), Data: data, index: i, gate: gate, proxies: len(ps)}, since: st.written}
		if sha == st.sha {
			st.trueAt, st.due, st.err = now, time.Time{}, ""
			if now.Sub(st.written) >= w.cfg.DisplayLag {
				todo = append(todo, c) // unchanged, written again: a shard deleted or overwritten by hand comes back
			}
			continue
		}
		if len(data) > MaxShardBytes {
			st.err = fmt.Sprintf("%d proxies are %d bytes, over the %d a shard may be; the shard count doubles", len(ps), len(data), MaxShardBytes)
			w.grow = true
			continue
		}
		st.err = ""
		switch {
		case gate != st.gate || st.sha == "":
			if st.due.IsZero() {
				st.due = now
			}
			c.gate, c.since = true, st.due
			if st.sha == "" {
				// Nothing of it is written: the reader must not take it
				// for empty. Written clears it.
				st.err = "waiting for the byte budget (meshid-ca --fleet-report-bytes-per-minute)"
			} else if !still && now.Sub(st.due) < w.cfg.Settle {
				continue // still changing: written once it settles
			}
		case now.Sub(st.written) >= w.cfg.DisplayLag:
			st.trueAt, st.due = now, time.Time{}
		default:
			st.trueAt, st.due = now, time.Time{} // what is written still holds for the gate
			continue
		}
		todo = append(todo, c)
	}
	slices.SortStableFunc(todo, func(a, b candidate) int {
		if a.gate != b.gate {
			if a.gate {
				return -1
			}
			return 1
		}
		return a.since.Compare(b.since)
	})
	var out []Object
	for _, c := range todo {
		if float64(len(c.o.Data)) > w.tokens {
			break // oldest first: a later, smaller shard does not overtake
		}
		w.tokens -= float64(len(c.o.Data))
		out = append(out, c.o)
	}
	return out
}

// Written records that o, from the last Next, was written.
func (w *Writer) Written(o Object) {
	if o.index >= len(w.shards) {
		return
	}
	sha := shardSHA256(o.Data)
	w.shards[o.index] = shardState{sha: sha, gate: o.gate, proxies: o.proxies, written: w.now, trueAt: w.now, last: sha}
}

// Manifest returns the manifest for the Report of the last Next: the
// Report with the stand-ins as its Proxies and a ShardRef per shard.
func (w *Writer) Manifest() ([]byte, error) {
	r := w.report
	r.Shards = make([]ShardRef, len(w.shards))
	for i, st := range w.shards {
		ref := ShardRef{SHA256: st.sha, Proxies: st.proxies, Error: st.err}
		if !st.trueAt.Equal(r.Updated) {
			ref.At = st.trueAt
		}
		r.Shards[i] = ref
	}
	return json.Marshal(r)
}

// Shards returns how many shards the Writer keeps.
func (w *Writer) Shards() int { return w.of }
