package health

import (
	"fmt"
	"slices"
	"strings"
)

// Preflight is whether the cluster can be read at all, checked before
// anything else, as `linkerd check` does: when the API server cannot be
// reached or the namespace does not exist, every other row is skipped.
type Preflight struct {
	// APIErr is why the API server could not be reached, or refused check's
	// credentials; nil when it answered. Version is what it runs.
	APIErr  error
	Version string
	// NamespaceMissing: the API server says the namespace does not exist.
	// NamespaceErr: it could not tell (check may not get namespaces, say).
	NamespaceMissing bool
	NamespaceErr     error
	// User is who check is to the API server (SelfSubjectReview); empty
	// when unknown.
	User string
	// Access is every read check makes and whether RBAC allows it
	// (SelfSubjectAccessReview); AccessErr is why that could not be asked.
	Access    []Access
	AccessErr error
}

// Need names what a row reads, so that a row whose read RBAC denies is
// skipped rather than failed for a missing object.
type Need string

const (
	NeedBundle     Need = "bundle"     // the trust-bundle ConfigMap
	NeedIssuer     Need = "issuer"     // the issuer Secret
	NeedReports    Need = "reports"    // the replicas' fleet ConfigMaps
	NeedDeployment Need = "deployment" // the meshid-ca Deployment
	NeedWebhook    Need = "webhook"    // the webhook's Secrets and configuration
)

// Access is one read check makes, and whether RBAC allows it.
type Access struct {
	Verb, Group, Resource string
	// Name is the object's; empty for any.
	Name string
	// Cluster: a cluster-scoped resource; else one in the namespace.
	Cluster bool
	// Need is what the read is for; Optional when the trust rows do not
	// depend on it (a denied optional read is a warning).
	Need     Need
	Optional bool
	Allowed  bool
	// Reason is RBAC's, when denied.
	Reason string
}

// resource is the resource as kubectl spells it: "deployments.apps".
func (a Access) resource() string {
	if a.Group == "" {
		return a.Resource
	}
	return a.Resource + "." + a.Group
}

func (a Access) String() string {
	s := a.Verb + " " + a.resource()
	if a.Name != "" {
		s += " " + a.Name
	}
	return s
}

// preflight adds the preflight rows; false when nothing else can be read.
func (c *checker) preflight() bool {
	p := c.in.Preflight
	if p == nil {
		return true
	}
	if p.APIErr != nil {
		c.add(Row{Check: "api server", Status: Fail, Detail: p.APIErr.Error(),
			Hint: "is the API server up, and is this the cluster you mean? " + c.kubectlCluster("cluster-info") + " tells"})
		c.r.OutageWhat = "unknown: the cluster could not be read"
		return false
	}
	detail := "reachable"
	if p.Version != "" {
		detail += ", Kubernetes " + p.Version
	}
	c.add(Row{Check: "api server", Status: OK, Detail: detail})

	ns := Row{Check: "namespace " + c.in.Namespace}
	switch {
	case p.NamespaceMissing:
		ns.Status, ns.Detail = Fail, "not found"
		ns.Hint = "install meshid there with " + c.meshid("install", "--apply") + ", or name the namespace meshid-ca runs in with check's -n"
		c.add(ns)
		c.r.OutageWhat = "unknown: namespace " + c.in.Namespace + " does not exist"
		return false
	case p.NamespaceErr != nil:
		ns.Status, ns.Detail = Skip, "cannot tell whether it exists: "+p.NamespaceErr.Error()+"; the reads below say"
	default:
		ns.Status, ns.Detail = OK, "exists"
	}
	c.add(ns)
	c.add(c.rbac(p))
	return true
}

