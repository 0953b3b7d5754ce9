package limit

import (
	"net"
	"testing"
	"time"
)

func TestCounter(t *testing.T) {
	c := NewCounter(2)
	r1, ok1 := c.Acquire("a")
	_, ok2 := c.Acquire("a")
	_, ok3 := c.Acquire("a")
	_, okB := c.Acquire("b")
	if !ok1 || !ok2 || ok3 || !okB {
		t.Fatalf("acquire a, a, a, b = %v %v %v %v; want true true false true", ok1, ok2, ok3, okB)
	}
	r1()
	r1() // twice is harmless: it must not free a second slot
	if _, ok := c.Acquire("a"); !ok {
		t.Fatal("a slot released but not given back")
	}
	if _, ok := c.Acquire("a"); ok {
		t.Fatal("a double release freed two slots")
	}
	if _, ok := NewCounter(0).Acquire("a"); !ok {
		t.Fatal("max 0 must mean no limit")
	}
}

func TestListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan string, 10)
	l := Listener(inner, 2, func(caller string) { refused <- caller })
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	third := dial()
	if got := <-refused; got != "127.0.0.1" {
		t.Fatalf("refused caller %q, want 127.0.0.1", got)
	}
	// The third is closed by the server: a read ends at once.
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection over the limit was not closed")
	}
	// Closing one accepted connection frees a slot.
	(<-accepted).Close()
	<-accepted
	dial()
	select {
	case <-accepted:
	case caller := <-refused:
		t.Fatalf("refused %s after a slot was freed", caller)
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after a slot was freed")
	}
}
