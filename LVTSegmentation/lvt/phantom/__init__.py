"""Synthetic contrast-enhanced abdominal CT with exact ground truth: liver, intrahepatic vessels, tumors.

Every structure is an implicit shape, an approximate signed distance in millimetres (negative inside),
defined in LPS patient space and evaluated at the LPS centres of the voxels. All random anatomy comes
from the seed alone, never from the grid, so one seed rendered on two grids (oblique, flipped,
anisotropic, cropped) is the same patient; only the image noise differs. The same seed in another
contrast phase is also the same patient, with other enhancement.

The abdomen is centred at the LPS origin: +x is the patient's left, +y posterior, +z superior.
HU values follow the table in METHOD.md ("Making phantoms look like CT"). Edges are anti-aliased
over one voxel and the image is blurred by about one voxel before noise (partial volume); the truth
masks are the exact shapes at the voxel centres.

Only numpy and scipy are used, so phantoms can be made on a training node without SimpleITK or torch.
"""

from lvt.phantom.config import LesionTruth, Phantom, PhantomConfig
from lvt.phantom.scanner import make_phantom

__all__ = ["LesionTruth", "Phantom", "PhantomConfig", "make_phantom"]
