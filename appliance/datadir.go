package appliance

import (
	"fmt"
	"log/slog"
	"os"
)

// closeToOthers takes other users' access away from the data dir (its
// database holds keys and credentials): one made before ledge, by hand
// or by a script with the usual umask, is 0755. Said once in the log.
func closeToOthers(dir string, log *slog.Logger) {
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm()&0o007 == 0 {
		return
	}
	mode := fi.Mode().Perm() &^ 0o007
	if err := os.Chmod(dir, mode); err != nil {
		log.Warn("the data dir is open to other users and could not be closed to them: chmod o-rwx it", "dataDir", dir, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()), "err", err)
		return
	}
	log.Warn("the data dir was open to other users: closed to them", "dataDir", dir, "was", fmt.Sprintf("%04o", fi.Mode().Perm()), "now", fmt.Sprintf("%04o", mode))
}
