package appliance

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ledge/internal/testenv"
	"ledge/web"
)

// TestDiskFullAnswersWhy: with the data dir's file system full to the
// last byte (a real tmpfs), a change through the API that must be stored
// (a new identity) is refused with 507 and a message that says the disk
// is full and where, not "internal error"; the rest keeps answering, and
// once there is room the same request works.
func TestDiskFullAnswersWhy(t *testing.T) {
	dir := testenv.Tmpfs(t, "96m")
	d := startDashboard(t, func(c *Config) { c.DataDir = dir })
	tok, err := web.CreateToken(t.Context(), d.app.DB(), "disk-full")
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, d.base+"/api/v1"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 1<<20); ; {
		if _, err := f.Write(chunk); err != nil {
			break // full
		}
	}
	f.Close()
	// SQLite may still have a page or two: add identities until one is
	// refused.
	var code int
	var body string
	for i := range 200 {
		code, body = call("POST", "/hub/identities", fmt.Sprintf(`{"name": "sensor-%d"}`, i))
		if code != http.StatusCreated {
			break
		}
	}
	var answer struct {
		Error struct{ Code, Message string }
	}
	json.Unmarshal([]byte(body), &answer)
	if code != http.StatusInsufficientStorage || answer.Error.Code != "disk_full" ||
		!strings.Contains(answer.Error.Message, "disk is full") || !strings.Contains(answer.Error.Message, dir) {
		t.Errorf("adding an identity on a full disk: %d %s; want 507 disk_full naming the data dir", code, body)
	}
	if code, body := call("GET", "/system", ""); code != http.StatusOK || !strings.Contains(body, `"diskLow"`) {
		t.Errorf("GET /system on a full disk: %d %s", code, body)
	}
	os.Remove(filler)
	if code, body := call("POST", "/hub/identities", `{"name": "after-full"}`); code != http.StatusCreated {
		t.Errorf("adding an identity once there is room: %d %s", code, body)
	}
}
