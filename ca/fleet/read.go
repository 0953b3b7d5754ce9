package fleet

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Read returns every replica's Report from the fleet ConfigMaps (those
// labelled Label): each manifest with the proxies of the shards it names.
// A shard that is missing, stale (not the content its manifest names),
// behind (not true for the gate within StaleAfter of now), over the size
// cap or unreadable becomes a stand-in (Proxy.Unread) that no rotation
// stage passes; its proxies are not trusted. A manifest without shards
// (from an older meshid-ca) is read as it is; one that does not parse is
// skipped, as a replica that never published.
//
// This is the one reader of the fleet view: rotate-anchor, meshid check
// and the dashboard go through it.
func Read(cms []corev1.ConfigMap, now time.Time) []Report {
	byName := make(map[string]*corev1.ConfigMap, len(cms))
	for i := range cms {
		byName[cms[i].Name] = &cms[i]
	}
	var out []Report
	for i := range cms {
		cm := &cms[i]
		data, ok := cm.Data[ConfigMapKey]
		if !ok {
			continue
		}
		var r Report
		if json.Unmarshal([]byte(data), &r) != nil {
			continue
		}
		for k, ref := range r.Shards {
			name := ShardName(cm.Name, k)
			ps, why := readShard(byName[name], r, k, ref, now)
			if why != "" {
				ps = []Proxy{{Instance: name, LastSeen: r.Updated, Unread: fmt.Sprintf(
					"shard %s of CA replica %s %s; its %d proxies are not counted until it is read whole", name, r.Replica, why, ref.Proxies)}}
			}
			r.Proxies = append(r.Proxies, ps...)
		}
		sortProxies(r.Proxies)
		out = append(out, r)
	}
	return out
}

// readShard returns the proxies of shard k of r, or why it cannot vouch
// for them.
func readShard(cm *corev1.ConfigMap, r Report, k int, ref ShardRef, now time.Time) ([]Proxy, string) {
	at := ref.At
	if at.IsZero() {
		at = r.Updated
	}
	switch {
	case ref.Error != "":
		return nil, "is not written: " + ref.Error
	case ref.SHA256 == "" && ref.Proxies == 0:
		return nil, "" // empty: nothing to read
	case cm == nil:
		return nil, "is missing (deleted, or not written yet)"
	}
	data := cm.Data[ShardKey]
	if got := shardSHA256([]byte(data)); got != ref.SHA256 {
		return nil, fmt.Sprintf("is stale: it holds %s, the manifest names %s (written since, or by another writer)", got, ref.SHA256)
	}
	var s shard
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		return nil, "does not parse: " + strings.TrimPrefix(err.Error(), "json: ")
	}
	if s.Replica != r.Replica || s.Index != k || len(s.Proxies) != ref.Proxies {
		return nil, fmt.Sprintf("is not the one named: it says replica %q, shard %d, %d proxies; the manifest says %q, %d, %d", s.Replica, s.Index, len(s.Proxies), r.Replica, k, ref.Proxies)
	}
	if age := now.Sub(at); age > StaleAfter {
		return nil, fmt.Sprintf("is behind: last true %s ago (the replica could not write it since; see meshid-ca --fleet-report-bytes-per-minute and its log)", age.Round(time.Second))
	}
	ps, ok := s.decode(at)
	if !ok {
		return nil, "does not parse: a SHA-256 index is out of its table"
	}
	return ps, ""
}
