package fakevz

// AmdOnly must not be in an arm64 stub.
func AmdOnly() {}
