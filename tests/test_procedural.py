"""Tests of the procedural stand-in body (hmr_fast.body.procedural)."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hmr_fast.body import constants as C
from hmr_fast.body import procedural as P

# Rest joints the issue asks for (SMPL-like), typed from the spec, not from the implementation.
SPEC_JOINTS = {
    "pelvis": (0.0, -0.24, 0.03),
    "neck": (0.0, 0.27, 0.0),
    "head": (0.0, 0.33, 0.05),
    "left_shoulder": (0.19, 0.23, -0.01),
    "right_shoulder": (-0.19, 0.23, -0.01),
}
SPEC_COORDS = {  # joint: (axis, value)
    "left_knee": (1, -0.70),
    "right_knee": (1, -0.70),
    "left_ankle": (1, -1.10),
    "right_ankle": (1, -1.10),
    "left_elbow": (0, 0.45),
    "right_elbow": (0, -0.45),
    "left_wrist": (0, 0.71),
    "right_wrist": (0, -0.71),
    "left_hand": (0, 0.79),
    "right_hand": (0, -0.79),
}
JI = {n: i for i, n in enumerate(C.JOINT_NAMES)}
VI = dict(zip(C.VERTEX_JOINT_NAMES, C.VERTEX_JOINT_IDS))


@pytest.fixture(scope="module")
def body():
    return P.build_procedural_body()


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    P._load_cached.cache_clear()
    yield
    P._load_cached.cache_clear()


def dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def face_normals(v, f):
    t = v[f]
    return np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])


def signed_volume(v, f):
    t = v[f]
    return np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0


def winding_number(v, f, q):
    """Generalised winding number of the closed mesh at points q (M, 3) (solid angles)."""
    out = []
    for p in q:
        a, b, c = (v[f[:, k]] - p for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + (a * b).sum(1) * lc + (b * c).sum(1) * la + (c * a).sum(1) * lb
        out.append(2.0 * np.arctan2(num, den).sum() / (4 * np.pi))
    return np.array(out)


def rotation(axis, angle):
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


# --------------------------------------------------------------------------------------------
def test_keys_shapes_dtypes(body):
    assert set(body) == set(P.MODEL_KEYS)
    n, nj = C.NUM_VERTICES, C.NUM_JOINTS
    expect = {
        "v_template": (n, 3),
        "shapedirs": (n, 3, 10),
        "posedirs": (n, 3, 207),
        "weights": (n, nj),
        "J": (nj, 3),
    }
    for k, s in expect.items():
        assert body[k].shape == s and body[k].dtype == np.float64, k
        assert np.isfinite(body[k]).all(), k
    assert body["f"].shape == (C.NUM_FACES, 3) and body["f"].dtype == np.uint32
    assert body["kintree_table"].shape == (2, nj) and body["kintree_table"].dtype == np.int64
    assert body["kintree_table"][0, 0] == 4294967295
    assert tuple(body["kintree_table"][0, 1:]) == C.PARENTS[1:]
    assert tuple(body["kintree_table"][1]) == tuple(range(nj))
    for k, rows in (("J_regressor", nj), ("cocoplus_regressor", 19)):
        assert sp.issparse(body[k]) and body[k].format == "csc", k
        assert body[k].shape == (rows, n) and body[k].dtype == np.float64
    assert body["f"].max() == n - 1 and body["f"].min() == 0


def test_closed_genus0_manifold(body):
    v, f = body["v_template"], body["f"].astype(np.int64)
    n = len(v)
    assert len(f) == 2 * n - 4
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    undirected = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    keys, counts = np.unique(undirected[:, 0] * n + undirected[:, 1], return_counts=True)
    assert (counts == 2).all()  # every edge in exactly two faces
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # consistently oriented: each directed half-edge appears once
    assert len(np.unique(directed[:, 0] * n + directed[:, 1])) == len(directed)
    assert n - len(keys) + len(f) == 2  # Euler characteristic of a sphere
    adj = sp.coo_matrix((np.ones(len(keys)), (keys // n, keys % n)), shape=(n, n))
    ncomp, _ = sp.csgraph.connected_components(adj, directed=False)
    assert ncomp == 1
    # vertex manifold: the faces around each vertex form a single fan (its link is one cycle)
    links: dict[int, dict[int, int]] = {}
    for a, b, c in f.tolist():
        for x, y, z in ((a, b, c), (b, c, a), (c, a, b)):
            links.setdefault(x, {})[y] = z
    assert len(links) == n
    for x, nxt in links.items():
        start = next(iter(nxt))
        y, steps = nxt[start], 1
        while y != start and steps <= len(nxt):
            y, steps = nxt[y], steps + 1
        assert steps == len(nxt) >= 3, x


def test_outward_orientation_and_human_size(body):
    v, f = body["v_template"], body["f"].astype(np.int64)
    vol = signed_volume(v, f)
    assert 0.04 < vol < 0.12  # m^3: a 40..120 kg person
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.8
    span = v[:, 0].max() - v[:, 0].min()
    assert 1.6 < span < 1.95  # arms out horizontally
    assert np.allclose(v[:, 0].max(), -v[:, 0].min(), atol=0.01)
    # rays to far-away points: the whole outside has winding number 0, inside joints 1
    w_out = winding_number(v, f, np.array([[0, 0, 1.0], [2, 0, 0], [0, 0.25, 0.5]]))
    assert np.allclose(w_out, 0.0, atol=1e-6)
    assert np.allclose(winding_number(v, f, body["J"]), 1.0, atol=1e-6)
    # no degenerate triangles
    assert np.linalg.norm(face_normals(v, f), axis=1).min() > 1e-9


def test_tpose_limbs(body):
    v, w = body["v_template"], body["weights"]
    for side, sgn in (("left", 1), ("right", -1)):
        arm = v[w[:, JI[f"{side}_elbow"]] > 0.9]
        assert (np.sign(arm[:, 0]) == sgn).all() and np.ptp(arm[:, 1]) < 0.12  # horizontal
        foot = v[w[:, JI[f"{side}_foot"]] > 0.9]
        assert foot[:, 2].mean() > 0.08  # feet point forwards (+z)
    # legs slightly apart: no vertex of the left shin is near a vertex of the right shin
    ls, rs = v[w[:, JI["left_knee"]] > 0.5], v[w[:, JI["right_knee"]] > 0.5]
    assert ls[:, 0].min() > 0.02 and rs[:, 0].max() < -0.02


def test_joints_match_spec(body):
    J = body["J"]
    assert np.allclose(J, body["J_regressor"] @ body["v_template"])
    for name, p in SPEC_JOINTS.items():
        assert np.linalg.norm(J[JI[name]] - p) < 0.03, name
    for name, (axis, val) in SPEC_COORDS.items():
        assert abs(J[JI[name]][axis] - val) < 0.02, name
    assert abs(abs(J[JI["left_ankle"], 0]) - 0.09) < 0.02
    # regressed joints reproduce the designed skeleton
    assert np.abs(J - P.design_joints()).max() < 0.01
    # and the skeleton is mirror symmetric
    mirror = J[list(C.SMPL_FLIP_PERM)] * (-1, 1, 1)
    assert np.abs(mirror - J).max() < 1e-6 + 1e-2


def test_j_regressor_rows_are_local_averages(body):
    jr = body["J_regressor"]
    assert np.allclose(np.asarray(jr.sum(1)).ravel(), 1.0)
    assert jr.data.min() > 0
    v, J = body["v_template"], body["J"]
    for j in range(C.NUM_JOINTS):
        row = jr[j].toarray().ravel()
        idx = np.nonzero(row)[0]
        assert len(idx) >= 8, C.JOINT_NAMES[j]
        d = np.linalg.norm(v[idx] - J[j], axis=1)
        assert d.max() < 0.25, C.JOINT_NAMES[j]  # a patch around the joint


def test_skinning_weights(body):
    w, f = body["weights"], body["f"].astype(np.int64)
    assert (w >= 0).all() and ((w > 0).sum(1) <= 4).all()
    assert np.allclose(w.sum(1), 1.0)
    assert (w.max(0) > 0.6).all()  # every joint dominates some vertices
    assert (w.max(0) > 0.95).sum() >= 20  # and most own some rigidly
    # smooth falloff: neighbouring vertices have similar weights
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    assert np.abs(w[e[:, 0]] - w[e[:, 1]]).max() < 0.5
    # each limb joint drives its own limb: vertices far out on the left arm are left-arm bones
    v = body["v_template"]
    arm_cols = [JI[n] for n in ("left_elbow", "left_wrist", "left_hand")]
    far = v[:, 0] > 0.6
    assert np.allclose(w[far][:, arm_cols].sum(1), 1.0)
    # the head is skinned to head/neck only
    head = v[:, 1] > 0.42
    assert np.allclose(w[head][:, [JI["head"], JI["neck"]]].sum(1), 1.0)


def test_cocoplus_regressor(body):
    reg = body["cocoplus_regressor"]
    assert np.allclose(np.asarray(reg.sum(1)).ravel(), 1.0) and reg.data.min() > 0
    dense_reg = reg.toarray()
    for r, vid in enumerate(C.HMR_FACE_VERTEX_IDS):
        row = dense_reg[14 + r]
        assert row[vid] == 1.0 and np.count_nonzero(row) == 1
    kp = reg @ body["v_template"]
    J = body["J"]
    lsp_to_smpl = {
        0: "right_ankle",
        1: "right_knee",
        5: "left_ankle",
        4: "left_knee",
        6: "right_wrist",
        7: "right_elbow",
        8: "right_shoulder",
        9: "left_shoulder",
        10: "left_elbow",
        11: "left_wrist",
        2: "right_hip",
        3: "left_hip",
    }
    for r, name in lsp_to_smpl.items():
        assert np.linalg.norm(kp[r] - J[JI[name]]) < 0.05, C.J24_NAMES[r]
    assert kp[3, 0] > 0 > kp[2, 0]  # left hip at +x
    assert kp[13, 1] > body["v_template"][:, 1].max() - 0.03  # head top
    assert J[JI["left_shoulder"], 1] < kp[12, 1] < J[JI["head"], 1]  # neck
    rows = reg.tocsr()
    for r in range(14):
        idx = rows[r].indices
        assert np.linalg.norm(body["v_template"][idx] - kp[r], axis=1).max() < 0.25


def test_vertex_landmarks(body):
    v, w = body["v_template"], body["weights"]
    lm = {n: v[i] for n, i in VI.items()}
    head = v[v[:, 1] > 0.3]
    assert lm["nose"][2] > head[:, 2].max() - 0.005  # the most forward point of the face
    assert abs(lm["nose"][0]) < 0.01
    for side, sgn in (("left", 1), ("right", -1)):
        eye, ear = lm[f"{side}_eye"], lm[f"{side}_ear"]
        assert np.sign(eye[0]) == sgn and 0.015 < abs(eye[0]) < 0.05
        assert eye[1] > lm["nose"][1] and eye[2] > 0.06
        assert np.sign(ear[0]) == sgn and abs(ear[0]) > 0.07 and ear[2] < eye[2] - 0.05
        assert abs(ear[1] - eye[1]) < 0.05
        ankle = body["J"][JI[f"{side}_ankle"]]
        big, small, heel = lm[f"{side}_big_toe"], lm[f"{side}_small_toe"], lm[f"{side}_heel"]
        for p in (big, small, heel):
            assert np.sign(p[0]) == sgn and p[1] < ankle[1] - 0.04
        assert big[2] > ankle[2] + 0.15 and small[2] > ankle[2] + 0.13  # front of the foot
        assert abs(big[0]) < abs(small[0])  # big toe on the inside
        assert heel[2] < ankle[2] - 0.04  # heel at the back
        hand = body["J"][JI[f"{side}_hand"]]
        tips = [lm[f"{side}_{k}"] for k in ("index", "middle", "ring", "pinky")]
        for p in tips:
            assert sgn * p[0] > sgn * hand[0] + 0.07  # at the end of the hand
        zs = [p[2] for p in tips]
        assert zs == sorted(zs, reverse=True)  # index at the front, pinky at the back
        thumb = lm[f"{side}_thumb"]
        assert thumb[2] > zs[0] + 0.03 and sgn * thumb[0] < sgn * tips[0][0]
        # each landmark is skinned to its own body part
        part = {"big_toe": "foot", "heel": "ankle", "index": "hand", "thumb": "hand"}
        for k, j in part.items():
            assert w[VI[f"{side}_{k}"], JI[f"{side}_{j}"]] > 0.3, (side, k)
    # left/right landmarks mirror each other
    for n in C.VERTEX_JOINT_NAMES:
        if n.startswith("left_"):
            assert np.linalg.norm(lm[n] - lm["right_" + n[5:]] * (-1, 1, 1)) < 0.015, n


def _shaped(body, k, val):
    beta = np.zeros(10)
    beta[k] = val
    return body["v_template"] + body["shapedirs"] @ beta


def test_shapedirs_directions(body):
    f = body["f"].astype(np.int64)
    jr = body["J_regressor"]
    betas = np.linspace(-3, 3, 7)
    heights = [np.ptp(_shaped(body, 0, b)[:, 1]) for b in betas]
    assert np.all(np.diff(heights) > 0) and heights[-1] - heights[0] > 0.15
    vols = [signed_volume(_shaped(body, 1, b), f) for b in betas]
    assert np.all(np.diff(vols) > 0) and vols[-1] > 1.5 * vols[0]

    def shoulder_width(v):
        j = jr @ v
        return j[JI["left_shoulder"], 0] - j[JI["right_shoulder"], 0]

    def hip_width(v):
        return np.ptp(v[(v[:, 1] > -0.3) & (v[:, 1] < -0.2)][:, 0])

    def leg_len(v):
        j = jr @ v
        return j[JI["left_hip"], 1] - j[JI["left_ankle"], 1]

    def torso_len(v):
        j = jr @ v
        return j[JI["neck"], 1] - j[JI["pelvis"], 1]

    def head_width(v):
        return np.ptp(v[v[:, 1] > 0.36][:, 0])

    def belly(v):
        return v[np.abs(v[:, 1] + 0.07) < 0.03][:, 2].max()

    def girth(v, joint):
        sel = body["weights"][:, JI[joint]] > 0.95
        c = v[sel].mean(0)
        return np.linalg.norm(v[sel] - c, axis=1).mean()

    checks = {
        2: shoulder_width,
        3: hip_width,
        4: belly,
        8: leg_len,
        7: torso_len,
        9: head_width,
        5: lambda v: girth(v, "left_elbow"),
        6: lambda v: girth(v, "right_knee"),
    }
    for k, fn in checks.items():
        vals = [fn(_shaped(body, k, b)) for b in betas]
        assert np.all(np.diff(vals) > 0), k
    # directions are distinct and not tiny
    sd = body["shapedirs"].reshape(-1, 10)
    norms = np.linalg.norm(sd, axis=0)
    assert (norms > 0.1).all()
    cos = (sd.T @ sd) / np.outer(norms, norms)
    assert np.abs(cos - np.eye(10)).max() < 0.95


def edge_lipschitz(field, v, f):
    """max over mesh edges of |field_a - field_b| / |v_a - v_b| (field (V, 3, K) -> (K,))."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    dv = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    return (np.linalg.norm(field[e[:, 0]] - field[e[:, 1]], axis=1) / dv[:, None]).max(0)


