package identity_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

func TestFromUsername(t *testing.T) {
	tests := []struct {
		name     string
		username string
		want     string
		wantErr  error
	}{
		{name: "service account", username: "system:serviceaccount:default:web", want: "spiffe://cluster.local/ns/default/sa/web"},
		{name: "dotted sa name", username: "system:serviceaccount:shop:api.v2", want: "spiffe://cluster.local/ns/shop/sa/api.v2"},
		{name: "user", username: "alice", wantErr: identity.ErrNotServiceAccount},
		{name: "node", username: "system:node:n1", wantErr: identity.ErrNotServiceAccount},
		{name: "missing name", username: "system:serviceaccount:default:", wantErr: identity.ErrNotServiceAccount},
		{name: "extra colon", username: "system:serviceaccount:default:a:b", wantErr: identity.ErrNotServiceAccount},
		{name: "path traversal", username: "system:serviceaccount:..:web", wantErr: identity.ErrNotServiceAccount},
		{name: "slash in name", username: "system:serviceaccount:default:a/b", wantErr: identity.ErrNotServiceAccount},
		{name: "upper case namespace", username: "system:serviceaccount:Default:web", wantErr: identity.ErrNotServiceAccount},
		{name: "percent", username: "system:serviceaccount:default:%2e%2e", wantErr: identity.ErrNotServiceAccount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa, err := identity.FromUsername(tt.username)
			var id spiffeid.ID
			if err == nil {
				id, err = sa.ID(td)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want error %v", id, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tt.want {
				t.Fatalf("got %s, want %s", id, tt.want)
			}
			back, err := identity.FromID(id)
			if err != nil || back != sa {
				t.Fatalf("FromID(%s) = %v, %v; want %v", id, back, err, sa)
			}
		})
	}
}

func TestFromIDRefusesOtherPaths(t *testing.T) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default",
		"spiffe://cluster.local/ns/default/sa/web/extra",
		"spiffe://cluster.local/namespace/default/sa/web",
		"spiffe://cluster.local",
	} {
		if _, err := identity.FromID(spiffeid.RequireFromString(s)); !errors.Is(err, identity.ErrNotServiceAccount) {
			t.Errorf("FromID(%s) = %v, want ErrNotServiceAccount", s, err)
		}
	}
}

func FuzzFromUsername(f *testing.F) {
	f.Add("system:serviceaccount:default:web")
	f.Add("system:serviceaccount:a:b:c")
	f.Add("system:serviceaccount:../sa/x")
	f.Fuzz(func(t *testing.T, username string) {
		sa, err := identity.FromUsername(username)
		if err != nil {
			return
		}
		id, err := sa.ID(td)
		if err != nil {
			return
		}
		// Whatever the input, an accepted ID has exactly the four segments
		// and reads back to the same account.
		back, err := identity.FromID(id)
		if err != nil || back != sa {
			t.Fatalf("%q -> %s -> %v, %v", username, id, back, err)
		}
		if want := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", td.Name(), sa.Namespace, sa.Name); id.String() != want {
			t.Fatalf("%q -> %s, want %s", username, id, want)
		}
	})
}

func ExampleServiceAccount_ID() {
	sa, _ := identity.FromUsername("system:serviceaccount:shop:checkout")
	id, _ := sa.ID(spiffeid.RequireTrustDomainFromString("prod.example.com"))
	fmt.Println(id)
	// Output: spiffe://prod.example.com/ns/shop/sa/checkout
}
