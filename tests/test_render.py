"""CPU rasterizer: coverage and depth against hand counts and a brute-force reference."""

import itertools

import cv2
import numpy as np
import pytest

from hmr_fast.body.constants import JOINT_NAMES
from hmr_fast.render import (
    PART_NAMES,
    face_labels,
    label_map,
    rasterize,
    render_mesh,
    render_part_mask,
    vertex_part_labels,
    vertex_visibility,
    weak_perspective_pixels,
)
from tests import seeding


def brute_force(vertices, faces, h, w):
    """Per-pixel nearest triangle by solving for barycentrics pixel by pixel."""
    depth = np.full((h, w), np.inf)
    index = np.full((h, w), -1)
    for fi, f in enumerate(faces):
        t = vertices[f]
        a = np.vstack([t[:, 0], t[:, 1], np.ones(3)])
        if abs(np.linalg.det(a)) < 1e-12:
            continue
        for y, x in itertools.product(range(h), range(w)):
            b = np.linalg.solve(a, [x, y, 1.0])
            if (b >= -1e-9).all():
                z = b @ t[:, 2]
                if z < depth[y, x]:
                    depth[y, x], index[y, x] = z, fi
    return depth, index


def test_right_triangle_hand_count():
    v = np.array([[0.0, 0, 5], [4, 0, 5], [0, 4, 5]])
    r = rasterize(v, np.array([[0, 1, 2]]), (8, 8))
    cov = r.face_index == 0
    # pixel centres (x, y) with x, y >= 0 and x + y <= 4: 5 + 4 + 3 + 2 + 1
    assert cov.sum() == 15
    ys, xs = np.nonzero(cov)
    assert ((xs + ys) <= 4).all()
    assert np.all(r.depth[cov] == 5) and np.isinf(r.depth[~cov]).all()
    assert (r.face_index[~cov] == -1).all()


def test_random_triangle_matches_plane():
    rng = seeding.rng()
    h, w = 20, 24
    v = np.concatenate([rng.uniform(-2, [w + 2, h + 2], (3, 2)), rng.uniform(1, 5, (3, 1))], 1)
    r = rasterize(v, np.array([[0, 1, 2]]), (h, w))
    d_ref, i_ref = brute_force(v, np.array([[0, 1, 2]]), h, w)
    np.testing.assert_array_equal(r.face_index, i_ref)
    m = i_ref >= 0
    np.testing.assert_allclose(r.depth[m], d_ref[m], rtol=1e-5)
    # barycentrics reproduce the pixel position
    ys, xs = np.nonzero(m)
    pos = r.bary[m] @ v[:, :2]
    np.testing.assert_allclose(pos, np.stack([xs, ys], 1), atol=1e-4)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_overlapping_triangles(order):
    # far: big triangle at depth 3; near: small one at depth 1 inside it
    far = [[1.0, 1, 3], [14, 1, 3], [1, 14, 3]]
    near = [[3.0, 3, 1], [8, 3, 1], [3, 8, 1]]
    v = np.array(far + near)
    faces = np.array([[0, 1, 2], [3, 4, 5]])[list(order)]
    r = rasterize(v, faces, (16, 16))
    near_id = order.index(1)
    yy, xx = np.mgrid[0:16, 0:16]
    in_near = (xx >= 3) & (yy >= 3) & (xx + yy <= 11)
    in_far = (xx >= 1) & (yy >= 1) & (xx + yy <= 15)
    np.testing.assert_array_equal(r.face_index == near_id, in_near)
    np.testing.assert_array_equal(r.face_index == 1 - near_id, in_far & ~in_near)
    np.testing.assert_array_equal(r.depth[in_near], 1.0)
    np.testing.assert_array_equal(r.depth[in_far & ~in_near], 3.0)


def test_intersecting_triangles_match_brute_force():
    rng = seeding.rng()
    h, w = 18, 18
    v = np.concatenate([rng.uniform(0, 18, (9, 2)), rng.uniform(1, 4, (9, 1))], 1)
    faces = np.arange(9).reshape(3, 3)
    r = rasterize(v, faces, (h, w))
    d_ref, i_ref = brute_force(v, faces, h, w)
    np.testing.assert_allclose(r.depth, d_ref, rtol=1e-6)
    # the winning face may differ only where two faces are at the same depth
    diff = r.face_index != i_ref
    assert diff.sum() <= 2


def _cube(rng):
    c = np.array(list(itertools.product([-1, 1], repeat=3)), float)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([t for q in quads for t in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])
    from scipy.spatial.transform import Rotation

    rot = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    return c @ rot.T, faces


def test_cube():
    rng = seeding.rng()
    verts, faces = _cube(rng)
    h = w = 32
    px = np.c_[verts[:, :2] * 9 + 16, verts[:, 2] * 9 + 50]  # orthographic, depth in px
    r = rasterize(px, faces, (h, w))
    d_ref, i_ref = brute_force(px, faces, h, w)
    np.testing.assert_allclose(r.depth, d_ref, rtol=1e-6)
    # silhouette = projected convex hull (up to boundary pixels)
    hull = cv2.convexHull(px[:, :2].astype(np.float32))
    area = cv2.contourArea(hull)
    perimeter = cv2.arcLength(hull, True)
    assert abs((r.face_index >= 0).sum() - area) < perimeter
    # only faces whose outward normal points to the camera (-z) are visible
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.sign((normals * tri.mean(1)).sum(1))[:, None] * normals
    seen = np.unique(r.face_index[r.face_index >= 0])
    assert (outward[seen, 2] < 1e-9).all()
    # back-face culling of the outward-wound mesh keeps the same image and only front faces
    wound = np.where((normals * tri.mean(1)).sum(1)[:, None] > 0, faces, faces[:, ::-1])
    rc = rasterize(px, wound, (h, w), cull_backfaces=True)
    np.testing.assert_array_equal(rc.depth, r.depth)
    tri_w = verts[wound]
    n_w = np.cross(tri_w[:, 1] - tri_w[:, 0], tri_w[:, 2] - tri_w[:, 0])
    kept = rasterize(px, wound[n_w[:, 2] > 0], (h, w), cull_backfaces=True)
    assert (kept.face_index == -1).all()


