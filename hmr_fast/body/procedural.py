"""A procedural human mannequin with SMPL's exact topology sizes.

The licensed SMPL weights cannot ship with the package, so `SMPL()` without a model file uses
this stand-in: a neutral T-posed mannequin built deterministically in code, in SMPL's frame
(y up, facing +z, the body's left side at +x, metres) with 6890 vertices, 13776 triangles
(one closed genus-0 surface), SMPL's 24-joint kinematic tree, 10 shape directions, 207 pose
correctives, a sparse joint regressor, 4-bone skinning weights and HMR's 19-keypoint
`cocoplus_regressor`. smplx's 21 vertex joints (nose, eyes, ears, toes, heels, fingertips) sit
at the anatomically right places under their usual vertex ids.

Pipeline: a smooth signed distance field (smooth union of ellipsoids, tapered capsules and
rounded boxes around a designed skeleton) -> marching tetrahedra (always a closed manifold)
-> shortest-edge-first collapses that keep the surface manifold, down to exactly 6890
vertices (each collapse on a closed mesh removes 1 vertex and 2 faces, so F = 2V - 4 holds)
-> Delaunay edge flips and tangential relaxation projected back onto the field -> landmark
renumbering -> skinning, regressors and blend shapes derived from the skeleton.
Typical build: ~3 s on 2 cores; the result is cached (memory and disk).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from hmr_fast.body import constants as C

# Keys the on-disk cache together with a digest of this file (any code edit rebuilds).
VERSION = "procedural-body-v1"

_H = 0.0095  # marching-tetrahedra grid step (m): resolves the 2.6 cm thick hands
_BBOX_LO = np.array([-0.95, -1.215, -0.15])
_BBOX_HI = np.array([0.95, 0.53, 0.22])
_SOLE_Y = -1.185

# ---------------------------------------------------------------------------------------------
# Skeleton (rest joints, close to SMPL's neutral rest joints). Left side is +x; right mirrors.
# ---------------------------------------------------------------------------------------------
_CENTRE_JOINTS = {
    "pelvis": (0.0, -0.24, 0.03),
    "spine1": (0.0, -0.125, 0.0),
    "spine2": (0.0, 0.01, 0.005),
    "spine3": (0.0, 0.065, 0.025),
    "neck": (0.0, 0.27, 0.0),
    "head": (0.0, 0.33, 0.05),
}
_LEFT_JOINTS = {
    "hip": (0.065, -0.33, 0.02),
    "knee": (0.105, -0.70, 0.015),
    "ankle": (0.09, -1.10, -0.03),
    "foot": (0.115, -1.16, 0.09),
    "collar": (0.08, 0.185, -0.005),
    "shoulder": (0.19, 0.23, -0.01),
    "elbow": (0.45, 0.22, -0.03),
    "wrist": (0.71, 0.22, -0.03),
    "hand": (0.79, 0.215, -0.045),
}
# Where each leaf bone ends (head top, toe tip, fingertip), for skinning and shape fields.
_HEAD_TOP = (0.0, 0.50, 0.01)
_LEFT_TOE_TIP = (0.115, -1.165, 0.175)
_LEFT_FINGER_TIP = (0.905, 0.21, -0.04)


def design_joints() -> np.ndarray:
    """The designed rest joint locations, (24, 3) float64, in constants.JOINT_NAMES order."""
    out = np.zeros((C.NUM_JOINTS, 3))
    for j, name in enumerate(C.JOINT_NAMES):
        if name in _CENTRE_JOINTS:
            out[j] = _CENTRE_JOINTS[name]
            continue
        side, part = name.split("_", 1)
        x, y, z = _LEFT_JOINTS[part]
        out[j] = (x if side == "left" else -x, y, z)
    return out


# ---------------------------------------------------------------------------------------------
# Signed distance field of the mannequin
# ---------------------------------------------------------------------------------------------
def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum; equals min(a, b) wherever |a - b| >= k."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _combine(d: np.ndarray, part: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of a part into the field; a negative k carves it out (smooth subtraction)."""
    return _smin(d, part, k) if k >= 0 else -_smin(-d, part, -k)


def _ellipsoid(c, r):
    c, r = np.asarray(c, float), np.asarray(r, float)

    def f(p):
        q = (p - c) / r
        k0 = np.linalg.norm(q, axis=1)
        k1 = np.linalg.norm(q / r, axis=1)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)

    return f, c - r, c + r


