package policy

import (
	"fmt"
	"slices"

	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/api/policy/v1alpha1"
)

// FromSpec returns the policy of the port the AuthorizationPolicy name
// (NAMESPACE/NAME) names with spec. It is the only conversion from the CRD
// to the policy model: the webhook compiles its result to validate the
// object, and the CA merges the results for a pod into the file its proxy
// enforces. Each request rule carries name, and the mode of
// spec.requests when it sets none.
func FromSpec(name string, spec v1alpha1.AuthorizationPolicySpec) PortFile {
	pf := PortFile{Port: int(spec.Port), Mode: Mode(spec.Mode), Allow: slices.Clone(spec.Allow)}
	if rs := spec.Requests; rs != nil {
		for _, r := range rs.Rules {
			r = *r.DeepCopy()
			if r.Mode == "" {
				r.Mode = rs.Mode
			}
			pf.Requests = append(pf.Requests, RequestRule{Policy: name, RequestRule: r})
		}
	}
	return pf
}

// Merge returns the policy file of a pod that the port policies ports
// select, with def for the ports none names. Entries for the same port
// merge: a mode other than deny, when one says so explicitly, wins over
// deny (or no mode); their allow rules add up; a port whose mode accepts
// every authenticated peer keeps no rules (they would be refused as
// doing nothing). Ports come out sorted, so that the same policies give
// the same file.
func Merge(def Mode, ports []PortFile) File {
	byPort := map[int]*PortFile{}
	var order []int
	for _, pf := range ports {
		m := byPort[pf.Port]
		if m == nil {
			m = &PortFile{Port: pf.Port, Mode: pf.Mode}
			byPort[pf.Port] = m
			order = append(order, pf.Port)
		} else if pf.Mode != "" && pf.Mode != Deny {
			m.Mode = pf.Mode
		}
		m.Allow = append(m.Allow, pf.Allow...)
		m.Requests = append(m.Requests, pf.Requests...)
	}
	slices.Sort(order)
	f := File{Default: def}
	for _, n := range order {
		m := byPort[n]
		if m.Mode.AcceptsEveryPeer() {
			m.Allow = nil
		}
		f.Ports = append(f.Ports, *m)
	}
	return f
}

// Marshal returns f as the YAML that Parse reads.
func (f File) Marshal() ([]byte, error) {
	data, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return data, nil
}
