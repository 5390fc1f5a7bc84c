// Package rightcall uses vz correctly. hack/check-darwin.sh builds it
// against the stub as the control for wrongcall: it proves that the
// workspace resolves vz to the stub, so wrongcall fails for its type
// errors and not because vz cannot be found.
package rightcall

import (
	"context"

	"github.com/Code-Hex/vz/v3"
)

// Boot configures and starts a VM the way cowork's vz backend does.
func Boot(ctx context.Context, kernel, initrd, disk string) (*vz.VirtualMachine, error) {
	boot, err := vz.NewLinuxBootLoader(kernel, vz.WithInitrd(initrd), vz.WithCommandLine("console=hvc0"))
	if err != nil {
		return nil, err
	}
	config, err := vz.NewVirtualMachineConfiguration(boot, 2, 1<<30)
	if err != nil {
		return nil, err
	}
	attachment, err := vz.NewDiskImageStorageDeviceAttachment(disk, false)
	if err != nil {
		return nil, err
	}
	block, err := vz.NewVirtioBlockDeviceConfiguration(attachment)
	if err != nil {
		return nil, err
	}
	config.SetStorageDevicesVirtualMachineConfiguration([]vz.StorageDeviceConfiguration{block})
	if ok, err := config.Validate(); !ok || err != nil {
		return nil, err
	}
	vm, err := vz.NewVirtualMachine(config)
	if err != nil {
		return nil, err
	}
	if err := vm.Start(); err != nil {
		return nil, err
	}
	select {
	case state := <-vm.StateChangedNotify():
		_ = state == vz.VirtualMachineStateRunning
	case <-ctx.Done():
	}
	return vm, nil
}