def _cone(a, b, ra, rb):
    """Capsule from a to b whose radius goes linearly from ra to rb (a 'round cone')."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    ll = float(ab @ ab)

    def f(p):
        t = np.clip((p - a) @ ab / ll, 0.0, 1.0)
        return np.linalg.norm(p - a - t[:, None] * ab, axis=1) - (ra + (rb - ra) * t)

    rmax = max(ra, rb)
    return f, np.minimum(a, b) - rmax, np.maximum(a, b) + rmax


def _rbox(c, half, r):
    """Axis-aligned box with rounded edges (radius r), half extents `half` (incl. rounding)."""
    c, half = np.asarray(c, float), np.asarray(half, float)

    def f(p):
        q = np.abs(p - c) - (half - r)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        return outside + np.minimum(q.max(axis=1), 0.0) - r

    return f, c - half, c + half


def _torso_parts():
    """Central parts (evaluated at the true point): ((sdf, lo, hi), blend k); k < 0 carves."""
    return [
        (_ellipsoid((0, 0.10, 0.0), (0.155, 0.16, 0.105)), 0.0),  # chest
        (_ellipsoid((0, 0.135, 0.035), (0.13, 0.09, 0.08)), 0.03),  # pectorals
        (_cone((-0.12, 0.205, -0.02), (0.12, 0.205, -0.02), 0.05, 0.05), 0.05),  # shoulder girdle
        (_ellipsoid((0, -0.06, 0.005), (0.13, 0.14, 0.095)), 0.06),  # waist
        (_ellipsoid((0, -0.235, 0.0), (0.155, 0.115, 0.11)), 0.06),  # pelvis
        (_cone((0, 0.20, -0.015), (0, 0.345, 0.0), 0.055, 0.05), 0.03),  # neck
        (_ellipsoid((0, 0.40, 0.012), (0.078, 0.10, 0.097)), 0.03),  # cranium
        (_ellipsoid((0, 0.345, 0.045), (0.058, 0.055, 0.065)), 0.03),  # jaw
        (_ellipsoid((0, 0.383, 0.112), (0.013, 0.024, 0.02)), 0.012),  # nose
        (_ellipsoid((0, 0.424, 0.088), (0.062, 0.014, 0.022)), 0.02),  # brow ridge
        (_ellipsoid((0, 0.306, 0.088), (0.026, 0.02, 0.02)), 0.02),  # chin
        (_ellipsoid((0.034, 0.407, 0.108), (0.019, 0.012, 0.014)), -0.01),  # eye sockets
        (_ellipsoid((-0.034, 0.407, 0.108), (0.019, 0.012, 0.014)), -0.01),
        (_ellipsoid((0, 0.345, 0.112), (0.02, 0.004, 0.01)), -0.006),  # mouth
    ]


def _side_parts():
    """Left-side parts, evaluated at (|x|, y, z) so the field is exactly mirror-symmetric."""
    jl = _LEFT_JOINTS
    sh, el, wr = jl["shoulder"], jl["elbow"], jl["wrist"]
    kn, an = jl["knee"], jl["ankle"]
    return [
        (_ellipsoid((0.07, -0.30, -0.045), (0.075, 0.085, 0.07)), 0.04),  # buttock
        (_ellipsoid((0.175, 0.215, -0.012), (0.06, 0.055, 0.055)), 0.04),  # deltoid
        (_cone(sh, el, 0.047, 0.036), 0.03),  # upper arm
        (_cone(el, wr, 0.036, 0.026), 0.02),  # forearm
        (_ellipsoid((0.53, 0.222, -0.03), (0.10, 0.036, 0.039)), 0.02),  # forearm muscle
        (_rbox((0.765, 0.215, -0.038), (0.05, 0.0145, 0.041), 0.013), 0.02),  # palm
        (_ellipsoid((0.845, 0.212, -0.04), (0.065, 0.0125, 0.038)), 0.02),  # fingers (mitten)
        (_cone((0.735, 0.21, -0.005), (0.80, 0.203, 0.045), 0.014, 0.011), 0.015),  # thumb
        (_cone((0.078, -0.30, 0.01), kn, 0.085, 0.052), 0.04),  # thigh
        (_cone(kn, an, 0.05, 0.034), 0.02),  # shin
        (_ellipsoid((0.10, -0.84, -0.025), (0.048, 0.12, 0.052)), 0.03),  # calf
        (_ellipsoid((0.087, -1.15, -0.045), (0.034, 0.04, 0.042)), 0.02),  # heel
        (_ellipsoid((0.10, -1.145, 0.045), (0.043, 0.042, 0.10)), 0.03),  # mid-foot
        (_ellipsoid((0.113, -1.168, 0.12), (0.047, 0.02, 0.058)), 0.02),  # toes
        (_ellipsoid((0.078, 0.39, -0.005), (0.014, 0.03, 0.02)), 0.01),  # ear
    ]


_MARGIN = 0.08  # bbox margin >= every blend radius, so culled parts never touch the zero set


@functools.lru_cache(maxsize=1)
def _parts():
    return _torso_parts(), _side_parts()


def sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance (approximate, negative inside) of the mannequin at points (N, 3)."""
    p = np.asarray(points, dtype=np.float64)
    centre, side = _parts()
    folded = p.copy()
    folded[:, 0] = np.abs(folded[:, 0])
    d = np.full(len(p), 1.0)
    for parts, q in ((centre, p), (side, folded)):
        for (f, lo, hi), k in parts:
            lo, hi = lo - _MARGIN, hi + _MARGIN
            idx = np.nonzero((q[:, 1] > lo[1]) & (q[:, 1] < hi[1]))[0]
            qi = q[idx]
            idx = idx[
                (qi[:, 0] > lo[0]) & (qi[:, 0] < hi[0]) & (qi[:, 2] > lo[2]) & (qi[:, 2] < hi[2])
            ]
            if len(idx):
                d[idx] = _combine(d[idx], f(q[idx]), k)
    # flat soles: smooth intersection with the half-space above the floor
    return -_smin(-d, p[:, 1] - _SOLE_Y, 0.01)


def _sdf_and_grad(p: np.ndarray, eps: float = 1e-5):
    """`sdf` and its forward-difference gradient at points (N, 3) -> ((N,), (N, 3))."""
    n = len(p)
    shifted = np.concatenate([p, p + [eps, 0, 0], p + [0, eps, 0], p + [0, 0, eps]])
    d = sdf(shifted).reshape(4, n)
    return d[0], (d[1:] - d[0]).T / eps


def _project(p: np.ndarray, iters: int = 2):
    """Newton steps onto the zero set of `sdf`: (N, 3) -> (points (N, 3), gradients (N, 3))."""
    p = p.copy()
    for _ in range(iters):
        d, g = _sdf_and_grad(p)
        p -= (d / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
    return p, g


# ---------------------------------------------------------------------------------------------
# Marching tetrahedra (Kuhn subdivision: the level set is always a closed 2-manifold)
# ---------------------------------------------------------------------------------------------
_OFFSETS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)])


def _tet_table():
    """For each of the 16 sign cases of a tet: list of triangles as tet-edge pairs (v0, v1)."""
    table = []
    for case in range(16):
        inside = [v for v in range(4) if case >> v & 1]
        outside = [v for v in range(4) if not case >> v & 1]
        if len(inside) in (0, 4):
            table.append([])
        elif len(inside) in (1, 3):
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            table.append([[(lone, o) for o in others]])
        else:
            a, b = inside
            c, d = outside
            table.append([[(a, c), (a, d), (b, d)], [(a, c), (b, d), (b, c)]])
    return table


