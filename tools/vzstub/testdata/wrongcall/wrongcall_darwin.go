// Package wrongcall misuses vz on purpose. hack/check-darwin.sh builds it
// against the stub and fails if it type-checks: a check that accepts this
// would accept anything. Each line marked WRONG must be reported.
package wrongcall

import "github.com/Code-Hex/vz/v3"

// Boot has a type error per line marked WRONG.
func Boot() error {
	boot, err := vz.NewLinuxBootLoader(42) // WRONG: the kernel path is a string
	if err != nil {
		return err
	}
	config, err := vz.NewVirtualMachineConfiguration(boot, 2, 1<<30)
	if err != nil {
		return err
	}
	vm, err := vz.NewVirtualMachine(config)
	if err != nil {
		return err
	}
	return vm.Boot() // WRONG: VirtualMachine has Start, not Boot
}
