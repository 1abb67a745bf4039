// The debian-12 template of the suite: `skyhost template build debian-12`'s recipe, built once per
// machine and then taken from its cache (~/.cache/skyhost/templates/KEY, outside the checkout, so a
// fresh clone on the same machine reuses it). A cold build downloads and installs ~300 packages.
import { buildDistroImage, distroRecipe, type BuiltImage, type DistroRecipe } from '../../agent/debian-template.ts';

export interface DebianImage extends BuiltImage {
  recipe: DistroRecipe;
}

/** Builds (or reuses) the debian-12 image; prints the stages when it really builds. */
export async function buildDebianImage(): Promise<DebianImage> {
  const recipe = await distroRecipe('debian-12');
  const built = await buildDistroImage(recipe, {
    onProgress: (stage, detail) => process.stderr.write(`      debian-12 image: ${stage}: ${detail}\n`),
  });
  return { ...built, recipe };
}
