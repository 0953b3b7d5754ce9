//go:build cgo && !nopkcs11

package keys_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/miekg/pkcs11"
)

// module is Debian softhsm2's PKCS#11 module (.ci/run installs it).
const module = "/usr/lib/softhsm/libsofthsm2.so"

const pin = "4711-meshid"

// softHSM is a SoftHSM2 token of its own, in a temp dir, for one test.
type softHSM struct {
	conf, away, pinFile string
}

func newSoftHSM(t *testing.T) *softHSM {
	t.Helper()
	if _, err := os.Stat(module); err != nil {
		t.Skipf("SoftHSM2 is not installed (%v): apt-get install softhsm2", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	h := &softHSM{conf: filepath.Join(dir, "softhsm2.conf"), away: filepath.Join(dir, "away.conf"), pinFile: filepath.Join(dir, "pin")}
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(h.conf, "directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n")
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(h.away, "directories.tokendir = "+filepath.Join(dir, "empty")+"\nobjectstore.backend = file\nlog.level = ERROR\n")
	write(h.pinFile, pin)
	t.Setenv("SOFTHSM2_CONF", h.conf)
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "meshid", "--pin", pin, "--so-pin", "so-"+pin).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return h
}

func (h *softHSM) uri(id, object string) string {
	return "pkcs11:token=meshid;id=%" + id + ";object=" + object + "?module-path=" + module + "&pin-source=" + h.pinFile
}

func (h *softHSM) pointAway(t *testing.T) { t.Setenv("SOFTHSM2_CONF", h.away) }
func (h *softHSM) pointBack(t *testing.T) { t.Setenv("SOFTHSM2_CONF", h.conf) }

// assertNotExtractable reads the private key's attributes with PKCS#11
// itself: CKA_SENSITIVE true, CKA_EXTRACTABLE false, and CKA_VALUE refused.
func (h *softHSM) assertNotExtractable(t *testing.T, label string) {
	t.Helper()
	p := pkcs11.New(module)
	if p == nil {
		t.Fatal("load the SoftHSM2 module")
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v %v", slots, err)
	}
	var slot uint
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && ti.Label == "meshid" {
			slot = s
		}
	}
	sess, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(sess)
	if err := p.Login(sess, pkcs11.CKU_USER, pin); err != nil {
		t.Fatal(err)
	}
	if err := p.FindObjectsInit(sess, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := p.FindObjects(sess, 2)
	_ = p.FindObjectsFinal(sess)
	if err != nil || len(objs) != 1 {
		t.Fatalf("private key %q: %d objects, %v", label, len(objs), err)
	}
	attrs, err := p.GetAttributeValue(sess, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := attrs[0].Value; len(got) != 1 || got[0] != 1 {
		t.Errorf("CKA_SENSITIVE = %v, want true", got)
	}
	if got := attrs[1].Value; len(got) != 1 || got[0] != 0 {
		t.Errorf("CKA_EXTRACTABLE = %v, want false", got)
	}
	if _, err := p.GetAttributeValue(sess, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
		t.Error("the token gave out the private key's CKA_VALUE")
	}
}
