"""`hmr-fast demo`: one image -> HMR mesh, written as a PNG overlay and an OBJ (CPU, no OpenGL).

    hmr-fast demo --image person.jpg [--bbox x,y,w,h] --checkpoint runs/hmr --out demo_out

Without ``--bbox`` the whole image is the crop (padded to a square). With one, the crop is
HMR's convention: centred on the box, side 1.2 x the box's longer side.
Also home of the small rendering helpers that training (TensorBoard) and evaluation share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

BBOX_SCALE = 1.2  # crop side = 1.2 x max(w, h), as the importers' crops


def write_obj(path: str | Path, vertices, faces) -> Path:
    """Write a triangle mesh: vertices (V, 3), faces (F, 3) zero-based -> Wavefront OBJ."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# hmr-fast HMR prediction (camera frame: x right, y down, z forward; metres)"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"f {a} {b} {c}" for a, b, c in f + 1]
    path.write_text("\n".join(lines) + "\n")
    return path


def overlay_mesh(image, vertices, cam, faces, colors=None, alpha: float = 0.85) -> np.ndarray:
    """Draw a predicted mesh over its (square) crop.

    Args:
        image: (S, S, 3) uint8 RGB crop the model saw.
        vertices: (V, 3) predicted vertices (HMR camera frame).
        cam: (3,) weak-perspective camera [s, tx, ty].
        faces: (F, 3) int.
    Returns:
        (S, S, 3) uint8.
    """
    from hmr_fast.render import render_mesh, weak_perspective_pixels

    image = np.ascontiguousarray(image)
    px = weak_perspective_pixels(_np(vertices), _np(cam), image.shape[0])
    return render_mesh(px, faces, image=image, colors=colors, alpha=alpha)


def overlay_batch(images: torch.Tensor, vertices, cams, faces, n: int | None = None) -> np.ndarray:
    """Normalised input crops (B, 3, S, S) + predictions -> (B, S, 2S, 3) uint8 (input | mesh)."""
    from hmr_fast.data.augment import denormalize_image

    n = len(images) if n is None else min(n, len(images))
    rows = []
    for i in range(n):
        crop = denormalize_image(_np(images[i]))
        rows.append(np.concatenate([crop, overlay_mesh(crop, vertices[i], cams[i], faces)], 1))
    return np.stack(rows)


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def model_faces(model) -> np.ndarray:
    """(F, 3) int64 faces of the model's SMPL layer."""
    smpl = getattr(model, "smpl", None)
    faces = getattr(smpl, "faces", None) if smpl is not None else getattr(model, "faces", None)
    if faces is None:
        raise ValueError("the model exposes no SMPL faces (expected model.smpl.faces)")
    return np.asarray(faces, np.int64)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--bbox must be x,y,w,h (4 numbers), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--bbox width and height must be > 0, got {text!r}")
    return x, y, w, h


def crop_params(image_shape, bbox=None) -> tuple[np.ndarray, float]:
    """(center (2,), scale) of the crop: the bbox's (x 1.2) or the whole image's."""
    h, w = image_shape[:2]
    if bbox is None:
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), max(h, w) / 200.0
    x, y, bw, bh = bbox
    center = np.array([x + bw / 2.0 - 0.5, y + bh / 2.0 - 0.5])
    return center, BBOX_SCALE * max(bw, bh) / 200.0


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. FileNotFoundError / ValueError name the path."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@torch.no_grad()
def predict(model, image_rgb: np.ndarray, image_size: int, bbox=None, device="cpu") -> dict:
    """Crop, run HMR, and map the mesh back to the full image.

    Returns numpy: ``vertices`` (V, 3), ``cam`` (3,), ``crop`` (S, S, 3) uint8, ``matrix``
    (2, 3) image -> crop pixels, ``pose`` (72,), ``betas`` (10,), ``keypoints_2d`` (19, 2).
    """
    from hmr_fast.data.augment import crop_matrix, normalize_image, warp_image

    center, scale = crop_params(image_rgb.shape, bbox)
    m = crop_matrix(center, scale, image_size)
    crop = warp_image(image_rgb, m, image_size)
    x = torch.from_numpy(normalize_image(crop))[None].to(device)
    model.eval()
    out = model(x, return_verts=True)
    return {
        "vertices": _np(out["vertices"][0]),
        "cam": _np(out["cam"][0]),
        "pose": _np(out["pose"][0]),
        "betas": _np(out["betas"][0]),
        "keypoints_2d": _np(out["keypoints_2d"][0]),
        "crop": crop,
        "matrix": m,
    }


def render_on_image(image_rgb, pred: dict, faces, image_size: int) -> np.ndarray:
    """The predicted mesh drawn over the full original image (crop pixels mapped back)."""
    from hmr_fast.render import render_mesh, weak_perspective_pixels

    q = weak_perspective_pixels(pred["vertices"], pred["cam"], image_size)
    m = pred["matrix"]
    lin_inv = np.linalg.inv(m[:, :2])
    px = np.empty_like(q)
    px[:, :2] = (q[:, :2] - m[:, 2]) @ lin_inv.T
    # Depth only orders the faces and shades them; keep it in image-pixel units.
    px[:, 2] = q[:, 2] * np.sqrt(abs(np.linalg.det(lin_inv)))
    return render_mesh(px, faces, image=np.ascontiguousarray(image_rgb), alpha=0.85)


def run_demo(image: str, checkpoint: str, out: str, bbox=None, device: str = "cpu") -> dict:
    """The `hmr-fast demo` work; returns the written paths."""
    import cv2

    from hmr_fast.train.trainer import load_trained_model

    rgb = read_image(image)
    model, cfg = load_trained_model(checkpoint, device)
    pred = predict(model, rgb, cfg.image_size, bbox, device)
    faces = model_faces(model)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(image).stem
    full = render_on_image(rgb, pred, faces, cfg.image_size)
    crop = overlay_mesh(pred["crop"], pred["vertices"], pred["cam"], faces)
    paths = {
        "overlay": out_dir / f"{stem}_mesh.png",
        "crop": out_dir / f"{stem}_crop_mesh.png",
        "obj": out_dir / f"{stem}.obj",
    }
    cv2.imwrite(str(paths["overlay"]), cv2.cvtColor(full, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(paths["crop"]), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    write_obj(paths["obj"], pred["vertices"], faces)
    params = {k: pred[k] for k in ("pose", "betas", "cam")}
    np.savez(out_dir / f"{stem}_params.npz", **params)
    return {k: str(v) for k, v in paths.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast demo", description=__doc__.splitlines()[0])
    p.add_argument("--image", required=True)
    p.add_argument("--bbox", help="x,y,w,h of the person in pixels (default: whole image)")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        bbox = parse_bbox(args.bbox) if args.bbox else None
        paths = run_demo(args.image, args.checkpoint, args.out, bbox, args.device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hmr-fast demo: error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