def test_shapedirs_never_fold(body):
    f = body["f"].astype(np.int64)
    # smooth fields: no tears, and beta = 3 perturbs the Jacobian by less than 1
    assert (edge_lipschitz(body["shapedirs"], body["v_template"], f) < 0.3).all()
    n0 = face_normals(body["v_template"], f)
    rng = np.random.default_rng()
    betas = [np.eye(10)[k] * s for k in range(10) for s in (-3.0, 3.0)]
    betas += list(rng.standard_normal((5, 10)))
    for beta in betas:
        v = body["v_template"] + body["shapedirs"] @ beta
        n1 = face_normals(v, f)
        cos = (n0 * n1).sum(1) / np.linalg.norm(n0, axis=1) / np.linalg.norm(n1, axis=1)
        assert cos.min() > 0.0, beta
        assert signed_volume(v, f) > 0.02


def test_posedirs_local_and_bulging(body):
    pd, w, v = body["posedirs"], body["weights"], body["v_template"]
    f = body["f"].astype(np.int64)
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, f[:, k], face_normals(v, f))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rng = np.random.default_rng()
    for j in range(1, C.NUM_JOINTS):
        block = pd[:, :, 9 * (j - 1) : 9 * j]
        moved = np.abs(block).reshape(len(v), -1).max(1) > 0
        assert moved.any(), C.JOINT_NAMES[j]
        p = C.PARENTS[j]
        # only vertices skinned to both the joint and its parent move
        assert (w[moved, j] > 0).all() and (w[moved, p] > 0).all(), C.JOINT_NAMES[j]
        # zero far from the joint
        far = np.linalg.norm(v - body["J"][j], axis=1) > 0.3
        assert not moved[far].any(), C.JOINT_NAMES[j]
        # a real bend pushes the skin outwards by mm..cm
        r = rotation(rng.standard_normal(3), np.pi / 2)
        disp = block @ (r - np.eye(3)).ravel()
        mag = np.linalg.norm(disp, axis=1)
        assert 0.001 < mag.max() < 0.05, C.JOINT_NAMES[j]
        big = mag > 0.2 * mag.max()
        outward = (disp * normals).sum(1)[big] / mag[big]
        assert (outward > 0.2).mean() > 0.8 and outward.mean() > 0.5, C.JOINT_NAMES[j]
    assert np.abs(pd).max() < 0.05
    assert (edge_lipschitz(pd, v, f) < 0.6).all()  # smooth correctives


