package appliance

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestDashboardAddIdentity: an identity added on the Devices page shows
// its secrets and says truly whether they can be seen again (a device's
// keys: `ledge identity show`; a user's password: never), and the table
// says how each identity authenticates, connected or not.
func TestDashboardAddIdentity(t *testing.T) {
	d := startDashboard(t, nil)
	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/devices")
	add := func(name, kind, password string) string {
		t.Helper()
		wait(t, ctx, "the add form", `!!document.querySelector("#add-form")`, 10*time.Second)
		evalString(t, ctx, fmt.Sprintf(`(() => { const f = document.querySelector("#add-form");
			f.elements.name.value = %q; f.elements.kind.value = %q; f.elements.password.value = %q;
			f.querySelector("button[type=submit]").click(); return ""; })()`, name, kind, password))
		wait(t, ctx, name+" added", `document.querySelector("#add-result").textContent.includes("Added `+name+`")`, 10*time.Second)
		return evalString(t, ctx, `document.querySelector("#add-result").innerText`)
	}
	dev := add("thermo-1", "device", "")
	if !strings.Contains(dev, "HostName=") || !strings.Contains(dev, "ledge identity show thermo-1") || strings.Contains(dev, "only this once") {
		t.Errorf("a device's secrets, said to be shown once, or without how to see them again:\n%s", dev)
	}
	user := add("plc-1", "user", "a long password")
	if !strings.Contains(user, "a long password") || !strings.Contains(user, "only this once") {
		t.Errorf("a user's password, not said to be shown once:\n%s", user)
	}
	wait(t, ctx, "both in the table", `document.querySelectorAll("#identities tbody tr").length === 2`, 10*time.Second)
	auth := evalString(t, ctx, `[...document.querySelectorAll("#identities tbody tr")].map((r) => r.cells[0].innerText + "=" + r.cells[3].innerText).join(", ")`)
	if !strings.Contains(auth, "plc-1=password") || !strings.Contains(auth, "thermo-1=SAS key") {
		t.Errorf("auth column: %s", auth)
	}
	testenv.Screenshot(t, ctx, "devices-added")
}
