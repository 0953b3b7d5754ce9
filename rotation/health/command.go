package health

import "strings"

// Hints name commands an operator can paste as printed: each in backquotes,
// with the namespace, kubeconfig and context check was given, and the real names of
// the objects; never a placeholder.

// meshid is a meshid command, with -n, --kubeconfig and --context.
func (c *checker) meshid(args ...string) string {
	if c.in.Namespace != "" {
		args = append(args, "-n", c.in.Namespace)
	}
	return quote("meshid", append(args, c.cluster()...))
}

// cluster is --kubeconfig and --context as check was given them; meshid
// and kubectl spell them alike.
func (c *checker) cluster() []string {
	var args []string
	if c.in.Kubeconfig != "" {
		args = append(args, "--kubeconfig", c.in.Kubeconfig)
	}
	if c.in.Context != "" {
		args = append(args, "--context", c.in.Context)
	}
	return args
}

// kubectl is a kubectl command in the namespace.
func (c *checker) kubectl(args ...string) string {
	if c.in.Namespace != "" {
		args = append([]string{"-n", c.in.Namespace}, args...)
	}
	return c.kubectlCluster(args...)
}

// kubectlCluster is a kubectl command for cluster-scoped objects.
func (c *checker) kubectlCluster(args ...string) string {
	return quote("kubectl", append(c.cluster(), args...))
}

func quote(cmd string, args []string) string {
	words := []string{cmd}
	for _, a := range args {
		words = append(words, shellWord(a))
	}
	return "`" + strings.Join(words, " ") + "`"
}

// shellWord quotes a for a POSIX shell when it needs it.
func shellWord(a string) string {
	if a != "" && strings.IndexFunc(a, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_./:=,@+%", r))
	}) < 0 {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}

// bundleObject and issuerObject are the objects' names alone.
func (c *checker) bundleObject() string { return objectName(c.in.BundleObject, c.in.BundleName) }
func (c *checker) issuerObject() string { return objectName(c.in.IssuerObject, c.in.IssuerName) }

func objectName(name, display string) string {
	if name != "" {
		return name
	}
	_, n, ok := strings.Cut(display, "/")
	if !ok {
		return display
	}
	return n
}

// pipeApply pipes the YAML a kubectl command prints into kubectl apply, so
// that it creates or replaces the object.
func (c *checker) pipeApply(create string) string {
	return "`" + strings.Trim(create, "`") + " | " + strings.Trim(c.kubectl("apply", "-f", "-"), "`") + "`"
}