def marching_tetrahedra(values: np.ndarray, origin: np.ndarray, h: float):
    """Zero level set of a grid of values (nx, ny, nz) -> (verts (V, 3), faces (F, 3)).

    Faces are oriented with normals pointing towards positive values (outwards for an SDF).
    """
    nx, ny, nz = values.shape
    val = values.ravel()
    inside = val < 0
    cube = np.stack(
        np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), np.arange(nz - 1), indexing="ij"), -1
    ).reshape(-1, 3)
    corners = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    cidx = ((cube[:, None, 0] + corners[:, 0]) * ny + cube[:, None, 1] + corners[:, 1]) * nz + (
        cube[:, None, 2] + corners[:, 2]
    )
    ins = inside[cidx]
    keep = ins.any(1) & ~ins.all(1)
    cube = cube[keep]
    # six Kuhn tets per cube: 000 -> e_a -> e_a + e_b -> 111
    tets = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        path = [np.zeros(3, int)]
        for ax in perm:
            nxt = path[-1].copy()
            nxt[ax] = 1
            path.append(nxt)
        tets.append(np.stack(path))
    tets = np.stack(tets)  # (6, 4, 3)
    tv = cube[:, None, None, :] + tets[None]  # (Nc, 6, 4, 3)
    tv = tv.reshape(-1, 4, 3)
    tidx = (tv[..., 0] * ny + tv[..., 1]) * nz + tv[..., 2]
    tin = inside[tidx]
    case = tin[:, 0] * 1 + tin[:, 1] * 2 + tin[:, 2] * 4 + tin[:, 3] * 8
    table = _tet_table()
    tri_tet, tri_edges = [], []
    for c in range(1, 15):
        sel = np.nonzero(case == c)[0]
        for tri in table[c]:
            tri_tet.append(sel)
            tri_edges.append(np.broadcast_to(np.array(tri), (len(sel), 3, 2)))
    tri_tet = np.concatenate(tri_tet)
    tri_edges = np.concatenate(tri_edges)  # (T, 3, 2) local tet vertices
    p0 = tv[tri_tet[:, None], tri_edges[..., 0]]  # (T, 3, 3) lattice coords
    p1 = tv[tri_tet[:, None], tri_edges[..., 1]]
    lo = np.where((p0 <= p1).all(-1, keepdims=True), p0, p1)
    hi = np.where((p0 <= p1).all(-1, keepdims=True), p1, p0)
    off = hi - lo
    dir_id = (off[..., None, :] == _OFFSETS).all(-1).argmax(-1)
    lidx = (lo[..., 0] * ny + lo[..., 1]) * nz + lo[..., 2]
    edge_key = lidx * 7 + dir_id
    keys, inv = np.unique(edge_key.ravel(), return_inverse=True)
    faces = inv.reshape(-1, 3)
    # vertex positions on the unique lattice edges
    el = keys // 7
    eo = _OFFSETS[keys % 7]
    la = np.stack([el // (ny * nz), el // nz % ny, el % nz], -1)
    lb = la + eo
    va = val[el]
    vb = val[(lb[:, 0] * ny + lb[:, 1]) * nz + lb[:, 2]]
    t = va / (va - vb)
    verts = origin + h * (la + t[:, None] * eo)
    # orient: normal towards the outside vertices of the tet
    tri_pos = verts[faces]
    n = np.cross(tri_pos[:, 1] - tri_pos[:, 0], tri_pos[:, 2] - tri_pos[:, 0])
    tin_t = tin[tri_tet].astype(float)
    tpos = tv[tri_tet].astype(float)
    cin = (tpos * tin_t[..., None]).sum(1) / tin_t.sum(1, keepdims=True)
    cout = (tpos * (1 - tin_t)[..., None]).sum(1) / (1 - tin_t).sum(1, keepdims=True)
    flip = (n * (cout - cin)).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    return verts, faces


def _grid_sdf():
    """SDF sampled on the build grid -> (values (nx, ny, nz), origin (3,)).

    Same field as `sdf`, evaluated part by part on the grid blocks their boxes cover.
    """
    n = np.ceil((_BBOX_HI - _BBOX_LO) / _H).astype(int) + 1
    axes = [_BBOX_LO[a] + _H * np.arange(n[a]) for a in range(3)]
    d = np.full(tuple(n), 1.0)
    centre, side = _parts()

    x0 = np.searchsorted(axes[0], 0.0, side="left")

    def block(lo, hi, mirror, side_part):
        sl = []
        for a in range(3):
            lo_a, hi_a = (-hi[0], -lo[0]) if (mirror and a == 0) else (lo[a], hi[a])
            i0 = np.searchsorted(axes[a], lo_a - _MARGIN, side="right")
            i1 = np.searchsorted(axes[a], hi_a + _MARGIN, side="left")
            if a == 0 and side_part:  # folded parts: x >= 0 unmirrored, x < 0 mirrored
                i0, i1 = (i0, min(i1, x0)) if mirror else (max(i0, x0), i1)
            sl.append(slice(i0, i1))
        return tuple(sl)

    for parts, mirrors in ((centre, (False,)), (side, (False, True))):
        for (f, lo, hi), k in parts:
            for mirror in mirrors:
                sl = block(lo, hi, mirror, parts is side)
                if any(s_.start >= s_.stop for s_ in sl):
                    continue
                x, y, z = np.meshgrid(axes[0][sl[0]], axes[1][sl[1]], axes[2][sl[2]], indexing="ij")
                q = np.stack([np.abs(x) if mirror else x, y, z], -1).reshape(-1, 3)
                blk = d[sl]
                d[sl] = _combine(blk, f(q).reshape(blk.shape), k)
    d = -_smin(-d, (axes[1] - _SOLE_Y)[None, :, None], 0.01)
    # no exact zeros: the level set must never pass through a lattice point
    d[np.abs(d) < 1e-9] = 1e-9
    return d, _BBOX_LO.copy()


# ---------------------------------------------------------------------------------------------
# Mesh helpers
# ---------------------------------------------------------------------------------------------
def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Undirected edges (E, 2), a < b, of a closed oriented manifold's triangles (F, 3).

    Each edge is the half-edge a -> b of exactly one face and b -> a of another.
    """
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return e[e[:, 0] < e[:, 1]]


def _adjacency(edges: np.ndarray, n: int) -> sp.csr_matrix:
    i = np.concatenate([edges[:, 0], edges[:, 1]])
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    return sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3)."""
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def _sizing(p: np.ndarray) -> np.ndarray:
    """Relative target edge length at points (N, 3): finer on the face, hands and feet."""

    def ramp(x, a, b):
        return np.clip((x - a) / (b - a), 0.0, 1.0)

    head = ramp(p[:, 1], 0.28, 0.33) * (1.0 - 0.25 * ramp(-p[:, 2], -0.02, 0.04))
    hand = ramp(np.abs(p[:, 0]), 0.66, 0.72)
    foot = ramp(-p[:, 1], 1.02, 1.08)
    return 1.0 - 0.45 * head - 0.45 * hand - 0.35 * foot


def _decimate(verts: np.ndarray, faces: np.ndarray, target: int):
    """Collapse the shortest (sizing-relative) edges of a closed manifold mesh down to exactly
    `target` vertices, keeping it manifold (link condition) and fold-free.

    Every round collapses an independent set of edges (no endpoint of one lies in the closed
    one-ring of another's endpoints), so the collapses of a round cannot interact.
    """
    v, f = verts.copy(), faces.copy()
    while len(v) > target:
        n = len(v)
        e = mesh_edges(f)
        a, b = e[:, 0], e[:, 1]
        mid = 0.5 * (v[a] + v[b])
        cost = np.linalg.norm(v[a] - v[b], axis=1) / _sizing(mid)
        cand = np.nonzero(cost <= np.quantile(cost, 0.35))[0]
        adj = _adjacency(e, n)
        common = np.asarray(adj[a[cand]].multiply(adj[b[cand]]).sum(1)).ravel()
        cand = cand[common == 2]  # link condition: the collapse keeps the surface manifold
        # Luby-style independent set with seeded random priorities (cost ranks would pick only
        # the few local minima of a smooth cost field); the quantile keeps shortest-first order.
        rng = np.random.default_rng(n)
        order = cand[np.argsort(cost[cand], kind="stable")]
        rank = rng.permutation(len(order)).astype(np.int64)
        ca, cb = a[order], b[order]
        big = np.iinfo(np.int64).max
        m1 = np.full(n, big)
        np.minimum.at(m1, ca, rank)
        np.minimum.at(m1, cb, rank)
        m2 = m1.copy()
        np.minimum.at(m2, a, m1[b])
        np.minimum.at(m2, b, m1[a])
        sel = (rank == m2[ca]) & (rank == m2[cb])
        sa, sb = ca[sel], cb[sel]
        p, gp = _project(0.5 * (v[sa] + v[sb]))
        # reject collapses that fold a surviving triangle over
        emap = np.full(n, -1)
        emap[sa] = np.arange(len(sa))
        emap[sb] = np.arange(len(sa))
        fe = emap[f]
        hit = (fe >= 0).sum(1)
        ff = np.nonzero(hit == 1)[0]
        eid = fe[ff].max(1)
        tri_old = v[f[ff]]
        tri_new = tri_old.copy()
        corner = np.argmax(fe[ff] >= 0, axis=1)
        tri_new[np.arange(len(ff)), corner] = p[eid]
        n_old = np.cross(tri_old[:, 1] - tri_old[:, 0], tri_old[:, 2] - tri_old[:, 0])
        n_new = np.cross(tri_new[:, 1] - tri_new[:, 0], tri_new[:, 2] - tri_new[:, 0])
        dot = (n_old * n_new).sum(1)
        l_old, l_new = np.linalg.norm(n_old, axis=1), np.linalg.norm(n_new, axis=1)
        sq = ((tri_old - np.roll(tri_old, 1, axis=1)) ** 2).sum((1, 2))
        # sliver triangles from the extraction have no reliable normal: skip their flip test;
        # every new triangle must face the way the field's gradient does
        ok_face = (dot > 0.3 * l_old * l_new) | (l_old < 0.05 * sq)
        g = gp[eid]
        ok_face &= (n_new * g).sum(1) > 0.3 * l_new * np.linalg.norm(g, axis=1)
        ok_face &= l_new > 1e-12
        bad = np.zeros(len(sa), bool)
        bad[eid[~ok_face]] = True
        good = np.nonzero(~bad)[0][: n - target]  # already in increasing cost order
        if len(good) == 0:
            raise RuntimeError("procedural body: decimation stalled")
        sa, sb, p = sa[good], sb[good], p[good]
        v[sa] = p
        remap = np.arange(n)
        remap[sb] = sa
        f = remap[f]
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        keep = np.ones(n, bool)
        keep[sb] = False
        newidx = np.cumsum(keep) - 1
        v, f = v[keep], newidx[f]
        if len(f) != 2 * len(v) - 4:
            raise RuntimeError("procedural body: decimation broke the closed surface")
    return v, f


def _flip_edges(verts: np.ndarray, faces: np.ndarray, passes: int = 4) -> np.ndarray:
    """Delaunay edge flips (removes slivers; the vertex set and F = 2V - 4 are unchanged).

    Edge a-b shared by faces (a, b, c) and (b, a, d) becomes c-d when the angles opposite it
    sum past pi, c-d is not an edge yet and both new faces keep the old orientation.
    """
    f = faces.tolist()
    p = verts.tolist()
    half = {}
    for i, (a, b, c) in enumerate(f):
        half[(a, b)], half[(b, c)], half[(c, a)] = i, i, i

    def sub(u, v):
        return (u[0] - v[0], u[1] - v[1], u[2] - v[2])

    def cross(u, v):
        return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])

    def dot(u, v):
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    def cot(apex, x, y):
        u, v = sub(x, apex), sub(y, apex)
        cr = cross(u, v)
        return dot(u, v) / max(dot(cr, cr) ** 0.5, 1e-30)

    def third(face, a, b):
        for x in face:
            if x != a and x != b:
                return x

    for _ in range(passes):
        flips = 0
        for a, b in sorted(k for k in half if k[0] < k[1]):
            if (a, b) not in half or (b, a) not in half:
                continue
            f1, f2 = half[(a, b)], half[(b, a)]
            c, d = third(f[f1], a, b), third(f[f2], a, b)
            if c == d or (c, d) in half:
                continue
            pa, pb, pc, pd = p[a], p[b], p[c], p[d]
            if cot(pc, pa, pb) + cot(pd, pa, pb) >= -1e-9:
                continue  # already locally Delaunay
            n_old = cross(sub(pb, pa), sub(pc, pa))
            n_old2 = cross(sub(pa, pb), sub(pd, pb))
            n_ref = (n_old[0] + n_old2[0], n_old[1] + n_old2[1], n_old[2] + n_old2[2])
            n1 = cross(sub(pd, pa), sub(pc, pa))
            n2 = cross(sub(pb, pd), sub(pc, pd))
            if dot(n1, n_ref) <= 0 or dot(n2, n_ref) <= 0 or dot(n1, n2) <= 0:
                continue
            f[f1], f[f2] = [a, d, c], [d, b, c]
            del half[(a, b)], half[(b, a)]
            half[(a, d)] = half[(d, c)] = half[(c, a)] = f1
            half[(d, b)] = half[(b, c)] = half[(c, d)] = f2
            flips += 1
        if flips == 0:
            break
    return np.array(f, dtype=faces.dtype)


