package route

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/routes.md stays true: its example routes parse, and the errors it
// quotes are the errors ledge gives.
func TestDocExamples(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "routes.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	routes := 0
	for i, block := range strings.Split(doc, "```")[1:] {
		text := strings.TrimSpace(block)
		if i%2 != 0 || !strings.HasPrefix(text, "FROM ") || strings.Contains(text, "/* WHERE /*") {
			continue // prose between blocks, another language, or the comment trap
		}
		routes++
		if _, err := Parse("doc", text); err != nil {
			t.Errorf("example %q: %v", text, err)
		}
	}
	if routes < 5 {
		t.Errorf("only %d example routes found in docs/routes.md", routes)
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| `([^`]+)` \\|$")
	rows := row.FindAllStringSubmatch(doc, -1)
	if len(rows) < 5 {
		t.Fatalf("only %d error examples found", len(rows))
	}
	for _, m := range rows {
		_, err := Parse("doc", "FROM /messages WHERE "+m[1]+" INTO $upstream")
		if err == nil || !strings.Contains(err.Error(), m[2]) {
			t.Errorf("condition %q: got %v, docs say %q", m[1], err, m[2])
		}
	}
	quoted := regexp.MustCompile(`(?m)^route "alerts": at offset \d+: .*$`).FindString(doc)
	if _, err := Parse("alerts", "FROM /messages WHERE temp > 30 INTO $upstream"); err == nil || err.Error() != quoted {
		t.Errorf("docs quote %q, ledge says %v", quoted, err)
	}
}