def test_deterministic_rebuild(body):
    again = P.build_procedural_body()
    for k in P.MODEL_KEYS:
        a, b = again[k], body[k]
        if sp.issparse(a):
            assert (a != b).nnz == 0, k
            a, b = a.toarray(), b.toarray()
        assert a.dtype == b.dtype and np.array_equal(a, b), k


def _assert_same(a_body, b_body):
    for k in P.MODEL_KEYS:
        a, b = dense(a_body[k]), dense(b_body[k])
        assert a.dtype == b.dtype and np.array_equal(a, b), k


def test_cache_roundtrip_and_corrupt_rebuild(body, tmp_path, monkeypatch):
    monkeypatch.setenv("HMR_FAST_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_build():
        calls.append(1)
        return {k: (v.copy() if hasattr(v, "copy") else v) for k, v in body.items()}

    monkeypatch.setattr(P, "build_procedural_body", fake_build)
    monkeypatch.setattr(P, "_WARNED", True)
    stale = tmp_path / "procedural-body-v0-0123456789ab.npz"
    stale.write_bytes(b"old")
    unrelated = tmp_path / "other.npz"
    unrelated.write_bytes(b"keep")
    first = P.load_procedural_body()
    assert len(calls) == 1 and P.cache_path().parent == tmp_path and P.cache_path().is_file()
    assert not stale.exists() and unrelated.exists()  # stale bodies are pruned
    assert P.cache_key() in P.cache_path().name
    _assert_same(first, body)
    first["v_template"][0, 0] = 1.0  # callers get private, writable copies
    first["J_regressor"].data[0] = 5.0
    _assert_same(P.load_procedural_body(), body)  # from the memory cache, unharmed
    assert len(calls) == 1
    P._load_cached.cache_clear()
    from_disk = P.load_procedural_body()
    assert len(calls) == 1  # read back, not rebuilt
    _assert_same(from_disk, body)
    assert from_disk["J_regressor"].format == "csc"
    for garbage in (b"not a zip", b"", b"PK\x03\x04 truncated"):
        P.cache_path().write_bytes(garbage)
        P._load_cached.cache_clear()
        rebuilt = P.load_procedural_body()
        _assert_same(rebuilt, body)
    assert len(calls) == 4
    # the rebuilt file is valid again
    P._load_cached.cache_clear()
    P.load_procedural_body()
    assert len(calls) == 4


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("HMR_FAST_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert P.cache_dir() == tmp_path / ".cache" / "hmr_fast"


def test_warns_once(body, monkeypatch):
    monkeypatch.setattr(P, "_WARNED", False)
    monkeypatch.setattr(P, "_load_cached", lambda: body)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        P.load_procedural_body()
        P.load_procedural_body()
    msgs = [
        r for r in rec if issubclass(r.category, UserWarning) and "procedural" in str(r.message)
    ]
    assert len(msgs) == 1


def test_write_model_smplx(body, tmp_path, monkeypatch):
    smplx = pytest.importorskip("smplx")
    monkeypatch.setattr(P, "_load_cached", lambda: body)
    monkeypatch.setattr(P, "_WARNED", True)
    pkl = P.write_procedural_model(tmp_path / "model.pkl")
    npz = P.write_procedural_model(tmp_path / "model.npz")
    with open(pkl, "rb") as fh:
        assert sp.issparse(pickle.load(fh, encoding="latin1")["J_regressor"])
    z = np.load(npz)
    assert set(z.files) == set(P.MODEL_KEYS)
    assert np.array_equal(z["J_regressor"], body["J_regressor"].toarray())
    assert np.array_equal(z["cocoplus_regressor"], body["cocoplus_regressor"].toarray())
    with pytest.raises(ValueError, match="npz"):
        P.write_procedural_model(tmp_path / "model.txt")

    torch.manual_seed(0)
    models = [
        smplx.SMPL(model_path=str(pkl), dtype=torch.float64),
        smplx.SMPL(model_path=str(npz), data_struct=smplx.utils.Struct(**z), dtype=torch.float64),
    ]
    betas = torch.randn(2, 10, dtype=torch.float64)
    outs = []
    for m in models:
        out = m(
            betas=betas,
            body_pose=0.3 * torch.randn(2, 69, dtype=torch.float64),
            global_orient=torch.zeros(2, 3, dtype=torch.float64),
        )
        assert torch.isfinite(out.vertices).all() and out.joints.shape == (2, 45, 3)
        zeros = torch.zeros(2, 69, dtype=torch.float64)
        rest = m(betas=betas, body_pose=zeros, global_orient=zeros[:, :3])
        expect = body["v_template"] + np.einsum("vck,bk->bvc", body["shapedirs"], betas.numpy())
        assert np.allclose(rest.vertices.detach().numpy(), expect, atol=1e-9)
        outs.append(rest)
    assert torch.allclose(outs[0].vertices, outs[1].vertices)
    # smplx's vertex joints are the landmark vertices
    assert np.allclose(
        outs[0].joints[0, 24:].detach().numpy(), expect[0][list(C.VERTEX_JOINT_IDS)], atol=1e-9
    )
    # bending the left elbow moves only the left arm
    pose = torch.zeros(1, 69, dtype=torch.float64)
    pose[0, 3 * (JI["left_elbow"] - 1) + 1] = -1.5
    bent = models[0](body_pose=pose).vertices[0].detach().numpy()
    moved = np.linalg.norm(bent - body["v_template"], axis=1) > 1e-6
    assert moved.any() and (body["v_template"][moved, 0] > 0.3).all()
