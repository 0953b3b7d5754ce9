package main

import (
	"net"
	"testing"
)

func TestSourceIP(t *testing.T) {
	seen := map[string]int{}
	for _, i := range []int{0, 1, 253, 254, 255, 254*254 - 1, 254 * 254, 50000, maxProxies - 1} {
		ip := sourceIP(i).To4()
		if ip == nil || ip[0] != 127 {
			t.Fatalf("sourceIP(%d) = %v, not a loopback IPv4 address", i, ip)
		}
		if ip[1] < 10 || ip[2] == 0 || ip[2] == 255 || ip[3] == 0 || ip[3] == 255 {
			t.Errorf("sourceIP(%d) = %v: want 127.10-255.1-254.1-254", i, ip)
		}
		if j, dup := seen[ip.String()]; dup {
			t.Errorf("sourceIP(%d) = sourceIP(%d) = %v", i, j, ip)
		}
		seen[ip.String()] = i
	}
	if got, want := sourceIP(0), net.IPv4(127, 10, 1, 1); !got.Equal(want) {
		t.Errorf("sourceIP(0) = %v, want %v", got, want)
	}
	if got, want := sourceIP(maxProxies-1), net.IPv4(127, 255, 254, 254); !got.Equal(want) {
		t.Errorf("sourceIP(last) = %v, want %v", got, want)
	}
}

func TestSourceIPsAreDistinct(t *testing.T) {
	seen := make(map[[4]byte]bool, 60000)
	for i := range 60000 {
		var k [4]byte
		copy(k[:], sourceIP(i).To4())
		if seen[k] {
			t.Fatalf("sourceIP(%d) = %v was handed out before", i, sourceIP(i))
		}
		seen[k] = true
	}
}

func TestOptionsValidate(t *testing.T) {
	good := options{bin: t.TempDir(), proxies: 1000, replicas: 4, serviceAccounts: 300, duration: 60e9, deadline: 600e9, heartbeat: 10e9}
	if err := good.validate(); err == nil {
		t.Error("validate accepted a --bin without meshid-ca")
	}
	for name, mutate := range map[string]func(*options){
		"no proxies":              func(o *options) { o.proxies = 0 },
		"more than the addresses": func(o *options) { o.proxies = maxProxies + 1 },
		"no replica":              func(o *options) { o.replicas = 0 },
		"duration past deadline":  func(o *options) { o.duration = o.deadline },
		"heartbeat too short":     func(o *options) { o.heartbeat = 1e6 },
	} {
		t.Run(name, func(t *testing.T) {
			o := good
			mutate(&o)
			if err := o.validate(); err == nil {
				t.Errorf("validate accepted %+v", o)
			}
		})
	}
}