def _relax(verts: np.ndarray, faces: np.ndarray, iters: int = 6, lam: float = 0.5) -> np.ndarray:
    """Tangential Laplacian smoothing projected back onto the surface (evens out triangles)."""
    v = verts.copy()
    adj = _adjacency(mesh_edges(faces), len(v))
    deg = np.asarray(adj.sum(1)).ravel()
    for _ in range(iters):
        lap = adj @ v / deg[:, None] - v
        nrm = vertex_normals(v, faces)
        lap -= (lap * nrm).sum(1, keepdims=True) * nrm
        v = _project(v + lam * lap)[0]
    return v


# ---------------------------------------------------------------------------------------------
# Landmarks: smplx's vertex joints and HMR's face keypoints get their usual vertex ids
# ---------------------------------------------------------------------------------------------
def _landmark_points() -> dict[str, tuple[float, float, float]]:
    """Designed surface points of smplx's 21 vertex joints (left side +x, right mirrored)."""
    left = {
        "eye": (0.033, 0.41, 0.1),
        "ear": (0.093, 0.39, -0.005),
        "big_toe": (0.09, -1.168, 0.17),
        "small_toe": (0.148, -1.172, 0.155),
        "heel": (0.087, -1.165, -0.088),
        "thumb": (0.809, 0.202, 0.052),
        "index": (0.892, 0.212, -0.013),
        "middle": (0.909, 0.212, -0.031),
        "ring": (0.907, 0.212, -0.05),
        "pinky": (0.89, 0.212, -0.068),
    }
    out = {"nose": (0.0, 0.383, 0.135)}
    for name in C.VERTEX_JOINT_NAMES:
        if name == "nose":
            continue
        side, part = name.split("_", 1)
        x, y, z = left[part]
        out[name] = (x if side == "left" else -x, y, z)
    return out


