"""`hmr-fast demo`: one image -> HMR mesh, written as a PNG overlay and an OBJ (CPU, no OpenGL).

    hmr-fast demo --image person.jpg [--bbox x,y,w,h] --checkpoint runs/hmr --out demo_out

Without ``--bbox`` the whole image is the crop (padded to a square). With one, the crop is
HMR's convention: centred on the box, side 1.2 x the box's longer side. A box must be four
finite numbers with a positive width and height that overlap the image.

Photos above ``MAX_DECODE_PIXELS`` (12 MP) are decoded at 1/2, 1/4 or 1/8 size
(``cv2.IMREAD_REDUCED_*``, JPEGs scaled in the DCT domain) so that a 48-megapixel photo does
not take gigabytes; the box stays in the original photo's pixels, and the overlay PNG is
written at the decoded size.
Also home of the small rendering helpers that training (TensorBoard) and evaluation share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

BBOX_SCALE = 1.2  # crop side = 1.2 x max(w, h), as the importers' crops
MAX_DECODE_PIXELS = 12_000_000  # larger photos are decoded at a reduced size


def write_obj(path: str | Path, vertices, faces) -> Path:
    """Write a triangle mesh: vertices (V, 3), faces (F, 3) zero-based -> Wavefront OBJ."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    from hmr_fast.data.fileio import atomic_write_text

    path = Path(path)
    lines = ["# hmr-fast HMR prediction (camera frame: x right, y down, z forward; metres)"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"f {a} {b} {c}" for a, b, c in f + 1]
    return atomic_write_text(path, "\n".join(lines) + "\n")


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
    """'x,y,w,h' -> 4 floats (checked by :func:`check_bbox`)."""
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--bbox must be x,y,w,h (4 numbers), got {text!r}") from None
    return check_bbox((x, y, w, h))


def check_bbox(bbox, image_hw=None) -> tuple[float, float, float, float]:
    """A box (x, y, w, h) in pixels: finite, w and h > 0, and overlapping an image of
    ``image_hw`` (H, W) when given. ValueError naming --bbox otherwise."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"--bbox must be 4 numbers x,y,w,h, got {bbox!r}") from None
    if not all(np.isfinite([x, y, w, h])):
        raise ValueError(f"--bbox must be 4 finite numbers, got {x},{y},{w},{h}")
    if w <= 0 or h <= 0:
        raise ValueError(f"--bbox width and height must be > 0, got {x},{y},{w},{h}")
    if image_hw is not None:
        ih, iw = image_hw
        if x >= iw or y >= ih or x + w <= 0 or y + h <= 0:
            raise ValueError(
                f"--bbox {x},{y},{w},{h} lies outside the {iw}x{ih} image"
            )
    return x, y, w, h


def crop_params(image_shape, bbox=None) -> tuple[np.ndarray, float]:
    """(center (2,), scale) of the crop: the bbox's (x 1.2) or the whole image's."""
    h, w = image_shape[:2]
    if bbox is None:
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), max(h, w) / 200.0
    x, y, bw, bh = check_bbox(bbox)
    center = np.array([x + bw / 2.0 - 0.5, y + bh / 2.0 - 0.5])
    return center, BBOX_SCALE * max(bw, bh) / 200.0


def image_hw(path: str | Path) -> tuple[int, int] | None:
    """(H, W) from the file's header without decoding it; None when it cannot be told."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        return None  # huge: the caller decodes it at the smallest size
    except (OSError, ValueError):
        return None
    return int(h), int(w)


def decode_reduction(hw, max_pixels: int | None = None) -> int:
    """1, 2, 4 or 8: the smallest decode reduction bringing H x W under ``max_pixels``
    (default ``MAX_DECODE_PIXELS``); 8 when the header could not tell the size (PIL refuses
    decompression bombs)."""
    if hw is None:
        return 8
    max_pixels = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    r = 1
    while r < 8 and hw[0] * hw[1] / (r * r) > max_pixels:
        r *= 2
    return r


def read_image(path: str | Path, reduction: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 RGB, decoded at 1/reduction size. FileNotFoundError / ValueError name
    the path (also for a truncated file)."""
    import cv2

    from hmr_fast.data.images import ImageReadError, read_image_bgr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        bgr = read_image_bgr(path, reduction)
    except ImageReadError as exc:
        raise ValueError(f"not an image OpenCV can read completely: {exc}") from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@torch.no_grad()
def predict(
    model, image_rgb: np.ndarray, image_size: int, bbox=None, device="cpu", reduction: int = 1,
    padding: str = "zero",
) -> dict:
    """Crop, run HMR, and map the mesh back to the full image.

    ``image_rgb`` may be decoded at 1/``reduction`` size (``read_image``); ``bbox`` is in the
    original photo's pixels either way.
    Returns numpy: ``vertices`` (V, 3), ``cam`` (3,), ``crop`` (S, S, 3) uint8, ``matrix``
    (2, 3) image_rgb -> crop pixels, ``pose`` (72,), ``betas`` (10,), ``keypoints_2d`` (19, 2).
    ``padding``: what fills the crop beyond the photo, as the model was trained (its
    config's ``crop_padding``).
    """
    from hmr_fast.data.augment import crop_matrix, normalize_image, warp_image
    from hmr_fast.data.images import reduced_coords

    center, scale = crop_params(image_rgb.shape, bbox)
    if bbox is not None and reduction > 1:
        center, scale = reduced_coords(center, reduction), scale / reduction
    m = crop_matrix(center, scale, image_size)
    crop = warp_image(image_rgb, m, image_size, padding=padding)
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


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """(H, W, 3) uint8 RGB -> an image file in the format of ``path``'s suffix, atomically.
    OSError when it cannot be encoded or written."""
    import cv2

    from hmr_fast.data.fileio import atomic_write_bytes

    ok, buf = cv2.imencode(Path(path).suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: could not encode the image")
    return atomic_write_bytes(path, buf.tobytes())


def run_demo(image: str, checkpoint: str, out: str, bbox=None, device: str = "cpu") -> dict:
    """The `hmr-fast demo` work; returns the written paths."""
    from hmr_fast.data.fileio import atomic_savez, check_writable
    from hmr_fast.train.build import load_trained_model

    if not Path(image).is_file():
        raise FileNotFoundError(f"image not found: {image}")
    hw = image_hw(image)
    if bbox is not None:
        bbox = check_bbox(bbox, hw)
    reduction = decode_reduction(hw)
    rgb = read_image(image, reduction)
    if hw is None and bbox is not None:  # size known only now, from the reduced decode
        check_bbox(bbox, (rgb.shape[0] * reduction, rgb.shape[1] * reduction))
    check_writable(Path(out) / f"{Path(image).stem}.obj", "demo output")
    model, cfg = load_trained_model(checkpoint, device)
    pred = predict(model, rgb, cfg.image_size, bbox, device, reduction, cfg.crop_padding)
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
    write_image(paths["overlay"], full)
    write_image(paths["crop"], crop)
    write_obj(paths["obj"], pred["vertices"], faces)
    params = {k: pred[k] for k in ("pose", "betas", "cam")}
    atomic_savez(out_dir / f"{stem}_params.npz", **params)
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
    except OSError as exc:  # the output folder cannot be written
        print(f"hmr-fast demo: error: cannot write the outputs: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
