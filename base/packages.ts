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
  'mmdebstrap', // `skyhost template build debian-12`: a Debian/Ubuntu image from this host's apt sources
  'e2fsprogs', // mkfs.ext4 -d: that image's file system, made without mounting anything
] as const;
