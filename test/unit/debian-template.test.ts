import { expect } from 'chai';
import { distroRecipe, distroTargets, hostRelease, recipeKey } from '../../agent/debian-template.ts';
import { SkyError } from '../../base/errors.ts';
import { desktopOnScreen, readScreenshot, toPng, type Picture } from '../../bench/desktop.ts';

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

  it('should build an Ubuntu host\'s release as user ubuntu with the virtual kernel, from main and universe with the fixes', async () => {
    const r = await distroRecipe('ubuntu-24.04', {}, UBUNTU);
    expect(r).to.deep.include({ distro: 'ubuntu', suite: 'noble', user: 'ubuntu' });
    expect(r.packages).to.include.members(['linux-image-virtual', 'openssh-server', 'cloud-init']);
    expect(r.files['/etc/cloud/cloud.cfg.d/90-skyhost.cfg']).to.include('key-only login as ubuntu');
    // this Debian PC has no noble sources of its own: Ubuntu's archive, the release and its -updates and -security pockets
    expect(r.mirrors.map((m) => m.text).join('')).to.equal([
      'deb http://archive.ubuntu.com/ubuntu noble main universe',
      'deb http://archive.ubuntu.com/ubuntu noble-updates main universe',
      'deb http://archive.ubuntu.com/ubuntu noble-security main universe',
    ].map((l) => `${l}\n`).join(''));
    expect(recipeKey(r)).to.match(/^ubuntu-noble-[0-9a-f]{16}$/);
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

  it('should let the user at the desktop shut it down: polkitd answers logind (bookworm and noble name it so)', async () => {
    for (const [target, host] of [['debian-12', DEBIAN], ['ubuntu-24.04', UBUNTU]] as const) {
      expect((await distroRecipe(target, { desktop: true }, host)).packages, target).to.include('polkitd');
      expect((await distroRecipe(target, {}, host)).packages, target).to.not.include('polkitd');
    }
  });

  it('should keep what made the desktop show under TCG: X\'s modesetting driver, LightDM enabled after cloud-init, the xfce session', async () => {
    const r = await distroRecipe('debian-12', { desktop: true }, DEBIAN);
    // xserver-xorg-core brings modesetting, the driver for QEMU's VGA (bochs-drm); fbdev and vesa are not needed
    expect(r.packages).to.include.members(['xserver-xorg-core', 'xserver-xorg-input-libinput', 'dbus-x11']);
    expect(r.enable).to.include('lightdm.service');
    expect(r.files['/etc/lightdm/lightdm.conf.d/50-skyhost.conf']).to.include('autologin-session=xfce');
    // the autologin user exists only once cloud-init has made it
    expect(r.files['/etc/systemd/system/lightdm.service.d/skyhost.conf']).to.include('After=cloud-init.service');
    const serial = await distroRecipe('debian-12', {}, DEBIAN);
    expect(serial.packages).to.not.include('lightdm');
    expect(serial.enable).to.not.include('lightdm.service');
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

describe('the desktop template on the screen (bench/desktop.ts)', () => {
  const BACKDROP = 0x152233;
  const PANEL = 0xf6f5f4;
  /** A 640x400 screen like XFCE's: backdrop, a top panel of 26 rows, an icon of many colours, a dock centred at the bottom. */
  function screen(o: { panel?: boolean; dock?: boolean; icon?: boolean } = {}): Picture {
    const width = 640;
    const height = 400;
    const rgb = Buffer.alloc(width * height * 3);
    const put = (x: number, y: number, c: number) => rgb.set([c >> 16, (c >> 8) & 0xff, c & 0xff], (y * width + x) * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let c = BACKDROP;
        if (o.panel !== false && y < 26) c = PANEL;
        if (o.dock !== false && y >= height - 44 && x >= 260 && x < 380) c = 0xdddddd;
        if (o.icon !== false && x >= 20 && x < 52 && y >= 40 && y < 72) c = ((x - 20) * 8 << 16) | ((y - 40) * 8 << 8) | 0x80;
        put(x, y, c);
      }
    }
    return { width, height, rgb };
  }

  it('should see the desktop when the panel, the backdrop, the dock and many colours are there', () => {
    const v = desktopOnScreen(screen());
    expect(v.desktop, v.why).to.equal(true);
    expect(v.panelRows).to.equal(26);
    expect(v.colours).to.be.at.least(1024);
  });

  it('should not take a screen without the dock (a LightDM greeter) or without the top panel for the desktop', () => {
    const greeter = desktopOnScreen(screen({ dock: false }));
    expect(greeter.desktop).to.equal(false);
    expect(greeter.why).to.include('no dock');
    const noPanel = desktopOnScreen(screen({ panel: false }));
    expect(noPanel.desktop).to.equal(false);
    expect(noPanel.why).to.include('no top panel');
  });

  it('should not take a screen of few colours (a text console, the bare X screen) for the desktop', () => {
    const v = desktopOnScreen(screen({ icon: false }));
    expect(v.desktop).to.equal(false);
    expect(v.why).to.include('text or blank screen');
    const black: Picture = { width: 720, height: 400, rgb: Buffer.alloc(720 * 400 * 3) };
    expect(desktopOnScreen(black).desktop).to.equal(false);
  });

  it('should read the PNG it writes and a PPM, as virsh screenshot writes either', () => {
    const p = screen();
    expect(readScreenshot(toPng(p)).rgb.equals(p.rgb)).to.equal(true);
    const ppm = Buffer.concat([Buffer.from(`P6\n# QEMU\n${p.width} ${p.height}\n255\n`), p.rgb]);
    expect(readScreenshot(ppm)).to.deep.include({ width: 640, height: 400 });
    expect(() => readScreenshot(Buffer.from('GIF89a'))).to.throw(/not a P6 PPM|header ends early/);
  });
});
