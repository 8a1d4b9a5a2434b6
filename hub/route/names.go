package route

// Message sources.
const (
	SourceTelemetry   = "/messages"                // leaf-device telemetry
	SourceTwinChanges = "/twinChangeNotifications" // twin change notifications
)

// ModuleSource returns the source of a module's message:
// "/messages/modules/<module>" without an output, else
// "/messages/modules/<module>/outputs/<output>".
func ModuleSource(module, output string) string {
	if output == "" {
		return "/messages/modules/" + module
	}
	return "/messages/modules/" + module + "/outputs/" + output
}

// System property names as conditions use them ($messageId, ...): the keys
// of Message.Sys. The wire names ($.mid, $.ct, ...) are the hub's business.
const (
	SysMessageID                    = "messageId"
	SysCorrelationID                = "correlationId"
	SysUserID                       = "userId"
	SysTo                           = "to"
	SysContentType                  = "contentType"
	SysContentEncoding              = "contentEncoding"
	SysMessageSchema                = "messageSchema"
	SysCreationTime                 = "creationTime"
	SysEnqueuedTime                 = "enqueuedTime"
	SysConnectionDeviceID           = "connectionDeviceId"
	SysConnectionModuleID           = "connectionModuleId"
	SysOutputName                   = "outputName"
	SysInputName                    = "inputName"
	SysConnectionDeviceGenerationID = "connectionDeviceGenerationId"
	SysConnectionAuthMethod         = "connectionAuthMethod"
	SysAbsoluteExpiryTime           = "absolute-expiry-time"
	SysComponentName                = "dt-subject"
	SysInterfaceID                  = "iothub-interface-id"
	SysModelID                      = "modelId"
)
