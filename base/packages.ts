// The Debian/Ubuntu packages every SkyHost host needs: `skyhost host setup` installs them, and the
// controller's install script (/install.sh) installs them on a PC that joins without the USB stick.
export const HOST_PACKAGES = [
  'libvirt-daemon-system',
  'libvirt-clients',
  'qemu-system-x86',
  'qemu-utils',
  'xorriso',
  'dnsmasq-base', // DHCP on libvirt's NAT network
  'iptables', // NAT rules of libvirt's network
] as const;
