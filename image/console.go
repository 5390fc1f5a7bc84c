package image

// grubConsoleDropIn names the virtio console (hvc0) as a kernel console for
// guests booted through grub, as the Ubuntu cloud image is. Under
// Virtualization.framework hvc0 is the only console, and serial.log, where
// hostd looks for a kernel panic, is all it writes; the cloud image's
// command line names only tty1 and the UART. hvc0 goes first: the console
// named last is the one /dev/console opens, and it stays the UART that
// QEMU's serial.log is made of (QEMU's guest has no hvc0; an entry for a
// console that never appears is ignored). A command line naming no console
// is left alone, so the kernel's own choice (ACPI SPCR, the VT) stands.
const grubConsoleDropIn = `# cowork: the kernel also writes to the virtio console (hvc0), which is
# serial.log under Virtualization.framework; named first, so that the
# console named last stays /dev/console.
case " ${GRUB_CMDLINE_LINUX_DEFAULT:-} " in
*" console=hvc0 "*) ;;
*" console="*) GRUB_CMDLINE_LINUX_DEFAULT="console=hvc0 $GRUB_CMDLINE_LINUX_DEFAULT" ;;
esac
`

// grubConsoleScript installs grubConsoleDropIn into dir and regenerates
// grub's configuration, once; later boots then log to hvc0 (the first boot
// has already passed grub). It runs in bootcmd after installAgentScript,
// whose `set -e` it inherits, and never fails the boot: a guest without
// grub (a direct kernel boot) is skipped, and a failed update-grub only
// removes the drop-in (so the next boot tries again) and says so.
func grubConsoleScript(dir string) string {
	f := dir + "/90-cowork-console.cfg"
	return `cowork_grub_console() {
  command -v update-grub >/dev/null 2>&1 || return 0
  [ -e ` + f + ` ] && return 0
  mkdir -p ` + dir + ` && cat > ` + f + ` <<'GRUB' && update-grub && return 0
` + grubConsoleDropIn + `GRUB
  rm -f ` + f + `
  echo "cowork: could not add console=hvc0 to grub's kernel command line; the guest's kernel messages will be missing from serial.log under Virtualization.framework" >&2
}
cowork_grub_console
`
}