func (c *checker) rbac(p *Preflight) Row {
	row := Row{Check: "rbac"}
	who := "check"
	if p.User != "" {
		who = p.User
	}
	if p.AccessErr != nil {
		row.Status, row.Detail = Warn, "cannot ask what "+who+" may read: "+p.AccessErr.Error()+"; the reads below say"
		row.Hint = "list what you may do: " + c.kubectl("auth", "can-i", "--list")
		return row
	}
	var denied []Access
	required := false
	for _, a := range p.Access {
		if !a.Allowed {
			denied = append(denied, a)
			required = required || !a.Optional
		}
	}
	if len(denied) == 0 {
		row.Status, row.Detail = OK, fmt.Sprintf("%s may make the %d reads check makes", who, len(p.Access))
		return row
	}
	var names []string
	for _, a := range denied {
		names = append(names, a.String())
	}
	row.Detail = fmt.Sprintf("%s may not %s", who, strings.Join(names, ", "))
	if !required {
		row.Status, row.Detail = Warn, row.Detail+": the rows that need them are skipped"
	} else {
		row.Status = Fail
	}
	row.Hint = c.grant(p.User, denied)
	return row
}

// grant is the hint that grants the denied reads.
func (c *checker) grant(user string, denied []Access) string {
	var local, cluster []string
	var verbs []string
	for _, a := range denied {
		if a.Cluster {
			cluster = append(cluster, a.resource())
		} else {
			local = append(local, a.resource())
		}
		verbs = append(verbs, a.Verb)
	}
	verbs, local, cluster = uniq(verbs), uniq(local), uniq(cluster)
	subject := ""
	switch sa, ok := strings.CutPrefix(user, "system:serviceaccount:"); {
	case ok:
		subject = "--serviceaccount=" + sa
	case user != "":
		subject = "--user=" + user
	}
	var steps []string
	if len(local) > 0 {
		role := c.kubectl("create", "role", "meshid-check", "--verb="+strings.Join(verbs, ","), "--resource="+strings.Join(local, ","))
		if subject != "" {
			role += " and " + c.kubectl("create", "rolebinding", "meshid-check", "--role=meshid-check", subject)
		}
		steps = append(steps, role)
	}
	if len(cluster) > 0 {
		role := c.kubectlCluster("create", "clusterrole", "meshid-check", "--verb=get", "--resource="+strings.Join(cluster, ","))
		if subject != "" {
			role += " and " + c.kubectlCluster("create", "clusterrolebinding", "meshid-check-"+c.in.Namespace, "--clusterrole=meshid-check", subject)
		}
		steps = append(steps, role)
	}
	h := "an administrator can grant them: " + strings.Join(steps, "; then ")
	if subject == "" {
		h += ", bound to the user of your kubeconfig"
	}
	return h + "; " + c.kubectl("auth", "can-i", "--list") + " shows what you may do"
}

func uniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// skipped says why a row that needs n is skipped; "" when it is not.
func (c *checker) skipped(n Need) string {
	p := c.in.Preflight
	if p == nil {
		return ""
	}
	for _, a := range p.Access {
		if a.Need == n && !a.Allowed {
			return "skipped: not allowed to " + a.String() + " (see rbac)"
		}
	}
	return ""
}

// skipAll adds the rows that depend on a failed preflight, as skipped.
func (c *checker) skipAll() {
	p := c.in.Preflight
	why := "skipped: namespace " + c.in.Namespace + " does not exist"
	if p.APIErr != nil {
		why = "skipped: the API server cannot be reached"
		c.add(Row{Check: "namespace " + c.in.Namespace, Status: Skip, Detail: why})
	}
	c.add(Row{Check: "rbac", Status: Skip, Detail: why})
	for _, name := range []string{"bundle " + c.in.BundleName, "issuer " + c.in.IssuerName} {
		c.add(Row{Check: name, Status: Skip, Detail: why})
	}
	if c.in.CA != nil {
		c.add(Row{Check: "ca replicas " + c.in.CA.Name, Status: Skip, Detail: why})
	}
	if c.in.Reports != nil {
		c.add(Row{Check: "ca reports " + c.in.Reports.Name, Status: Skip, Detail: why})
	}
}
