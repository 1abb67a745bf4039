// The registry of bench groups, in the order they run. Each group is its own file in bench/; to add or
// replace one, change only its file and, for a new group, one line here.
import type { Group } from './group.ts';
import { binaryGroup } from './binary.ts';
import { cloneGroup } from './clone.ts';
import { schedulerGroup } from './scheduler.ts';
import { controllerGroup } from './controller.ts';
import { agentGroup } from './agent.ts';
import { vmGroup } from './vm.ts';
import { discoveryGroup } from './discovery.ts';
import { isoGroup } from './iso.ts';
import { usbGroup } from './usb.ts';
import { templateGroup } from './template.ts';
import { desktopGroup } from './desktop.ts';
import { ubuntuGroup } from './ubuntu.ts';
import { withDistribution } from './distribute.ts';
import { classGroup } from './class.ts';

export const GROUPS: readonly Group[] = [
  schedulerGroup,
  binaryGroup,
  cloneGroup,
  controllerGroup,
  agentGroup,
  vmGroup,
  discoveryGroup,
  isoGroup,
  usbGroup,
  // one `template` group: the build figures and the distribution figures (bench/distribute.ts)
  withDistribution(templateGroup),
  // the XFCE template: a build and a first boot under TCG to the desktop (about 30 min on 2 busy cores)
  desktopGroup,
  // the ubuntu-24.04 recipe built from Ubuntu's archive and logged into over SSH under TCG (only where that archive is reachable)
  ubuntuGroup,
  classGroup,
];