def _landmark_vertices(verts: np.ndarray) -> np.ndarray:
    """Current index of the vertex nearest each smplx vertex joint, (21,), all distinct."""
    pts = _landmark_points()
    taken: set[int] = set()
    out = []
    for name in C.VERTEX_JOINT_NAMES:
        d = np.linalg.norm(verts - np.asarray(pts[name]), axis=1)
        if name == "nose":  # the most forward point of the face
            d = d - 10.0 * verts[:, 2] * (d < 0.03)
        for i in np.argsort(d, kind="stable"):
            if int(i) not in taken:
                taken.add(int(i))
                out.append(int(i))
                break
    return np.array(out)


def _permute_landmarks(verts: np.ndarray, faces: np.ndarray):
    """Renumber vertices so each landmark vertex gets its smplx id; others keep their order."""
    n = len(verts)
    old = _landmark_vertices(verts)
    new = np.asarray(C.VERTEX_JOINT_IDS)
    new_of_old = np.full(n, -1)
    new_of_old[old] = new
    rest_old = np.setdiff1d(np.arange(n), old)
    rest_new = np.setdiff1d(np.arange(n), new)
    new_of_old[rest_old] = rest_new
    out = np.empty_like(verts)
    out[new_of_old] = verts
    return out, new_of_old[faces]


# ---------------------------------------------------------------------------------------------
# Skinning
# ---------------------------------------------------------------------------------------------
def _bone_segments(joints: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """For each joint, the segments of the body part it rotates (joint -> child / part end)."""
    parents = C.PARENTS
    names = C.JOINT_NAMES
    segs: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(C.NUM_JOINTS)]
    for j in range(1, C.NUM_JOINTS):
        p = parents[j]
        if names[p] not in ("pelvis", "spine3"):
            segs[p].append((joints[p], joints[j]))
    idx = {n: i for i, n in enumerate(names)}
    segs[0] += [(joints[0], joints[idx[n]]) for n in ("left_hip", "right_hip", "spine1")]
    segs[9] += [(joints[9], joints[idx["neck"]])]
    # the upper chest reaches the collars from the top of the sternum, not from spine3
    sternum = np.array([0.0, joints[idx["left_collar"], 1], joints[9, 2]])
    segs[9] += [(sternum, joints[idx[n]]) for n in ("left_collar", "right_collar")]
    # spine2's bone is short: let its part reach up the chest like SMPL's (ties go to spine2)
    segs[6] = [(joints[6], joints[9] + (0.0, 0.05, 0.0))]
    mirror = np.array([-1.0, 1.0, 1.0])
    segs[15] += [
        (joints[15], np.asarray(_HEAD_TOP)),
        (joints[15], np.array([0.0, 0.36, 0.11])),  # face
    ]
    for side, sgn in (("left", np.ones(3)), ("right", mirror)):
        ank, foot = idx[f"{side}_ankle"], idx[f"{side}_foot"]
        hand = idx[f"{side}_hand"]
        segs[ank].append((joints[ank], np.array([0.087, -1.15, -0.06]) * sgn))  # heel
        segs[foot].append((joints[foot], np.asarray(_LEFT_TOE_TIP) * sgn))
        segs[hand].append((joints[hand], np.asarray(_LEFT_FINGER_TIP) * sgn))
        segs[hand].append(
            (np.array([0.74, 0.21, -0.005]) * sgn, np.array([0.80, 0.203, 0.045]) * sgn)
        )
    return segs


