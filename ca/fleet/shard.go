package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash/fnv"
	"strconv"
	"time"
)

// A replica publishes its proxies in shards: ConfigMaps of a bounded size
// that its manifest (the ConfigMap named ConfigMapPrefix+REPLICA, key
// ConfigMapKey) names with their content hashes, so that no object grows
// with the fleet and a shard that is missing or stale is seen.
const (
	// ShardKey holds a shard as JSON.
	ShardKey = "shard.json"
	// MaxShardBytes bounds a shard's ShardKey; a shard over it is never
	// written (its ShardRef says so).
	MaxShardBytes = 256 << 10
	// ShardProxies is the most proxies a replica puts in one shard on
	// average: past it, the shard count doubles.
	ShardProxies = 256
)

// ShardRef is what a manifest says of one shard; the shard's name is
// ShardName(manifest, index).
type ShardRef struct {
	// SHA256 is the first 16 hex digits of the SHA-256 of the shard's
	// ShardKey; empty when it holds no proxy (and is not read).
	SHA256 string `json:"sha256,omitempty"`
	// Proxies is how many proxies it holds.
	Proxies int `json:"proxies"`
	// At is when it was last true for the gate (the proxies, their
	// bundles, leaf issuers and anchors, who is silent); zero means the
	// manifest's Updated.
	At time.Time `json:"at,omitzero"`
	// Error says why its proxies are not written (over MaxShardBytes, or
	// none of it written yet); the reader holds rotation back while it is
	// set.
	Error string `json:"error,omitempty"`
}

// ShardName names shard i of the replica whose manifest is named manifest.
func ShardName(manifest string, i int) string {
	suffix := "-s" + strconv.Itoa(i)
	if len(manifest)+len(suffix) > 253 {
		manifest = manifest[:253-len(suffix)]
	}
	return manifest + suffix
}

// shardOf is the shard of k among of (a power of two).
func shardOf(k Key, of int) int {
	h := fnv.New64a()
	h.Write([]byte(k.ID))
	h.Write([]byte{0})
	h.Write([]byte(k.Instance))
	return int(h.Sum64() & uint64(of-1))
}

// shardSHA256 is what a ShardRef names of data.
func shardSHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// shard is a shard's ShardKey. Its proxies' SHA-256s are indexes (from 1;
// 0 is none) into SHA256: a fleet shares a few bundles and issuers.
type shard struct {
	Replica string   `json:"replica"`
	Index   int      `json:"index"`
	Of      int      `json:"of"`
	SHA256  []string `json:"sha256"`
	Proxies []entry  `json:"proxies"`
}

type entry struct {
	ID       string `json:"id"`
	Instance string `json:"instance"`
	Bundle   int    `json:"bundle,omitempty"`
	Issuer   int    `json:"issuer,omitempty"`
	Anchor   int    `json:"anchor,omitempty"`
	Serial   string `json:"serial,omitempty"`
	// NotAfter is the leaf's, as a Unix time.
	NotAfter  int64    `json:"not_after,omitempty"`
	Heartbeat Duration `json:"heartbeat"`
	// LastSeen is set only for a proxy that was silent when written; the
	// others were heard from within three heartbeats of the ShardRef's At.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// encodeShard writes ps (already as published: LastSeen only when
// silent) as shard index of of.
func encodeShard(replica string, index, of int, ps []Proxy) ([]byte, error) {
	s := shard{Replica: replica, Index: index, Of: of, SHA256: []string{}, Proxies: make([]entry, 0, len(ps))}
	table := map[string]int{}
	ref := func(sha string) int {
		if sha == "" {
			return 0
		}
		if i, ok := table[sha]; ok {
			return i
		}
		s.SHA256 = append(s.SHA256, sha)
		table[sha] = len(s.SHA256)
		return len(s.SHA256)
	}
	for _, p := range ps {
		e := entry{ID: p.ID, Instance: p.Instance, Bundle: ref(p.BundleSHA256), Issuer: ref(p.LeafIssuerSHA256), Anchor: ref(p.LeafAnchorSHA256),
			Serial: p.LeafSerial, Heartbeat: p.Heartbeat, LastSeen: p.LastSeen}
		if !p.LeafNotAfter.IsZero() {
			e.NotAfter = p.LeafNotAfter.Unix()
		}
		s.Proxies = append(s.Proxies, e)
	}
	return json.Marshal(s)
}

// decode returns s's proxies; those without a LastSeen were heard from at
// at. It reports false if an index is out of the table.
func (s shard) decode(at time.Time) ([]Proxy, bool) {
	sha := func(i int) (string, bool) {
		if i == 0 {
			return "", true
		}
		if i < 0 || i > len(s.SHA256) {
			return "", false
		}
		return s.SHA256[i-1], true
	}
	out := make([]Proxy, 0, len(s.Proxies))
	for _, e := range s.Proxies {
		p := Proxy{ID: e.ID, Instance: e.Instance, LeafSerial: e.Serial, Heartbeat: e.Heartbeat, LastSeen: e.LastSeen}
		var ok [3]bool
		p.BundleSHA256, ok[0] = sha(e.Bundle)
		p.LeafIssuerSHA256, ok[1] = sha(e.Issuer)
		p.LeafAnchorSHA256, ok[2] = sha(e.Anchor)
		if !ok[0] || !ok[1] || !ok[2] {
			return nil, false
		}
		if e.NotAfter != 0 {
			p.LeafNotAfter = time.Unix(e.NotAfter, 0).UTC()
		}
		if p.LastSeen.IsZero() {
			p.LastSeen = at
		}
		out = append(out, p)
	}
	return out, true
}

// gateSum hashes what the gate reads of ps: who they are, their bundle,
// leaf issuer and anchor, and who is silent (since when); not the leaf's
// serial and NotAfter, which a renewal changes.
func gateSum(ps []Proxy) string {
	h := sha256.New()
	for _, p := range ps {
		for _, f := range []string{p.ID, p.Instance, p.BundleSHA256, p.LeafIssuerSHA256, p.LeafAnchorSHA256, p.LastSeen.UTC().Format(time.RFC3339Nano), time.Duration(p.Heartbeat).String()} {
			h.Write([]byte(f))
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
