"""A vectorised CPU z-buffer triangle rasterizer (numpy + OpenCV; no OpenGL).

Conventions
-----------
* ``vertices_px`` (V, 3): x, y in image pixels with pixel centres at integer coordinates
  (OpenCV's convention; pixel (i, j) is sampled at x = j, y = i), and a depth where *smaller
  is nearer*. Depth is interpolated linearly in screen space: exact for orthographic and
  weak-perspective projections (HMR's), and order-preserving enough for perspective meshes
  whose triangles are small. Vertices must be in front of the camera (the caller projects).
* A pixel is covered by a triangle when its centre lies inside or on an edge; on ties
  (shared edges, equal depth) the face with the lower index wins, so results are deterministic.

How it is fast: faces are grouped by the power-of-two size of their pixel bounding boxes;
each group tests its faces against a fixed grid of candidate pixels in one numpy expression;
the nearest fragment per pixel is then found with two ``np.minimum.at`` scatters. A
13776-face body at 224 px rasterizes in about 10 ms on one CPU core.

Body parts (LSP's six-part convention used by the part-segmentation masks / evaluation):
0 background, 1 head, 2 torso, 3 left arm, 4 right arm, 5 left leg, 6 right leg ("left" is the
person's left). ``vertex_part_labels`` maps each vertex through its dominant SMPL skinning
weight (``SMPL_JOINT_TO_PART``): neck and head -> head; pelvis, spine1-3 and both collars ->
torso; shoulder, elbow, wrist, hand -> arm; hip, knee, ankle, foot -> leg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmr_fast.body.constants import JOINT_NAMES, NUM_JOINTS

PART_NAMES = ("background", "head", "torso", "left_arm", "right_arm", "left_leg", "right_leg")


def _joint_part(name: str) -> int:
    if name in ("neck", "head"):
        return 1
    side = 0 if name.startswith("left_") else 1 if name.startswith("right_") else None
    if side is None or name.endswith("collar"):
        return 2
    if any(k in name for k in ("shoulder", "elbow", "wrist", "hand")):
        return 3 + side
    return 5 + side  # hip, knee, ankle, foot


SMPL_JOINT_TO_PART = tuple(_joint_part(n) for n in JOINT_NAMES)
# Distinct RGB colours (0..255) for the 7 labels, for visualising part masks.
PART_COLORS = np.array(
    [
        [0, 0, 0],
        [230, 200, 60],
        [70, 160, 90],
        [220, 80, 70],
        [70, 110, 220],
        [200, 90, 200],
        [60, 200, 210],
    ],
    np.uint8,
)
DEFAULT_COLOR = (0.65, 0.74, 0.86)


@dataclass
class Raster:
    """Result of ``rasterize``; background pixels have depth +inf, face -1, bary 0."""

    depth: np.ndarray  # (H, W) float32
    face_index: np.ndarray  # (H, W) int64
    bary: np.ndarray  # (H, W, 3) float32 barycentric weights of the face's 3 vertices


def _check_mesh(vertices_px, faces):
    v = np.asarray(vertices_px, np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices_px must have shape (V, 3) (x, y, depth), got {v.shape}")
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer (F, 3) array, got {f.shape} {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices 0..{len(v) - 1}, got range {f.min()}..{f.max()}")
    return v, f.astype(np.int64)


def _size(size):
    if len(size) < 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
        raise ValueError(f"size must be (H, W) with positive entries, got {size}")
    return int(size[0]), int(size[1])


def rasterize(vertices_px, faces, size, cull_backfaces: bool = False, max_fragments=1 << 21):
    """Z-buffer rasterization. vertices_px (V, 3), faces (F, 3), size (H, W) -> Raster.

    ``cull_backfaces`` drops faces whose right-handed normal in the (x right, y down, depth
    forward) frame points away from the camera (positive signed area in pixel coordinates):
    the back faces of outward-wound meshes such as SMPL's.
    ``max_fragments`` bounds the candidate pixels held in memory at once.
    """
    v, f = _check_mesh(vertices_px, faces)
    h, w = _size(size)
    depth = np.full(h * w, np.inf, np.float32)
    face_index = np.full(h * w, -1, np.int64)
    bary = np.zeros((h * w, 3), np.float32)
    if len(f) == 0:
        return Raster(depth.reshape(h, w), face_index.reshape(h, w), bary.reshape(h, w, 3))
    tri = v[f]  # F,3,3
    tx, ty = tri[:, :, 0], tri[:, :, 1]
    area = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (
        ty[:, 1] - ty[:, 0]
    )
    with np.errstate(invalid="ignore"):
        x0 = np.clip(np.ceil(tx.min(1)), 0, w)
        x1 = np.clip(np.floor(tx.max(1)), -1, w - 1)
        y0 = np.clip(np.ceil(ty.min(1)), 0, h)
        y1 = np.clip(np.floor(ty.max(1)), -1, h - 1)
    ok = np.isfinite(tri).all((1, 2)) & (np.abs(area) > 1e-12) & (x0 <= x1) & (y0 <= y1)
    if cull_backfaces:
        ok &= area < 0
    ids = np.nonzero(ok)[0]
    bw = (x1[ids] - x0[ids] + 1).astype(np.int64)
    bh = (y1[ids] - y0[ids] + 1).astype(np.int64)
    gw = 1 << np.ceil(np.log2(bw)).astype(np.int64)
    gh = 1 << np.ceil(np.log2(bh)).astype(np.int64)
    key = gw * (1 << 20) + gh
    pix_l, dep_l, fid_l, bar_l = [], [], [], []
    for k in np.unique(key):
        sel = ids[key == k]
        cw, ch = int(k >> 20), int(k & ((1 << 20) - 1))
        oy, ox = np.divmod(np.arange(cw * ch), cw)
        step = max(1, max_fragments // (cw * ch))
        for s in range(0, len(sel), step):
            fs = sel[s : s + step]
            px = x0[fs, None] + ox[None]
            py = y0[fs, None] + oy[None]
            inb = (px <= x1[fs, None]) & (py <= y1[fs, None])
            ax, ay = tx[fs], ty[fs]
            inv = 1.0 / area[fs, None]
            # edge functions: weight of vertex i is the area opposite to it
            w0 = (
                (ax[:, 2:3] - ax[:, 1:2]) * (py - ay[:, 1:2])
                - (ay[:, 2:3] - ay[:, 1:2]) * (px - ax[:, 1:2])
            ) * inv  # noqa: E501
            w1 = (
                (ax[:, 0:1] - ax[:, 2:3]) * (py - ay[:, 2:3])
                - (ay[:, 0:1] - ay[:, 2:3]) * (px - ax[:, 2:3])
            ) * inv  # noqa: E501
            w2 = 1.0 - w0 - w1
            eps = -1e-9
            inside = inb & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
            r, c = np.nonzero(inside)
            if len(r) == 0:
                continue
            fz = tri[fs, :, 2]
            b = np.stack([w0[r, c], w1[r, c], w2[r, c]], 1)
            pix_l.append((py[r, c] * w + px[r, c]).astype(np.int64))
            dep_l.append((b * fz[r]).sum(1))
            fid_l.append(fs[r])
            bar_l.append(b)
    if pix_l:
        pix = np.concatenate(pix_l)
        dep = np.concatenate(dep_l)
        fid = np.concatenate(fid_l)
        # nearest fragment per pixel, then the lowest face index among equally near ones
        zbuf = np.full(h * w, np.inf)
        np.minimum.at(zbuf, pix, dep)
        near = dep == zbuf[pix]
        fbuf = np.full(h * w, np.iinfo(np.int64).max)
        np.minimum.at(fbuf, pix[near], fid[near])
        win = np.nonzero(near & (fid == fbuf[pix]))[0]  # a face covers a pixel at most once
        depth[pix[win]] = dep[win]
        face_index[pix[win]] = fid[win]
        bary[pix[win]] = np.concatenate(bar_l)[win]
    return Raster(depth.reshape(h, w), face_index.reshape(h, w), bary.reshape(h, w, 3))


def face_index_map(vertices_px, faces, size, cull_backfaces: bool = False) -> np.ndarray:
    """(H, W) int64 index of the visible face per pixel, -1 for background."""
    return rasterize(vertices_px, faces, size, cull_backfaces).face_index


def depth_map(vertices_px, faces, size) -> np.ndarray:
    """(H, W) float32 nearest depth per pixel, +inf for background."""
    return rasterize(vertices_px, faces, size).depth


def vertex_visibility(points_px, depth_map: np.ndarray, tol: float = 1e-2) -> np.ndarray:
    """(N,) bool: point (x, y, depth) lies inside the image and is not behind the surface.

    The point is visible when ``depth <= depth_map[round(y), round(x)] + tol`` (``tol`` in
    the depth's units absorbs the depth slope within a pixel). Points over background count
    as visible (nothing occludes them).
    """
    p = np.asarray(points_px, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points_px must have shape (N, 3), got {p.shape}")
    d = np.asarray(depth_map)
    if d.ndim != 2:
        raise ValueError(f"depth_map must have shape (H, W), got {d.shape}")
    h, w = d.shape
    fin = np.isfinite(p).all(1)
    xi = np.rint(np.where(fin, p[:, 0], -1)).astype(np.int64)
    yi = np.rint(np.where(fin, p[:, 1], -1)).astype(np.int64)
    inside = fin & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    surf = d[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return inside & (p[:, 2] <= surf + tol)


def vertex_part_labels(weights) -> np.ndarray:
    """(V, 24) SMPL skinning weights -> (V,) uint8 part label in 1..6 (see module docstring)."""
    wts = np.asarray(weights)
    if wts.ndim != 2 or wts.shape[1] != NUM_JOINTS:
        raise ValueError(f"weights must have shape (V, {NUM_JOINTS}), got {wts.shape}")
    return np.asarray(SMPL_JOINT_TO_PART, np.uint8)[wts.argmax(1)]


def face_labels(vertex_labels, faces) -> np.ndarray:
    """(V,) vertex labels -> (F,) face labels: the majority of the 3 (first vertex on ties)."""
    lab = np.asarray(vertex_labels)[np.asarray(faces)]
    return np.where(lab[:, 1] == lab[:, 2], lab[:, 1], lab[:, 0])


def label_map(face_index: np.ndarray, face_values) -> np.ndarray:
    """(H, W) face-index map + (F,) per-face labels -> (H, W) uint8 labels, 0 on background."""
    vals = np.concatenate([[0], np.asarray(face_values)]).astype(np.uint8)
    return vals[np.asarray(face_index) + 1]


def render_part_mask(vertices_px, faces, vertex_labels, size) -> np.ndarray:
    """(H, W) uint8 part-segmentation mask of a mesh: each pixel takes the label of its visible
    face (``face_labels`` of ``vertex_labels``, e.g. ``vertex_part_labels(weights)``), 0 on
    background. ``render_part_mask(...) > 0`` is the silhouette."""
    r = rasterize(vertices_px, faces, size)
    return label_map(r.face_index, face_labels(vertex_labels, faces))


def face_normals(vertices, faces) -> np.ndarray:
    """(F, 3) unit normals (right-handed cross product of the edges)."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _colors01(colors, n_vertices: int, n_faces: int):
    """-> (array (K,3) float in [0,1], per_vertex: bool)."""
    if colors is None:
        colors = DEFAULT_COLOR
    c = np.asarray(colors)
    scale = 255.0 if c.dtype == np.uint8 else 1.0
    c = c.astype(np.float64) / scale
    if c.shape == (3,):
        return np.broadcast_to(c, (n_faces, 3)), False
    if c.ndim == 2 and c.shape[1] == 3 and len(c) == n_vertices:
        return c, True
    if c.ndim == 2 and c.shape[1] == 3 and len(c) == n_faces:
        return c, False
    raise ValueError(f"colors must be (3,), (V={n_vertices}, 3) or (F={n_faces}, 3), got {c.shape}")


def render_mesh(
    vertices_px,
    faces,
    image=None,
    size=None,
    colors=None,
    light_dir=(0.0, 0.0, -1.0),
    ambient: float = 0.35,
    diffuse: float = 0.65,
    vertices_3d=None,
    alpha: float = 1.0,
    raster: Raster | None = None,
) -> np.ndarray:
    """Shade a mesh over an image. Returns (H, W, 3) uint8 RGB.

    vertices_px (V, 3) as in ``rasterize``; ``image`` (H, W, 3) uint8 background or None with
    ``size`` (H, W) for black; ``colors`` (3,), per-vertex (V, 3) (Gouraud-interpolated) or
    per-face (F, 3), floats in [0, 1] or uint8. Lambert shading with face normals from
    ``vertices_3d`` (camera frame; default ``vertices_px``, right when depth is in pixel
    units), two-sided: ``ambient + diffuse * |n . light|``, ``light_dir`` pointing from the
    surface to the light in the camera frame (x right, y down, z forward: (0,0,-1) = from the
    camera). ``alpha`` blends the mesh over the image. A precomputed ``raster`` may be given.
    """
    v, f = _check_mesh(vertices_px, faces)
    if image is not None:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        out = img.astype(np.float32)
    elif size is not None:
        h, w = _size(size)
        out = np.zeros((h, w, 3), np.float32)
    else:
        raise ValueError("render_mesh needs an image or a size")
    r = raster if raster is not None else rasterize(v, f, (h, w))
    mask = r.face_index >= 0
    if not mask.any():
        return out.astype(np.uint8)
    fid = r.face_index[mask]
    light = np.asarray(light_dir, np.float64)
    light = light / max(np.linalg.norm(light), 1e-12)
    normals = face_normals(v if vertices_3d is None else vertices_3d, f)
    shade = ambient + diffuse * np.abs(normals @ light)
    col, per_vertex = _colors01(colors, len(v), len(f))
    if per_vertex:
        base = (r.bary[mask][:, :, None] * col[f[fid]]).sum(1)
    else:
        base = col[fid]
    rgb = np.clip(base * shade[fid, None], 0.0, 1.0) * 255.0
    out[mask] = alpha * rgb + (1.0 - alpha) * out[mask]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def weak_perspective_pixels(vertices, camera, image_size: int) -> np.ndarray:
    """(V, 3) model-space vertices + HMR camera (3,) = [s, tx, ty] -> (V, 3) crop pixels.

    x_px = (s * (X + t) + 1) * S / 2 - 0.5 (the inverse of the normalised crop coordinates of
    ``hmr_fast.data.augment``); depth = s * Z * S / 2, in pixel units so that normals from
    the result are metric. Assumes the vertices are already in HMR's camera frame (y down).
    """
    v = np.asarray(vertices, np.float64)
    s, tx, ty = (float(c) for c in np.asarray(camera, np.float64).ravel()[:3])
    half = image_size / 2.0
    out = np.empty_like(v)
    out[:, 0] = (s * (v[:, 0] + tx) + 1.0) * half - 0.5
    out[:, 1] = (s * (v[:, 1] + ty) + 1.0) * half - 0.5
    out[:, 2] = s * v[:, 2] * half
    return out


def perspective_pixels(points, focal, principal) -> np.ndarray:
    """(N, 3) camera-frame points (z forward) -> (N, 3) pixels (x, y) + depth z.

    Points at or behind the camera (z <= 0) come out as NaN, which ``rasterize`` skips.
    """
    p = np.asarray(points, np.float64)
    fx, fy = np.broadcast_to(np.asarray(focal, np.float64), (2,))
    z = np.where(p[:, 2] > 0, p[:, 2], np.nan)
    return np.stack([fx * p[:, 0] / z + principal[0], fy * p[:, 1] / z + principal[1], z], 1)
