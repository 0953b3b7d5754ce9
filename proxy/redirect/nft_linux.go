package redirect

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Apply replaces the namespace's meshid table with the rule set of cfg, in
// one netlink transaction: running it twice leaves the same rules, and a
// failure leaves what was there before. opts choose the namespace (nil: the
// caller's).
func Apply(cfg Config, opts ...nftables.ConnOption) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("redirect: netlink: %w", err)
	}
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	// Adding an existing table is a no-op, so the delete that follows
	// cannot fail: together they clear whatever a previous run left.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	chains := map[string]*nftables.Chain{
		Prerouting: c.AddChain(&nftables.Chain{Name: Prerouting, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}),
		Output: c.AddChain(&nftables.Chain{Name: Output, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest}),
	}
	for _, r := range Rules(cfg) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chains[r.Chain], Exprs: r.exprs()})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redirect: program nftables table %s: %w (meshid-init needs CAP_NET_ADMIN in the pod's network namespace)", Table, err)
	}
	return nil
}

// Remove deletes the meshid table, if there is one.
func Remove(opts ...nftables.ConnOption) error {
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("redirect: netlink: %w", err)
	}
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redirect: remove nftables table %s: %w", Table, err)
	}
	return nil
}

// Verify reads the namespace's meshid table back through netlink and
// compares it with the rule set of cfg: the chains' hooks and priorities,
// and every rule, expression by expression, as the kernel holds it. It
// returns ErrMissing when there is no table, and an error naming the first
// difference otherwise. Reading needs CAP_NET_ADMIN, as programming does.
func Verify(cfg Config, opts ...nftables.ConnOption) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("redirect: netlink: %w", err)
	}
	t, err := c.ListTableOfFamily(Table, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return ErrMissing
	}
	if err != nil {
		return fmt.Errorf("redirect: read table inet %s: %w", Table, err)
	}
	want := map[string][]Rule{}
	for _, r := range Rules(cfg) {
		want[r.Chain] = append(want[r.Chain], r)
	}
	hooks := map[string]*nftables.ChainHook{Prerouting: nftables.ChainHookPrerouting, Output: nftables.ChainHookOutput}
	for _, name := range []string{Prerouting, Output} {
		ch, err := c.ListChain(t, name)
		if err != nil {
			return fmt.Errorf("redirect: table inet %s has no chain %s: %w", Table, name, err)
		}
		if ch.Type != nftables.ChainTypeNAT || ch.Hooknum == nil || *ch.Hooknum != *hooks[name] || ch.Priority == nil || *ch.Priority != *nftables.ChainPriorityNATDest {
			return fmt.Errorf("redirect: chain %s of table inet %s is not a nat chain on its hook at dstnat priority", name, Table)
		}
		got, err := c.GetRules(t, ch)
		if err != nil {
			return fmt.Errorf("redirect: read the rules of chain %s: %w", name, err)
		}
		if len(got) != len(want[name]) {
			return fmt.Errorf("redirect: chain %s holds %d rules, want %d", name, len(got), len(want[name]))
		}
		for i, r := range want[name] {
			if !sameExprs(got[i].Exprs, r.exprs()) {
				return fmt.Errorf("redirect: rule %d of chain %s differs from %q", i+1, name, r.String())
			}
		}
	}
	return nil
}

// sameExprs compares expressions by their netlink encoding, the form the
// kernel keeps, once canonical.
func sameExprs(a, b []expr.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, errx := expr.Marshal(byte(nftables.TableFamilyINet), canonical(a[i]))
		y, erry := expr.Marshal(byte(nftables.TableFamilyINet), canonical(b[i]))
		if errx != nil || erry != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

// canonical is e as the kernel reports it: a redirect to one port has that
// port as its upper bound too, and says a port was given
// (NF_NAT_RANGE_PROTO_SPECIFIED).
func canonical(e expr.Any) expr.Any {
	r, ok := e.(*expr.Redir)
	if !ok || r.RegisterProtoMin == 0 {
		return e
	}
	c := *r
	if c.RegisterProtoMax == 0 {
		c.RegisterProtoMax = c.RegisterProtoMin
	}
	c.Flags |= unix.NF_NAT_RANGE_PROTO_SPECIFIED
	return &c
}

// exprs compiles r to nftables expressions, as nft(8) would.
func (r Rule) exprs() []expr.Any {
	var es []expr.Any
	for _, m := range r.Matches {
		es = append(es, m.exprs()...)
	}
	if r.RedirectTo == 0 {
		return append(es, &expr.Verdict{Kind: expr.VerdictReturn})
	}
	es = append(es, tcp()...)
	return append(es,
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectTo)},
		&expr.Redir{RegisterProtoMin: 1})
}

func (m Match) exprs() []expr.Any {
	eq := func(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	switch {
	case m.InputInterface != "":
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, eq(ifname(m.InputInterface))}
	case m.OutputInterface != "":
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, eq(ifname(m.OutputInterface))}
	case m.SocketUID != nil:
		return []expr.Any{&expr.Meta{Key: expr.MetaKeySKUID, Register: 1}, eq(binaryutil.NativeEndian.PutUint32(*m.SocketUID))}
	case m.DestPort != 0:
		return append(tcp(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			eq(binaryutil.BigEndian.PutUint16(m.DestPort)))
	default:
		return prefix(m.DestPrefix)
	}
}

// tcp matches TCP, whatever the IP version.
func tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

func prefix(p netip.Prefix) []expr.Any {
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(16) // daddr in the IPv4 header
	if p.Addr().Is6() {
		proto, offset = unix.NFPROTO_IPV6, 24
	}
	addr := p.Masked().Addr().AsSlice()
	mask := make([]byte, len(addr))
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes,
// zero padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
