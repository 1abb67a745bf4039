// Group `iso`: remastering an Ubuntu ISO vs a plain copy of the same ISO.
import { pendingGroup } from './group.ts';

export const isoGroup = pendingGroup('iso', [
  ['iso.remaster_s', 's'],
  ['iso.copy_s', 's'],
], 'not measured yet: needs `skyhost iso build` (the bootstrapper)');