def _closest_on_segments(verts: np.ndarray, segs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (V,), closest point (V, 3) and axial parameter t (V,) to the nearest segment."""
    best_d = np.full(len(verts), np.inf)
    best_c = np.zeros_like(verts)
    best_t = np.zeros(len(verts))
    for a, b in segs:
        ab = b - a
        t_raw = (verts - a) @ ab / (ab @ ab)
        t = np.clip(t_raw, 0.0, 1.0)
        c = a + t[:, None] * ab
        d = np.linalg.norm(verts - c, axis=1)
        m = d < best_d
        best_d[m], best_c[m], best_t[m] = d[m], c[m], t_raw[m]
    return best_d, best_c, best_t


# joints whose part must not capture the torso: vertices "behind" the bone start are excluded
_LIMB_ROOTS = ("left_hip", "right_hip", "left_shoulder", "right_shoulder")


def _skinning_weights(verts: np.ndarray, faces: np.ndarray, joints: np.ndarray, iters: int = 14):
    """LBS weights (V, 24): nearest-part labels diffused over the mesh, top 4 kept per row."""
    segs = _bone_segments(joints)
    n = len(verts)
    dist = np.zeros((n, C.NUM_JOINTS))
    for j in range(C.NUM_JOINTS):
        d, _, t = _closest_on_segments(verts, segs[j])
        if C.JOINT_NAMES[j] in _LIMB_ROOTS:
            d = np.where(t < -0.02, np.inf, d)
        dist[:, j] = d
    label = np.argmin(dist, axis=1)
    w = np.zeros((n, C.NUM_JOINTS))
    w[np.arange(n), label] = 1.0
    adj = _adjacency(mesh_edges(faces), n)
    adj = sp.diags(1.0 / np.asarray(adj.sum(1)).ravel()) @ adj
    for _ in range(iters):
        w = 0.5 * w + 0.5 * (adj @ w)
    # keep the 4 largest per row (ties broken by joint index for determinism)
    order = np.argsort(-w, axis=1, kind="stable")
    drop = order[:, 4:]
    np.put_along_axis(w, drop, 0.0, axis=1)
    w[w < 5e-3] = 0.0
    return w / w.sum(1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Regressors: every row a non-negative weighted average of a vertex patch around its target
# ---------------------------------------------------------------------------------------------
def _maxent_weights(rel: np.ndarray, logu: np.ndarray, lam: np.ndarray, iters: int = 60):
    """w ~ exp(logu + rel @ lam) with sum(w) = 1 and w @ rel = 0, by damped Newton on lam."""
    for _ in range(iters):
        z = logu + rel @ lam
        w = np.exp(z - z.max())
        w /= w.sum()
        g = w @ rel
        if np.linalg.norm(g) < 1e-11:
            break
        cov = (rel * w[:, None]).T @ rel - np.outer(g, g)
        step = np.linalg.solve(cov + 1e-12 * np.eye(3), g)
        lam = lam - step / max(1.0, np.linalg.norm(step) * 0.02)  # damped: lam grows slowly
    return w, lam


def _fit_patch(verts: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive weights (K,) summing to 1 over a vertex patch (K indices) around `target` (3,)
    whose weighted average is `target`.

    Maximum-entropy fit: w_i ~ u_i exp(lam . (p_i - target)) with a Gaussian prior u on the
    distance; lam solves a small convex problem by damped Newton steps. The patch grows until
    it surrounds the target; negligible weights are then dropped and the rest refitted.
    """
    d = np.linalg.norm(verts - target, axis=1)
    dmin = d.min()
    best = None
    for grow in (1.4, 1.7, 2.1, 2.6, 3.3, 4.5):
        radius = dmin * grow + 0.01
        idx = np.nonzero(d <= radius)[0]
        rel = verts[idx] - target
        logu = -4.0 * (d[idx] / radius) ** 2
        w, lam = _maxent_weights(rel, logu, np.zeros(3))
        keep = w > 0.25 * w.max()
        idx, rel, logu = idx[keep], rel[keep], logu[keep]
        w, lam = _maxent_weights(rel, logu, lam)
        err = np.linalg.norm(w @ rel)
        if best is None or err < best[2]:
            best = (idx, w, err)
        if err < 1e-7:
            break
    return best[0], best[1]


def _regressor(verts: np.ndarray, targets: np.ndarray) -> sp.csc_matrix:
    """Sparse (len(targets), V) regressor: row r averages a patch around targets[r]."""
    rows, cols, vals = [], [], []
    for r, tgt in enumerate(targets):
        idx, w = _fit_patch(verts, tgt)
        keep = w > 0
        rows.append(np.full(keep.sum(), r))
        cols.append(idx[keep])
        vals.append(w[keep])
    return sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(targets), len(verts)),
    )


