package appliance

import (
	"strings"

	"ledge/agent"
	"ledge/models"
)

// registryAuth gives the model store, for oci:// models, the credentials
// the current deployment lists for a registry (registryCredentials, as
// its images are pulled with).
func registryAuth(ag *agent.Agent) models.RegistryAuth {
	return func(host string) (string, string) {
		_, man := ag.Current()
		if man == nil {
			return "", ""
		}
		for _, c := range man.RegistryCredentials {
			addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(c.Address, "https://"), "http://"), "/")
			if strings.EqualFold(addr, host) {
				return c.Username, c.Password
			}
		}
		return "", ""
	}
}
