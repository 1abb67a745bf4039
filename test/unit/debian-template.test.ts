import { expect } from 'chai';
import { distroRecipe, distroTargets, hostRelease, recipeKey } from '../../agent/debian-template.ts';
import { SkyError } from '../../base/errors.ts';

const DEBIAN = hostRelease('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n');
const UBUNTU = hostRelease('NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n');

describe('debian-12 template recipe', () => {
  it('should read the host release from os-release', () => {
    expect(UBUNTU).to.deep.equal({ id: 'ubuntu', versionId: '24.04', codename: 'noble' });
  });

  it('should offer the host\'s own Ubuntu release only on that Ubuntu host', () => {
    expect(distroTargets(DEBIAN)).to.deep.equal(['debian-12', 'debian-13']);
    expect(distroTargets(UBUNTU)).to.include('ubuntu-24.04');
  });

  it('should refuse an unknown recipe with a 4xx naming the field and the choices', async () => {
    const err = await distroRecipe('ubuntu-24.04', {}, DEBIAN).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(SkyError);
    expect((err as SkyError).status).to.equal(422);
    expect((err as SkyError).message).to.include('debian-12');
  });

  it('should make a serial template that reads only the NoCloud seed, on the whole disk, with a login on ttyS0', async () => {
    const r = await distroRecipe('debian-12', {}, DEBIAN);
    expect(r.suite).to.equal('bookworm');
    expect(r.cmdline).to.equal('root=/dev/vda rw console=ttyS0');
    expect(r.packages).to.include.members(['linux-image-cloud-amd64', 'openssh-server', 'cloud-init', 'systemd-sysv']);
    expect(r.files['/etc/cloud/cloud.cfg.d/90-skyhost.cfg']).to.include('datasource_list: [NoCloud, None]').and.include('resize_rootfs: true');
    expect(r.enable).to.include.members(['skyhost-serial-login.service', 'systemd-networkd.service']);
    expect(r.files['/etc/systemd/system/skyhost-serial-login.service']).to.include('ttyS0');
    expect(r.desktop).to.equal(false);
  });

  it('should make the desktop with a graphical kernel, XFCE and LightDM logging in by itself', async () => {
    const r = await distroRecipe('debian-12', { desktop: true }, DEBIAN);
    expect(r.packages).to.include.members(['linux-image-amd64', 'xfce4', 'lightdm']);
    expect(r.files['/etc/lightdm/lightdm.conf.d/50-skyhost.conf']).to.include('autologin-user=debian');
    expect(r.cmdline).to.include('console=tty0');
    expect(r.minMemoryMiB).to.be.at.least(1024);
  });

  it('should key the cache on what decides the image, and on nothing else', async () => {
    const a = await distroRecipe('debian-12', {}, DEBIAN);
    const b = await distroRecipe('debian-12', {}, DEBIAN);
    expect(recipeKey(a)).to.equal(recipeKey(b));
    expect(recipeKey(a)).to.match(/^debian-bookworm-[0-9a-f]{16}$/);
    expect(recipeKey({ ...a, packages: [...a.packages, 'git'] })).to.not.equal(recipeKey(a));
    expect(recipeKey({ ...a, mirrors: [{ name: 'x', text: 'deb http://mirror.school.lan/debian bookworm main' }] })).to.not.equal(recipeKey(a));
    expect(recipeKey({ ...a, target: 'other-name', cmdline: 'root=/dev/vda quiet' })).to.equal(recipeKey(a));
    expect(recipeKey(await distroRecipe('debian-12', { desktop: true }, DEBIAN))).to.match(/^debian-bookworm-desktop-/);
  });
});
