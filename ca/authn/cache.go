package authn

import (
	"container/list"
	"sync"
	"time"
)

// cache is a bounded LRU of positive reviews keyed by token hash, each entry
// valid until its own deadline.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[[32]byte]*list.Element
	order   *list.List // front: most recently used
}

type cacheEntry struct {
	key      [32]byte
	result   Result
	deadline time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, entries: map[[32]byte]*list.Element{}, order: list.New()}
}

func (c *cache) get(key [32]byte, now time.Time) (Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return Result{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.deadline) {
		c.order.Remove(el)
		delete(c.entries, key)
		return Result{}, false
	}
	c.order.MoveToFront(el)
	return e.result, true
}

func (c *cache) put(key [32]byte, r Result, deadline time.Time) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		el.Value = &cacheEntry{key: key, result: r, deadline: deadline}
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).key)
	}
	c.entries[key] = c.order.PushFront(&cacheEntry{key: key, result: r, deadline: deadline})
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
