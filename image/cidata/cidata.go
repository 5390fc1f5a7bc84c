// Package cidata writes the NoCloud seed disk a guest provisions itself
// from. It is the daemon's: it links go-diskfs, which the CLI must not.
package cidata

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/agentbin"
)

// CIData is what goes on the NoCloud seed disk (volume label "cidata").
type CIData struct {
	InstanceID string
	Guest      image.Guest
	Arch       string // which embedded agent to put on it
}

// Write makes the seed ISO at path: meta-data, user-data,
// network-config, and the agent for the guest's architecture with its
// sha256. It is written to path.tmp and renamed over path, so a guest never
// sees half an ISO. An ISO that a previous Write made from the same
// inputs is kept (see stamp): the daemon then never reads the 10 MiB
// agent out of its executable, whose pages would stay in its memory.
func Write(path string, c CIData) error {
	agentSum, err := agentbin.Sum(c.Arch)
	if err != nil {
		return err
	}
	ud, err := image.UserData(c.Guest)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"meta-data":      image.MetaData(c.InstanceID, c.Guest.Hostname),
		"user-data":      ud,
		"network-config": image.NetworkConfig(c.Guest.MAC),
	}
	want := stamp(files, agentSum)
	if upToDate(path, want) {
		return nil
	}
	os.Remove(path + stampSuffix)
	agent, err := agentbin.Agent(c.Arch)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(agent)
	files[image.CIDataAgentName] = agent
	files[image.CIDataSumName] = []byte(hex.EncodeToString(sum[:]) + "\n")
	if err := writeISO(path, "cidata", files); err != nil {
		return err
	}
	return writeStamp(path, want)
}

// writeISO makes a Rock Ridge ISO 9660 image holding files.
func writeISO(path, label string, files map[string][]byte) error {
	var size int64 = 1 << 20 // descriptors, directories, path tables
	for _, b := range files {
		size += (int64(len(b))/2048 + 1) * 2048
	}
	work, err := os.MkdirTemp(filepath.Dir(path), ".iso-work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tmp := path + ".tmp"
	os.Remove(tmp)
	d, err := diskfs.Create(tmp, size, diskfs.SectorSize(2048))
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	defer os.Remove(tmp)
	// diskfs creates it 0666 less the umask; it carries the provisioning
	// commands, which config.json keeps 0600.
	if err := os.Chmod(tmp, 0o600); err != nil {
		d.Close()
		return err
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: label, WorkDir: work})
	if err != nil {
		d.Close()
		return fmt.Errorf("create the ISO file system: %w", err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, err := fs.OpenFile("/"+n, os.O_CREATE|os.O_RDWR)
		if err != nil {
			d.Close()
			return fmt.Errorf("ISO %s: %w", n, err)
		}
		if _, err := f.Write(files[n]); err != nil {
			d.Close()
			return fmt.Errorf("ISO %s: %w", n, err)
		}
		f.Close()
	}
	iso, ok := fs.(*iso9660.FileSystem)
	if !ok {
		d.Close()
		return fmt.Errorf("not an ISO 9660 file system")
	}
	if err := iso.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: label}); err != nil {
		d.Close()
		return fmt.Errorf("finalize the ISO: %w", err)
	}
	if err := d.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
