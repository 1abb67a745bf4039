// The recipes the controller offers for a build: Debian's everywhere, and an Ubuntu controller's own
// release (the list `skyhost template build` itself accepts on that machine).
import { expect } from 'chai';
import { distroTargets, hostRelease } from '../../agent/debian-template.ts';
import { buildRecipes } from '../../server/templates/builds.ts';

describe('template build recipes offered by the controller', () => {
  it('offers debian-12 and debian-13 on Debian, and on a machine without an os-release', () => {
    expect(buildRecipes('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')).to.deep.equal(['debian-12', 'debian-13']);
    expect(buildRecipes('')).to.deep.equal(['debian-12', 'debian-13']);
  });

  it('adds the Ubuntu release of an Ubuntu controller, and no other', () => {
    const noble = 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n';
    expect(buildRecipes(noble)).to.deep.equal(['debian-12', 'debian-13', 'ubuntu-24.04']);
    // without a codename the builder has no suite to ask apt for
    expect(buildRecipes('ID=ubuntu\nVERSION_ID="24.04"\n')).to.deep.equal(['debian-12', 'debian-13']);
  });

  it('offers exactly what the builder itself accepts, on Debian and on Ubuntu (the controller may not import it)', () => {
    for (const text of ['ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n', 'ID=ubuntu\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\n', '']) {
      expect(buildRecipes(text), text).to.deep.equal(distroTargets(hostRelease(text)));
    }
  });
});
