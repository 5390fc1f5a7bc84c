package fakevz

// LinuxOnly must not be in a darwin stub.
func LinuxOnly() {}
