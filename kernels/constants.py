"""Numeric constants shared by the Triton kernels and the torch and numba code
(`hmr_fast.ops.reference`, `hmr_fast.ops.skeleton_cpu`): their one source.

Pure Python, no imports: the kernels import only triton, and ahead-of-time compiles run in
environments without torch.
"""

# smplx adds this to every axis-angle component before taking the norm; matching it keeps
# vertices identical to smplx near zero rotation.
SMPLX_ANGLE_EPS = 1e-8
# Below this squared angle, sin(a)/a and (1 - cos a)/a^2 use their Taylor series, which keeps
# the gradient finite at exactly zero rotation.
SMALL_ANGLE_SQ = 1e-6
