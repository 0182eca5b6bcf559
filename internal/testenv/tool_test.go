package testenv

import (
	"fmt"
	"os"
	"testing"
)

// recordingTB is a testing.TB whose Fatalf and Skipf only record what they
// were given, so that Unavailable's two outcomes can be observed.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()                           {}
func (r *recordingTB) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recordingTB) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }

// Tool finds an executable on PATH, and in /usr/sbin when PATH lacks it (as
// root's PATH may lack sbin where nginx lives); a missing one is a failure
// naming its package under CI=true and a skip otherwise.
func TestTool(t *testing.T) {
	if p := Tool(t, "sh", "dash"); p == "" {
		t.Fatal("sh not found")
	}
	t.Run("sbin without PATH", func(t *testing.T) {
		if _, err := os.Stat("/usr/sbin/ldconfig"); err != nil {
			t.Skipf("no /usr/sbin/ldconfig to find: %v", err)
		}
		t.Setenv("PATH", "")
		if p := Tool(t, "ldconfig", "libc-bin"); p != "/usr/sbin/ldconfig" {
			t.Errorf("with an empty PATH: ldconfig at %q, want /usr/sbin/ldconfig", p)
		}
	})

	t.Setenv("CI", "true")
	var r recordingTB
	if p := Tool(&r, "linkgate-no-such-tool", "linkgate-pkg"); p != "" || r.skip != "" ||
		r.fatal != "required test dependency missing (CI=true): linkgate-no-such-tool not found on PATH, in /usr/sbin or /usr/bin (apt-get install linkgate-pkg)" {
		t.Errorf("missing tool under CI: path %q, fatal %q, skip %q", p, r.fatal, r.skip)
	}
	t.Setenv("CI", "")
	r = recordingTB{}
	if Tool(&r, "linkgate-no-such-tool", "linkgate-pkg"); r.fatal != "" || r.skip == "" {
		t.Errorf("missing tool outside CI: fatal %q, skip %q; want a skip", r.fatal, r.skip)
	}
}