def _lsp_targets(verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """HMR's 14 LSP keypoints on the rest body (14, 3)."""
    idx = {n: i for i, n in enumerate(C.JOINT_NAMES)}
    out = []
    for name in C.J24_NAMES[:12]:
        side, part = name.split("_", 1)
        p = joints[idx[f"{side}_{part}"]].copy()
        if part == "hip":  # LSP hips sit lower and more lateral than SMPL's hip joints
            p += (0.02 * np.sign(p[0]), -0.03, 0.0)
        out.append(p)
    out.append(np.array([0.0, 0.25, -0.005]))  # neck: base of the neck
    top = verts[np.argmax(verts[:, 1])]
    out.append(top - (0.0, 0.006, 0.0))  # head top, just under the crown
    return np.stack(out)


def _cocoplus_regressor(verts: np.ndarray, joints: np.ndarray) -> sp.csc_matrix:
    """(19, V): 14 LSP keypoints regressed from patches + one-hot face vertices."""
    lsp = _regressor(verts, _lsp_targets(verts, joints)).tocoo()
    rows = np.concatenate([lsp.row, 14 + np.arange(5)])
    cols = np.concatenate([lsp.col, np.asarray(C.HMR_FACE_VERTEX_IDS)])
    vals = np.concatenate([lsp.data, np.ones(5)])
    return sp.csc_matrix((vals, (rows, cols)), shape=(19, len(verts)))


# ---------------------------------------------------------------------------------------------
# Blend shapes
# ---------------------------------------------------------------------------------------------
def _ramp(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """Smoothstep from 0 at a to 1 at b."""
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _group(w: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    cols = [C.JOINT_NAMES.index(n) for n in names]
    return w[:, cols].sum(1)


_ARM = tuple(f"{s}_{p}" for s in ("left", "right") for p in ("shoulder", "elbow"))
_LEG = tuple(f"{s}_{p}" for s in ("left", "right") for p in ("hip", "knee"))
_TORSO = ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar", "neck")
_HAND_FOOT = tuple(
    f"{s}_{p}" for s in ("left", "right") for p in ("wrist", "hand", "ankle", "foot")
)


_TORSO_AXIS_Z = 0.0


def _perp_offsets(verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Offset of every vertex from every joint's part axis, perpendicular to it: (V, 24, 3).

    Torso, neck and head parts share a vertical axis; limb parts use their bone's line.
    Blending these per-part linear maps with the smooth skinning weights gives girth fields
    whose Jacobian stays close to the identity (no folds even at beta = +-3).
    """
    out = np.zeros((len(verts), C.NUM_JOINTS, 3))
    segs = _bone_segments(joints)
    for j, name in enumerate(C.JOINT_NAMES):
        if name in _TORSO + ("head",):
            a = np.array([0.0, 0.0, 0.02 if name == "head" else _TORSO_AXIS_Z])
            u = np.array([0.0, 1.0, 0.0])
        else:
            a, b = segs[j][0]
            u = (b - a) / np.linalg.norm(b - a)
        rel = verts - a
        out[:, j] = rel - np.outer(rel @ u, u)
    return out


def _shapedirs(verts: np.ndarray, w: np.ndarray, perp: np.ndarray) -> np.ndarray:
    """10 shape directions (V, 3, 10), each a smooth displacement field of the template:
    height, girth, shoulder width, hip width, belly, arm girth, leg girth, torso length,
    leg length, head size. Fields are near-linear maps (scalings along smooth masks), so even
    beta = +-3 folds no triangle."""
    x, y, z = verts.T
    out = np.zeros((len(verts), 3, 10))

    def swell(scale_per_joint: np.ndarray) -> np.ndarray:
        return np.einsum("vj,vjc->vc", w * scale_per_joint, perp)

    def scales(names, value):
        s_ = np.zeros(C.NUM_JOINTS)
        s_[[C.JOINT_NAMES.index(n) for n in names]] = value
        return s_

    # 0 height: overall scale, more along y (+1 => about 6 cm taller)
    out[:, :, 0] = verts * (0.02, 0.035, 0.02)
    # 1 girth / weight: radial swelling of torso and limbs, less on hands, feet and head
    girth = scales(_TORSO, 0.1) + scales(_ARM + _LEG, 0.07) + scales(_HAND_FOOT, 0.025)
    girth += scales(("left_collar", "right_collar"), -0.03)  # eases torso-to-arm shear
    out[:, :, 1] = swell(girth + scales(("head",), 0.02))
    # 2 shoulder width: arms slide outwards, the shoulder girdle stretches
    collar = _group(w, ("left_collar", "right_collar"))
    arm = _group(w, _ARM + tuple(n for n in _HAND_FOOT if "wrist" in n or "hand" in n))
    # (a continuous outward direction: collar weights reach the midline)
    out[:, 0, 2] = 0.015 * np.clip(x / 0.1, -1.0, 1.0) * (arm + 0.5 * collar)
    # 3 hip width: x-scaling of the pelvis and legs
    hips = _group(
        w, ("pelvis",) + _LEG + tuple(n for n in _HAND_FOOT if "ankle" in n or "foot" in n)
    )
    hips = hips * (1.0 - _ramp(y, -0.2, -0.05))
    out[:, 0, 3] = 0.09 * x * hips
    # 4 belly: the front of the abdomen moves forward
    bump = np.exp(-((x / 0.12) ** 2) - ((y + 0.07) / 0.13) ** 2) * _ramp(z, -0.02, 0.08)
    out[:, 2, 4] = 0.02 * bump
    # 5 arm girth, 6 leg girth: radial swelling of the limb segments
    out[:, :, 5] = swell(scales(_ARM, 0.12))
    # the inner thighs meet at the crotch: fade the leg swelling out towards the midline
    out[:, :, 6] = swell(scales(_LEG, 0.1)) * _ramp(np.abs(x), 0.0, 0.06)[:, None]
    # 7 torso length: everything above the waist moves up, the abdomen stretches
    out[:, 1, 7] = 0.025 * _ramp(y, -0.16, 0.12)
    # 8 leg length: the legs stretch below the hips, feet move down
    out[:, 1, 8] = -0.035 * _ramp(-y, 0.3, 1.06)
    # 9 head size: scale about the head centre
    head = _group(w, ("head",)) + 0.4 * _group(w, ("neck",)) * _ramp(y, 0.25, 0.33)
    out[:, :, 9] = 0.07 * head[:, None] * (verts - (0.0, 0.40, 0.02))
    return out


def _posedirs(w: np.ndarray, perp: np.ndarray) -> np.ndarray:
    """Pose correctives (V, 3, 207) in SMPL's layout: column 9 (j - 1) + k multiplies
    vec(R_j - I)[k]. Bending joint j by theta lowers trace(R_j) - 3 = -2 (1 - cos theta), so the
    diagonal columns push the blend zone between j and its parent outwards by about
    0.25 (1 - cos theta) of the local radius: the volume lost by linear blend skinning."""
    out = np.zeros((len(w), 3, 9 * C.NUM_BODY_JOINTS))
    for j in range(1, C.NUM_JOINTS):
        p = C.PARENTS[j]
        zone = np.clip(4.0 * w[:, j] * w[:, p], 0.0, 1.0)
        for k in (0, 4, 8):
            out[:, :, 9 * (j - 1) + k] = -0.125 * zone[:, None] * perp[:, j]
    return out


# ---------------------------------------------------------------------------------------------
# Build, cache, load, export
# ---------------------------------------------------------------------------------------------
MODEL_KEYS = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
    "f",
    "J",
    "cocoplus_regressor",
)
_SPARSE_KEYS = ("J_regressor", "cocoplus_regressor")


def build_mesh() -> tuple[np.ndarray, np.ndarray]:
    """The mannequin's rest surface: (verts (6890, 3) float64, faces (13776, 3) int64)."""
    grid, origin = _grid_sdf()
    v, f = marching_tetrahedra(grid, origin, _H)
    v, f = _decimate(v, f, C.NUM_VERTICES)
    for _ in range(2):
        f = _flip_edges(v, f)
        v = _relax(v, f, iters=4)
    f = _flip_edges(v, f)
    return _permute_landmarks(v, f)


def build_procedural_body() -> dict:
    """Build the procedural body from scratch (no cache) -> dict of SMPL-file arrays.

    Keys: v_template (6890, 3), shapedirs (6890, 3, 10), posedirs (6890, 3, 207),
    J_regressor (24, 6890) scipy.sparse csc, weights (6890, 24), kintree_table (2, 24) int64,
    f (13776, 3) uint32, J (24, 3), cocoplus_regressor (19, 6890) scipy.sparse csc.
    Float arrays are float64.
    """
    verts, faces = build_mesh()
    joints = design_joints()
    weights = _skinning_weights(verts, faces, joints)
    perp = _perp_offsets(verts, joints)
    j_reg = _regressor(verts, joints)
    kintree = np.stack([np.array(C.PARENTS, dtype=np.int64), np.arange(C.NUM_JOINTS)])
    kintree[0, 0] = 4294967295
    return {
        "v_template": verts,
        "shapedirs": _shapedirs(verts, weights, perp),
        "posedirs": _posedirs(weights, perp),
        "J_regressor": j_reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
        "J": np.asarray(j_reg @ verts),
        "cocoplus_regressor": _cocoplus_regressor(verts, joints),
    }


def cache_dir() -> Path:
    """Where built bodies are cached: $HMR_FAST_CACHE_DIR, else ~/.cache/hmr_fast."""
    env = os.environ.get("HMR_FAST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hmr_fast"


def cache_key() -> str:
    """VERSION plus a digest of this module's source, so any code change rebuilds the cache."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return f"{VERSION}-{digest}"


def cache_path() -> Path:
    return cache_dir() / f"{cache_key()}.npz"


def _to_arrays(body: dict) -> dict[str, np.ndarray]:
    """Plain arrays for saving: sparse regressors as (data, indices, indptr, shape)."""
    out = {}
    for k, v in body.items():
        if k in _SPARSE_KEYS:
            v = sp.csc_matrix(v)
            out[f"{k}__data"], out[f"{k}__indices"] = v.data, v.indices
            out[f"{k}__indptr"], out[f"{k}__shape"] = v.indptr, np.array(v.shape)
        else:
            out[k] = np.asarray(v)
    # posedirs is mostly zero (each joint moves its own blend zone): store it sparse
    pd = sp.csr_matrix(out.pop("posedirs").reshape(-1, C.NUM_POSE_FEATURES))
    out["posedirs__data"], out["posedirs__indices"] = pd.data, pd.indices
    out["posedirs__indptr"] = pd.indptr
    out["cache_key"] = np.array(cache_key())
    return out


def _from_arrays(z) -> dict:
    if str(z["cache_key"]) != cache_key():
        raise ValueError("stale procedural body cache")
    body = {}
    for k in MODEL_KEYS:
        if k in _SPARSE_KEYS:
            body[k] = sp.csc_matrix(
                (z[f"{k}__data"], z[f"{k}__indices"], z[f"{k}__indptr"]),
                shape=tuple(z[f"{k}__shape"]),
            )
        elif k == "posedirs":
            pd = sp.csr_matrix(
                (z["posedirs__data"], z["posedirs__indices"], z["posedirs__indptr"]),
                shape=(3 * C.NUM_VERTICES, C.NUM_POSE_FEATURES),
            )
            body[k] = pd.toarray().reshape(C.NUM_VERTICES, 3, C.NUM_POSE_FEATURES)
        else:
            body[k] = np.array(z[k])
    _check_body(body)
    return body


def _check_body(body: dict) -> None:
    """Shape/dtype sanity check (a truncated or foreign cache file fails here)."""
    n, nj = C.NUM_VERTICES, C.NUM_JOINTS
    shapes = {
        "v_template": (n, 3),
        "shapedirs": (n, 3, 10),
        "posedirs": (n, 3, C.NUM_POSE_FEATURES),
        "J_regressor": (nj, n),
        "weights": (n, nj),
        "kintree_table": (2, nj),
        "f": (C.NUM_FACES, 3),
        "J": (nj, 3),
        "cocoplus_regressor": (19, n),
    }
    for k, s in shapes.items():
        if tuple(body[k].shape) != s:
            raise ValueError(f"procedural body: {k} has shape {body[k].shape}, expected {s}")
        if k in ("v_template", "shapedirs", "posedirs", "weights", "J"):
            if not np.isfinite(body[k]).all():
                raise ValueError(f"procedural body: {k} is not finite")


def _save_cache(body: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **_to_arrays(body))
    os.replace(tmp, path)  # atomic: concurrent readers never see a half-written file
    for old in path.parent.glob(f"{VERSION.rsplit('-v', 1)[0]}-v*.npz"):
        if old != path:  # bodies of other versions / sources are stale
            try:
                old.unlink()
            except OSError:
                pass


_WARNED = False


def _warn_once() -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(
            "hmr_fast is using its procedural stand-in body (a mannequin with SMPL's topology "
            "sizes), not the licensed SMPL model; pass model_path= or set HMR_FAST_SMPL_DIR "
            "for real SMPL results.",
            UserWarning,
            stacklevel=3,
        )


@functools.lru_cache(maxsize=1)
def _load_cached() -> dict:
    path = cache_path()
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                body = _from_arrays(z)
            return _freeze(body)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # corrupt, truncated or stale: rebuild below
    body = build_procedural_body()
    try:
        _save_cache(body, path)
    except OSError as exc:  # read-only home etc.: the in-memory cache still works
        warnings.warn(f"could not write the procedural body cache {path}: {exc}", stacklevel=2)
    return _freeze(body)


def _freeze(body: dict) -> dict:
    """Make the cached arrays read-only, so nothing can corrupt the in-memory cache."""
    for v in body.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return body


def load_procedural_body() -> dict:
    """The procedural body (see `build_procedural_body`), cached in memory and on disk under
    `cache_dir()`. Returns private, writable copies (~60 MB, mostly posedirs); warns once per
    process that this is a stand-in, not the licensed SMPL body."""
    _warn_once()
    return {k: v.copy() for k, v in _load_cached().items()}


def write_procedural_model(path: str | os.PathLike) -> Path:
    """Write the procedural body as an SMPL model file; the suffix picks the format.

    `.npz`: numpy arrays (regressors dense), loadable with `np.load` and by `hmr_fast.SMPL`;
    for smplx use `smplx.SMPL(data_struct=smplx.utils.Struct(**np.load(path)))`.
    `.pkl`: a pickled dict like the original SMPL files (J_regressor scipy.sparse), which
    `smplx.SMPL(model_path=path)` loads directly.
    """
    path = Path(path)
    body = load_procedural_body()
    if path.suffix == ".pkl":
        data = {
            k: (sp.csc_matrix(v) if k in _SPARSE_KEYS else np.array(v)) for k, v in body.items()
        }
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    elif path.suffix == ".npz":
        data = {k: (v.toarray() if k in _SPARSE_KEYS else np.asarray(v)) for k, v in body.items()}
        np.savez(path, **data)
    else:
        raise ValueError(
            f"write_procedural_model: path must end in .npz or .pkl, got {str(path)!r}"
        )
    return path
