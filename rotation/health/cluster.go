package health

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/meshid/meshid/bundle"
)

func (c *checker) webhookCA() Row {
	row := Row{Check: "webhook CA"}
	if why := c.skipped(NeedWebhook); why != "" {
		row.Status, row.Detail = Skip, why
		return row
	}
	renew := "delete Secret meshid-webhook-ca and restart meshid-webhook, which makes a new one: " + c.kubectl("delete", "secret", "meshid-webhook-ca") + " then " + c.kubectl("rollout", "restart", "deployment/meshid-webhook")
	b, err := bundle.Parse(c.in.WebhookCAPEM)
	if err != nil {
		row.Status, row.Detail, row.Hint = Fail, err.Error(), renew
		return row
	}
	ca := b.Anchors()[0]
	t := ca.NotAfter
	row.Expires = &t
	c.expires(row.Check, t)
	left := t.Sub(c.in.Now)
	switch {
	case left <= 0:
		row.Status, row.Detail, row.Hint = Fail, "expired: the API server refuses the webhooks' certificates", renew
	case c.in.WebhookCABundle != nil && string(c.in.WebhookCABundle) != string(c.in.WebhookCAPEM):
		row.Status, row.Detail = Fail, "the injector's caBundle is not the webhook CA"
		row.Hint = "meshid-webhook syncs it every minute: is it running, and allowed to update the webhook configurations? " + c.kubectl("logs", "deployment/meshid-webhook")
	case left < c.in.WarnWithin:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("expires in %s", days(left)), "before then, "+renew
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("valid for %s more, caBundle in sync", days(left))
	}
	return row
}

func (c *checker) webhookCert() Row {
	row := Row{Check: "webhook certificate"}
	if why := c.skipped(NeedWebhook); why != "" {
		row.Status, row.Detail = Skip, why
		return row
	}
	describe := c.kubectl("describe", "certificate", "meshid-webhook-tls") + " shows cert-manager's status and events"
	block, _ := pem.Decode(c.in.WebhookCertPEM)
	if block == nil {
		row.Status, row.Detail, row.Hint = Fail, "Secret meshid-webhook-tls holds no certificate", describe
		return row
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		row.Status, row.Detail, row.Hint = Fail, err.Error(), describe
		return row
	}
	t := cert.NotAfter
	row.Expires = &t
	c.expires(row.Check, t)
	left, life := t.Sub(c.in.Now), cert.NotAfter.Sub(cert.NotBefore)
	switch {
	case left <= 0:
		row.Status, row.Detail, row.Hint = Fail, "expired: the API server cannot call the webhooks", describe
	case left < life/4:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("expires in %s, past its renewal time", human(left)), "cert-manager has not renewed it: "+describe
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("valid for %s more", human(left))
	}
	return row
}

func (c *checker) replicas() Row {
	ca := *c.in.CA
	row := Row{Check: "ca replicas " + ca.Name}
	if why := c.skipped(NeedDeployment); why != "" {
		row.Status, row.Detail = Skip, why
		return row
	}
	describe := c.kubectl("describe", "deployment", c.deployment())
	switch {
	case ca.Err != nil:
		row.Status, row.Detail = Warn, ca.Err.Error()
		row.Hint = "install meshid-ca with " + c.meshid("install", "--apply") + ", or name its Deployment with check's --deployment"
	case ca.Ready == 0:
		row.Status, row.Detail, row.Hint = Fail, fmt.Sprintf("0 of %d ready", ca.Desired), "workloads cannot renew certificates: "+describe+" says why"
	case ca.Ready < ca.Desired:
		row.Status, row.Detail = Warn, fmt.Sprintf("%d of %d ready", ca.Ready, ca.Desired)
		row.Hint = "a replica is not ready: " + c.kubectl("get", "pods", "-l", "app.kubernetes.io/name="+c.deployment()) + " and " + describe
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("%d of %d ready", ca.Ready, ca.Desired)
	}
	return row
}
