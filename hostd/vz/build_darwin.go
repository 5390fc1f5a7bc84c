package vz

import (
	"fmt"

	"github.com/Code-Hex/vz/v3"

	"github.com/coworkhq/cowork/hostd/machine"
)

// build turns a Plan into vz's configuration, one device at a time; it
// decides nothing the Plan has not. Its devices are the ones identity.go's
// deviceLayout lists: a device added here is added there.
func build(p *Plan) (*vz.VirtualMachineConfiguration, error) {
	boot, err := bootLoader(p)
	if err != nil {
		return nil, err
	}
	config, err := vz.NewVirtualMachineConfiguration(boot, p.CPUs, p.Memory)
	if err != nil {
		return nil, fmt.Errorf("vm configuration: %w", err)
	}
	platform, err := genericPlatform(p.MachineIDData)
	if err != nil {
		return nil, err
	}
	config.SetPlatformVirtualMachineConfiguration(platform)

	var disks []vz.StorageDeviceConfiguration
	for _, d := range p.Disks {
		dev, err := disk(d)
		if err != nil {
			return nil, err
		}
		disks = append(disks, dev)
	}
	config.SetStorageDevicesVirtualMachineConfiguration(disks)

	var shares []vz.DirectorySharingDeviceConfiguration
	for _, sh := range p.Shares {
		dev, err := share(sh)
		if err != nil {
			return nil, err
		}
		shares = append(shares, dev)
	}
	if len(shares) > 0 {
		config.SetDirectorySharingDevicesVirtualMachineConfiguration(shares)
	}

	nic, err := network(p)
	if err != nil {
		return nil, err
	}
	config.SetNetworkDevicesVirtualMachineConfiguration([]*vz.VirtioNetworkDeviceConfiguration{nic})

	sock, err := vz.NewVirtioSocketDeviceConfiguration()
	if err != nil {
		return nil, fmt.Errorf("virtio socket device: %w", err)
	}
	config.SetSocketDevicesVirtualMachineConfiguration([]vz.SocketDeviceConfiguration{sock})

	serial, err := vz.NewFileHandleSerialPortAttachment(p.ConsoleIn, p.Console)
	if err != nil {
		return nil, fmt.Errorf("serial console: %w", err)
	}
	console, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(serial)
	if err != nil {
		return nil, fmt.Errorf("serial console: %w", err)
	}
	config.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{console})

	if p.Entropy {
		entropy, err := vz.NewVirtioEntropyDeviceConfiguration()
		if err != nil {
			return nil, fmt.Errorf("entropy device: %w", err)
		}
		config.SetEntropyDevicesVirtualMachineConfiguration([]*vz.VirtioEntropyDeviceConfiguration{entropy})
	}
	if p.Balloon {
		balloon, err := vz.NewVirtioTraditionalMemoryBalloonDeviceConfiguration()
		if err != nil {
			return nil, fmt.Errorf("memory balloon: %w", err)
		}
		config.SetMemoryBalloonDevicesVirtualMachineConfiguration([]vz.MemoryBalloonDeviceConfiguration{balloon})
	}
	return config, nil
}

func bootLoader(p *Plan) (vz.BootLoader, error) {
	if p.Kernel != "" {
		opts := []vz.LinuxBootLoaderOption{vz.WithCommandLine(p.Cmdline)}
		if p.Initrd != "" {
			opts = append(opts, vz.WithInitrd(p.Initrd))
		}
		l, err := vz.NewLinuxBootLoader(p.Kernel, opts...)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: %w", p.Kernel, err)
		}
		return l, nil
	}
	var opts []vz.NewEFIVariableStoreOption
	if p.CreateEFIVars {
		opts = append(opts, vz.WithCreatingEFIVariableStore())
	}
	store, err := vz.NewEFIVariableStore(p.EFIVars, opts...)
	if err != nil {
		return nil, fmt.Errorf("EFI variable store %s: %w", p.EFIVars, err)
	}
	l, err := vz.NewEFIBootLoader(vz.WithEFIVariableStore(store))
	if err != nil {
		return nil, fmt.Errorf("EFI boot loader: %w", err)
	}
	return l, nil
}

// genericPlatform is the platform with the guest's machine identifier,
// whose data machineID has loaded, or made and saved.
func genericPlatform(data []byte) (*vz.GenericPlatformConfiguration, error) {
	id, err := vz.NewGenericMachineIdentifierWithData(data)
	if err != nil {
		return nil, fmt.Errorf("machine identifier: %w", err)
	}
	platform, err := vz.NewGenericPlatformConfiguration(vz.WithGenericMachineIdentifier(id))
	if err != nil {
		return nil, fmt.Errorf("generic platform: %w", err)
	}
	return platform, nil
}

func disk(d Disk) (vz.StorageDeviceConfiguration, error) {
	var att *vz.DiskImageStorageDeviceAttachment
	var err error
	if d.Cached {
		att, err = vz.NewDiskImageStorageDeviceAttachmentWithCacheAndSync(d.Path, d.ReadOnly,
			vz.DiskImageCachingModeCached, vz.DiskImageSynchronizationModeFsync)
	} else {
		att, err = vz.NewDiskImageStorageDeviceAttachment(d.Path, d.ReadOnly)
	}
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.Path, err)
	}
	dev, err := vz.NewVirtioBlockDeviceConfiguration(att)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.Path, err)
	}
	return dev, nil
}

func share(sh machine.Share) (vz.DirectorySharingDeviceConfiguration, error) {
	dir, tag := sh.Dir, sh.Tag
	sd, err := vz.NewSharedDirectory(dir, sh.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("share %s: %w", dir, err)
	}
	single, err := vz.NewSingleDirectoryShare(sd)
	if err != nil {
		return nil, fmt.Errorf("share %s: %w", dir, err)
	}
	fs, err := vz.NewVirtioFileSystemDeviceConfiguration(tag)
	if err != nil {
		return nil, fmt.Errorf("virtiofs tag %q: %w", tag, err)
	}
	fs.SetDirectoryShare(single)
	return fs, nil
}

func network(p *Plan) (*vz.VirtioNetworkDeviceConfiguration, error) {
	att, err := vz.NewFileHandleNetworkDeviceAttachment(p.Network)
	if err != nil {
		return nil, fmt.Errorf("network attachment: %w", err)
	}
	if err := att.SetMaximumTransmissionUnit(p.MTU); err != nil {
		return nil, fmt.Errorf("network MTU %d: %w", p.MTU, err)
	}
	nic, err := vz.NewVirtioNetworkDeviceConfiguration(att)
	if err != nil {
		return nil, fmt.Errorf("network device: %w", err)
	}
	if p.MAC != nil {
		mac, err := vz.NewMACAddress(p.MAC)
		if err != nil {
			return nil, fmt.Errorf("MAC %s: %w", p.MAC, err)
		}
		nic.SetMACAddress(mac)
	}
	return nic, nil
}