def test_render_mesh_shading_and_background():
    rng = seeding.rng()
    bg = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    v = np.array([[0.0, 0, 5], [15, 0, 5], [0, 15, 5]])  # faces the camera
    faces = np.array([[0, 1, 2]])
    col = np.array([[0.2, 0.6, 1.0]])
    out = render_mesh(v, faces, image=bg, colors=col, ambient=0.3, diffuse=0.7)
    cov = rasterize(v, faces, (16, 16)).face_index == 0
    np.testing.assert_array_equal(out[~cov], bg[~cov])
    assert np.abs(out[cov].astype(float) - col[0] * 255).max() <= 1
    # tilted by 60 degrees about y: intensity = ambient + diffuse * cos(60)
    v3 = np.array([[0.0, 0, 0], [np.cos(np.pi / 3), 0, np.sin(np.pi / 3)], [0, 1, 0]])
    out = render_mesh(v, faces, size=(16, 16), colors=(1.0, 1.0, 1.0), vertices_3d=v3,
                      ambient=0.3, diffuse=0.7)  # fmt: skip
    assert np.abs(out[cov].astype(float) - 255 * (0.3 + 0.7 * 0.5)).max() <= 1
    # alpha blend and per-vertex colours interpolate
    vc = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    out = render_mesh(v, faces, image=bg, colors=vc, ambient=1.0, diffuse=0.0, alpha=0.5)
    r = rasterize(v, faces, (16, 16))
    exp = 0.5 * (r.bary[cov] @ vc) * 255 + 0.5 * bg[cov]
    assert np.abs(out[cov] - exp).max() <= 1
    with pytest.raises(ValueError, match="colors"):
        render_mesh(v, faces, size=(16, 16), colors=np.ones((5, 3)))


def test_vertex_visibility():
    depth = np.full((10, 10), np.inf, np.float32)
    depth[2:6, 2:6] = 3.0
    pts = np.array([[3, 3, 2.5], [3, 3, 4.0], [8, 8, 9.0], [12, 3, 1.0], [3.4, 2.6, 3.005]])
    np.testing.assert_array_equal(vertex_visibility(pts, depth), [1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="points_px"):
        vertex_visibility(np.zeros((3, 2)), depth)


def test_part_labels():
    expected = {"head": ["neck", "head"],
                "torso": ["pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"],
                "left_arm": ["left_shoulder", "left_elbow", "left_wrist", "left_hand"],
                "right_arm": ["right_shoulder", "right_elbow", "right_wrist", "right_hand"],
                "left_leg": ["left_hip", "left_knee", "left_ankle", "left_foot"],
                "right_leg": ["right_hip", "right_knee", "right_ankle", "right_foot"]}  # fmt: skip
    rng = seeding.rng()
    weights = rng.uniform(0, 0.3, (24, 24))
    weights[np.arange(24), np.arange(24)] = 0.9  # vertex j dominated by joint j
    labels = vertex_part_labels(weights)
    for part, joints in expected.items():
        for j in joints:
            assert PART_NAMES[labels[JOINT_NAMES.index(j)]] == part, j
    faces = np.array([[0, 15, 12], [16, 18, 0], [1, 2, 4]])  # torso/head/head, arm, legs
    fl = face_labels(labels, faces)
    np.testing.assert_array_equal(fl, [1, 3, 5])
    fi = np.array([[-1, 0], [2, 1]])
    np.testing.assert_array_equal(label_map(fi, fl), [[0, 1], [5, 3]])


def test_weak_perspective_pixels():
    rng = seeding.rng()
    v = rng.normal(size=(5, 3))
    cam = np.array([0.9, 0.1, -0.2])
    px = weak_perspective_pixels(v, cam, 224)
    u = cam[0] * (v[:, :2] + cam[1:])
    np.testing.assert_allclose((2 * px[:, :2] + 1) / 224 - 1, u, atol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="vertices_px"):
        rasterize(np.zeros((3, 2)), np.array([[0, 1, 2]]), (4, 4))
    with pytest.raises(ValueError, match="faces"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 3]]), (4, 4))
    with pytest.raises(ValueError, match="size"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), (0, 4))


def test_render_part_mask():
    # far triangle labelled 2 (torso), near one labelled 5 (left leg)
    v = np.array([[1.0, 1, 3], [14, 1, 3], [1, 14, 3], [3.0, 3, 1], [8, 3, 1], [3, 8, 1]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    labels = np.array([2, 2, 2, 5, 5, 1])  # one stray vertex label: the majority wins
    m = render_part_mask(v, faces, labels, (16, 16))
    yy, xx = np.mgrid[0:16, 0:16]
    in_near = (xx >= 3) & (yy >= 3) & (xx + yy <= 11)
    in_far = (xx >= 1) & (yy >= 1) & (xx + yy <= 15)
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(m[in_near], 5)
    np.testing.assert_array_equal(m[in_far & ~in_near], 2)
    np.testing.assert_array_equal(m[~in_far], 0)
