package appliance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"ledge/web"
)

// PasswordFile is where the first start keeps the dashboard's admin
// password (mode 0600) until the first login deletes it.
func PasswordFile(dataDir string) string { return filepath.Join(dataDir, "admin-password") }

// firstPassword makes the admin password on the first start: it goes to
// the 0600 file and to FirstAdminPassword (which `ledge run` prints on its
// terminal), never to the log, which keeps it forever.
func (a *App) firstPassword(ctx context.Context) error {
	if a.web == nil || a.db == nil {
		return nil
	}
	file := PasswordFile(a.cfg.DataDir)
	pw, err := web.EnsureAdminPassword(ctx, a.db, func(pw string) error {
		if err := os.WriteFile(file+".tmp", []byte(pw+"\n"), 0o600); err != nil {
			return fmt.Errorf("admin password file: %w", err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			return fmt.Errorf("admin password file: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.adminPassword = pw
	switch _, statErr := os.Stat(file); {
	case pw != "":
		a.log.Warn("dashboard admin password created: it is in "+file+" (mode 0600) until the first login deletes it; change it with `ledge admin set-password`", "file", file)
	case statErr == nil:
		a.log.Info("the first admin password is still in "+file+": log in to the dashboard (which deletes the file), or set another with `ledge admin set-password`", "file", file)
	}
	return nil
}

// FirstAdminPassword is the dashboard's admin password when this start
// made it (the first start), else "". `ledge run` shows it on its
// terminal, once.
func (a *App) FirstAdminPassword() string { return a.adminPassword }
