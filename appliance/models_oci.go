package appliance

import (
	"ledge/agent"
	"ledge/models"
)

// registryAuth gives the model store, for oci:// models, the credentials
// the deployment lists for a registry (registryCredentials, as its images
// are pulled with): the one being applied while the agent applies its
// sections, when the store starts the downloads it asks for.
func registryAuth(ag *agent.Agent) models.RegistryAuth {
	return ag.RegistryCredential
}
