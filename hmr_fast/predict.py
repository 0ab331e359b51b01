"""`hmr-fast predict`: pretrained weights (SPIN's or hmr-fast's) on images, folders and videos.

    hmr-fast predict photo.jpg frames/ clip.mp4 --checkpoint model_checkpoint.pt \
        [--mean-params smpl_mean_params.npz] --out results/ \
        [--bbox x,y,w,h | --bbox-json F | --openpose F | --detect] [--save-mesh] [--no-render]

The person box: ``--bbox`` (pixels), ``--bbox-json`` (SPIN's demo format ``{"bbox": [x, y,
w, h]}``; a file for every input, or a folder of ``<stem>.json``), ``--openpose`` (an OpenPose
json, or a folder of ``<stem>_keypoints.json``/``<stem>.json``: for each person, the box
around the keypoints with confidence > 0.2), ``--detect`` (OpenCV's HOG people detector, every
person found), or none: the whole image is the crop, as in HMR's demo. A box is scaled 1.2x
into a square crop, as SPIN and HMR do.

Each image gives ``<stem>.npz`` (per person: rotmats, axis-angle pose, betas, cam, box,
center, scale, 2D joints in image pixels; vertices with ``--save-mesh``, plus one ``.obj``
per person), ``<stem>_overlay.jpg`` (the mesh over the full-resolution image) and
``<stem>_side.jpg`` (a side view). A video gives ``<stem>_overlay.mp4`` (same frame count and
rate) and one ``<stem>.npz`` of per-frame arrays (the first person of each frame; ``valid``
marks frames with one). Unreadable inputs are skipped and counted in the summary; the exit
status is non-zero when nothing was produced.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
OPENPOSE_MIN_CONFIDENCE = 0.2  # SPIN's and HMR's threshold for the keypoint box
BOX_RESCALE = 1.2  # crop side = 1.2 x the box's longer side (SPIN, HMR)
SIDE_VIEW_SIZE = 512


@dataclass
class Person:
    """One crop: its box (x, y, w, h) in image pixels, crop centre (2,) and scale
    (side = 200 * scale pixels)."""

    box: np.ndarray
    center: np.ndarray
    scale: float

    def rescaled(self, reduction: float) -> Person:
        """The same person in an image decoded at 1/reduction size (pixel i of the reduced
        image covers source pixels [r i, r i + r)); reduction < 1 maps back."""
        from hmr_fast.data.images import reduced_coords

        return Person(np.concatenate([reduced_coords(self.box[:2], reduction),
                                      self.box[2:] / reduction]),
                      reduced_coords(self.center, reduction), self.scale / reduction)


# ------------------------------------------------------------------------------ boxes
def box_person(box) -> Person:
    """A person from a box (x, y, w, h): crop centred on it, side 1.2 x its longer side."""
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"box: expected finite x, y and positive w, h, got {box}")
    center = np.array([x + w / 2.0, y + h / 2.0])
    return Person(np.array([x, y, w, h]), center, BOX_RESCALE * max(w, h) / 200.0)


def whole_image_person(shape) -> Person:
    """The whole image as the crop (padded to a square), HMR's demo default."""
    h, w = shape[:2]
    return Person(np.array([0.0, 0.0, w, h]), np.array([w / 2.0, h / 2.0]), max(h, w) / 200.0)


def openpose_people(path: Path) -> list[Person]:
    """Boxes around each OpenPose person's keypoints with confidence > 0.2."""
    try:
        data = json.loads(Path(path).read_text())
        people = data["people"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"openpose: {path}: not an OpenPose json with a 'people' list "
                         f"({err})") from None
    result = []
    for person in people:
        kp = np.asarray(person.get("pose_keypoints_2d", []), np.float64).reshape(-1, 3)
        valid = kp[kp[:, 2] > OPENPOSE_MIN_CONFIDENCE, :2]
        if len(valid) < 2:
            continue
        lo, hi = valid.min(0), valid.max(0)
        result.append(box_person([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]))
    return result


def bbox_json_person(path: Path) -> Person:
    try:
        box = json.loads(Path(path).read_text())["bbox"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"bbox-json: {path}: expected {{\"bbox\": [x, y, w, h]}} ({err})") \
            from None
    if len(box) != 4:
        raise ValueError(f"bbox-json: {path}: expected 4 numbers, got {box}")
    return box_person(box)


def detect_people(image_rgb: np.ndarray, max_side: int = 800) -> list[Person]:
    """OpenCV's HOG people detector (offline, no weights to fetch), non-maximum suppressed,
    run on a copy at most `max_side` pixels wide."""
    import cv2

    h, w = image_rgb.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    small = cv2.resize(image_rgb, (round(w * factor), round(h * factor))) if factor < 1 \
        else image_rgb
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return []
    scores = np.asarray(weights, np.float64).reshape(-1)
    keep = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], scores.tolist(), 0.0, 0.45)
    order = sorted(np.asarray(keep).reshape(-1), key=lambda i: -scores[i])
    return [box_person(np.asarray(rects[i], np.float64) / factor) for i in order]


class BoxSource:
    """Which people to crop in an image, from the command line's box options."""

    def __init__(self, bbox=None, bbox_json=None, openpose=None, detect=False):
        given = [x is not None for x in (bbox, bbox_json, openpose)] + [bool(detect)]
        if sum(given) > 1:
            raise ValueError("choose one of --bbox, --bbox-json, --openpose, --detect")
        self.bbox, self.detect = bbox, detect
        self.bbox_json = None if bbox_json is None else Path(bbox_json)
        self.openpose = None if openpose is None else Path(openpose)
        for name, path in (("bbox-json", self.bbox_json), ("openpose", self.openpose)):
            if path is not None and not path.exists():
                raise FileNotFoundError(f"--{name}: {path} does not exist")

    @staticmethod
    def _per_input(path: Path, stem: str, names: tuple[str, ...]) -> Path:
        if path.is_file():
            return path
        for name in names:
            candidate = path / name.format(stem=stem)
            if candidate.is_file():
                return candidate
        raise ValueError(f"no box file for {stem!r} in {path} (looked for "
                         f"{', '.join(n.format(stem=stem) for n in names)})")

    def people(self, image_rgb: np.ndarray, stem: str) -> list[Person]:
        if self.bbox is not None:
            return [box_person(self.bbox)]
        if self.bbox_json is not None:
            return [bbox_json_person(self._per_input(self.bbox_json, stem, ("{stem}.json",)))]
        if self.openpose is not None:
            return openpose_people(self._per_input(
                self.openpose, stem, ("{stem}_keypoints.json", "{stem}.json")))
        if self.detect:
            return detect_people(image_rgb)
        return [whole_image_person(image_rgb.shape)]


# ------------------------------------------------------------------------------ inputs
def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str, str]]]:
    """Files to process (folders expanded, sorted) and (input, reason, detail) skipped."""
    files, skipped = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
            if not found:
                skipped.append((item, "empty folder", "holds no image or video"))
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS:
                files.append(path)
            else:
                skipped.append((item, "unknown file type", f"suffix {path.suffix!r} is not "
                                "one of " + " ".join(IMAGE_EXTS + VIDEO_EXTS)))
        else:
            skipped.append((item, "missing", "does not exist"))
    return files, skipped


def read_image(path: Path) -> tuple[np.ndarray, int]:
    """(H, W, 3) uint8 RGB and its decode reduction: very large photos are decoded at 1/2,
    1/4 or 1/8 size (hmr_fast.demo.decode_reduction); a truncated file is refused. ValueError
    names the file."""
    from hmr_fast.demo import decode_reduction, image_hw
    from hmr_fast.demo import read_image as read_complete

    reduction = decode_reduction(image_hw(path))
    return read_complete(path, reduction), reduction


# ------------------------------------------------------------------------------ model
class Predictor:
    """Crops, the network in batches, and the mapping back to image pixels."""

    def __init__(self, model, batch_size: int = 8, device="cpu", bf16: bool = False):
        # channels_last: oneDNN's convolutions run 1.5-2x faster on this project's 2-core
        # CPUs in that layout (BENCHMARKS.md, predict); only 4-D conv weights change.
        self.model = model.eval().to(device, memory_format=torch.channels_last)
        self.size = model.image_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.bf16 = bf16
        self.faces = np.asarray(self._smpl().faces_tensor.cpu().numpy(), np.int64)

    def _smpl(self):
        return self.model.smpl if self.model.smpl is not None else self.model.regressor.smpl

    def crop(self, image_rgb: np.ndarray, person: Person):
        """(normalised (3, S, S) crop, (2, 3) image->crop pixel matrix)."""
        from hmr_fast.data.augment import crop_matrix, normalize_image, warp_image

        m = crop_matrix(person.center, person.scale, self.size)
        padding = getattr(self.model, "crop_padding", "zero")  # as the model was trained
        return normalize_image(warp_image(image_rgb, m, self.size, padding=padding)), m

    @torch.inference_mode()
    def run(self, crops: list[np.ndarray], with_vertices: bool) -> dict[str, np.ndarray]:
        """Network + SMPL over crops (N, 3, S, S), in batches; numpy outputs."""
        outs: dict[str, list] = {}
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(np.stack(crops[start:start + self.batch_size])).to(
                self.device, memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(x)
            for key, value in out.items():
                if key == "vertices" and not with_vertices:
                    continue
                outs.setdefault(key, []).append(value.float().cpu().numpy())
        return {k: np.concatenate(v) for k, v in outs.items()}


def joints_in_image(joints: np.ndarray, cam: np.ndarray, person: Person) -> np.ndarray:
    """(J, 3) model joints + weak-perspective cam -> (J, 2) image pixels."""
    from hmr_fast.data.augment import crop_to_image

    u = cam[0] * (joints[:, :2] + cam[1:3])
    return crop_to_image(u, person.center, person.scale)


def render_people(image_rgb, pred: dict, people: list[Person], faces, size: int):
    """Every person's mesh over the full image, farthest (smallest scale s) first."""
    from hmr_fast.data.augment import crop_matrix
    from hmr_fast.demo import render_on_image

    out = np.ascontiguousarray(image_rgb)
    for i in sorted(range(len(people)), key=lambda i: pred["cam"][i][0]):
        m = crop_matrix(people[i].center, people[i].scale, size)
        out = render_on_image(out, {"vertices": pred["vertices"][i], "cam": pred["cam"][i],
                                    "matrix": m}, faces, size)
    return out


def side_view(vertices: np.ndarray, faces) -> np.ndarray:
    """The meshes turned 90° about the vertical axis, on a grey square."""
    from hmr_fast.render import render_mesh

    size = SIDE_VIEW_SIZE
    canvas = np.full((size, size, 3), 96, np.uint8)
    if len(vertices) == 0:
        return canvas
    pts = vertices.reshape(-1, 3)
    centre = pts.mean(0)
    extent = max(float(np.ptp(pts[:, 1])), float(np.ptp(pts[:, 2])), 1e-6)
    k = 0.8 * size / extent
    for v in vertices:
        rel = v - centre
        # x' = -z, z' = x: a turn about y seen from the person's left.
        px = np.stack([-rel[:, 2] * k + size / 2, rel[:, 1] * k + size / 2, rel[:, 0] * k], 1)
        canvas = render_mesh(px, faces, image=canvas)
    return canvas


# ------------------------------------------------------------------------------ writers
def person_arrays(pred: dict, people: list[Person], with_vertices: bool) -> dict:
    """The per-person arrays of one image's npz."""
    from hmr_fast.ops.rotations import rotmat_to_axis_angle

    n = len(people)
    rotmats = pred["rotmats"].reshape(n, 24, 3, 3)
    arrays = {
        "rotmats": rotmats,
        "pose": rotmat_to_axis_angle(torch.from_numpy(rotmats)).reshape(n, 72).numpy(),
        "betas": pred["betas"], "cam": pred["cam"],
        "box": np.stack([p.box for p in people]).astype(np.float32),
        "center": np.stack([p.center for p in people]).astype(np.float32),
        "scale": np.array([p.scale for p in people], np.float32),
        "joints_2d": np.stack([joints_in_image(pred["joints"][i], pred["cam"][i], people[i])
                               for i in range(n)]).astype(np.float32),
    }
    if with_vertices:
        arrays["vertices"] = pred["vertices"]
    return arrays


@dataclass
class ImageJob:
    """One image on its way through `predict_images`: the decoded picture, its decode
    reduction and people (boxes in the input's pixels) and their crops."""

    path: Path
    image: np.ndarray
    reduction: int
    people: list[Person]
    crops: list[np.ndarray]


def prepare_image(path: Path, predictor: Predictor, boxes: BoxSource) -> ImageJob:
    """Decode, find the people (boxes in the input's own pixels) and crop them."""
    image, reduction = read_image(path)
    people = boxes.people(image, path.stem)
    if boxes.detect and reduction > 1:  # detected on the reduced picture
        people = [p.rescaled(1.0 / reduction) for p in people]
    if not people:
        raise LookupError("no person found")
    crops = [predictor.crop(image, p.rescaled(reduction))[0] for p in people]
    return ImageJob(path, image, reduction, people, crops)


def write_image_outputs(job: ImageJob, pred: dict, predictor: Predictor, out_dir: Path,
                        save_mesh: bool, render: bool) -> list[Path]:
    """One image's npz (+ obj per person), overlay and side view."""
    from hmr_fast.data.fileio import atomic_savez
    from hmr_fast.demo import write_image, write_obj

    stem = job.path.stem
    written = [atomic_savez(out_dir / f"{stem}.npz", decode_reduction=np.int32(job.reduction),
                            **person_arrays(pred, job.people, save_mesh))]
    if save_mesh:
        for i, verts in enumerate(pred["vertices"]):
            written.append(write_obj(out_dir / f"{stem}_{i}.obj", verts, predictor.faces))
    if render:
        shown = [p.rescaled(job.reduction) for p in job.people]
        overlay = render_people(job.image, pred, shown, predictor.faces, predictor.size)
        write_image(out_dir / f"{stem}_overlay.jpg", overlay)
        write_image(out_dir / f"{stem}_side.jpg", side_view(pred["vertices"],
                                                             predictor.faces))
        written += [out_dir / f"{stem}_overlay.jpg", out_dir / f"{stem}_side.jpg"]
    return written


def predict_images(paths: list[Path], predictor: Predictor, boxes: BoxSource, out_dir: Path,
                   save_mesh: bool, render: bool, skipped: list, progress=None) -> int:
    """Images in groups of `predictor.batch_size`: one network call per group (its people's
    crops together), then each image's outputs. Returns how many images were written; each
    failure is appended to `skipped` as (input, reason, detail)."""
    done = 0
    for start in range(0, len(paths), predictor.batch_size):
        jobs = []
        for path in paths[start:start + predictor.batch_size]:
            try:
                jobs.append(prepare_image(path, predictor, boxes))
            except (LookupError, ValueError, OSError) as err:
                skipped.append(_skip(path, err))
        crops = [c for job in jobs for c in job.crops]
        pred = predictor.run(crops, with_vertices=save_mesh or render) if crops else {}
        offset = 0
        for job in jobs:
            n = len(job.people)
            mine = {k: v[offset:offset + n] for k, v in pred.items()}
            offset += n
            try:
                write_image_outputs(job, mine, predictor, out_dir, save_mesh, render)
                done += 1
            except OSError as err:
                skipped.append(_skip(job.path, err))
        if progress is not None:
            progress.update(len(paths[start:start + predictor.batch_size]))
    return done


def _skip(path, err: Exception) -> tuple[str, str, str]:
    """(input, reason, detail) for the summary."""
    if isinstance(err, LookupError):
        return str(path), "no person found", str(err)
    if isinstance(err, ValueError):
        return str(path), "unreadable input or box", str(err)
    return str(path), "could not read or write", str(err)


def process_video(path: Path, predictor: Predictor, boxes: BoxSource, out_dir: Path,
                  save_mesh: bool, render: bool) -> list[Path]:
    """A video, frame by frame in batches: overlay video (same frame count and rate) and one
    npz of per-frame arrays of each frame's first person."""
    import cv2

    from hmr_fast.data.fileio import atomic_savez

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: not a video OpenCV can read")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer, frames, records = None, [], []
    video_out = out_dir / f"{path.stem}_overlay.mp4"
    tmp_video = out_dir / f".{path.stem}_overlay.mp4.tmp.mp4"

    def flush():
        nonlocal writer
        found = [(i, f, p[0]) for i, (f, p) in enumerate(frames) if p]
        pred = predictor.run([predictor.crop(f, p)[0] for _, f, p in found],
                             with_vertices=save_mesh or render) if found else {}
        by_frame = {i: j for j, (i, _, _) in enumerate(found)}
        for i, (frame, people) in enumerate(frames):
            j = by_frame.get(i)
            one = None if j is None else {k: v[j:j + 1] for k, v in pred.items()}
            records.append((one, people[:1]))
            if render:
                shown = frame if one is None else render_people(frame, one, people[:1],
                                                                predictor.faces, predictor.size)
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"),
                                             fps, (w, h))
                writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        frames.clear()

    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            # Per-frame box files follow OpenPose's video naming: <stem>_<frame:012d>.
            index = len(records) + len(frames)
            frames.append((rgb, boxes.people(rgb, f"{path.stem}_{index:012d}")))
            if len(frames) == predictor.batch_size:
                flush()
        if frames:
            flush()
        if writer is not None:
            writer.release()
            tmp_video.replace(video_out)
    finally:
        capture.release()
        if tmp_video.exists():
            tmp_video.unlink()
    if not records:
        raise ValueError(f"{path}: no frame could be decoded")
    arrays = _video_arrays(records, save_mesh)
    written = [atomic_savez(out_dir / f"{path.stem}.npz", fps=np.float32(fps), **arrays)]
    return written + ([video_out] if render else [])


def _video_arrays(records, with_vertices: bool) -> dict:
    """Per-frame arrays (F, ...), NaN where a frame had no person, and `valid` (F,)."""
    template = next((person_arrays(p, people, with_vertices) for p, people in records
                     if p is not None), None)
    valid = np.array([p is not None for p, _ in records])
    if template is None:
        return {"valid": valid}
    arrays = {k: np.full((len(records),) + v.shape[1:], np.nan, np.float32)
              for k, v in template.items()}
    for i, (p, people) in enumerate(records):
        if p is not None:
            for k, v in person_arrays(p, people, with_vertices).items():
                arrays[k][i] = v[0]
    return {"valid": valid, **arrays}


# ------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hmr-fast predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="images, folders of images, videos")
    parser.add_argument("--checkpoint", required=True, help="SPIN or hmr-fast checkpoint")
    parser.add_argument("--mean-params", default=None, help="SPIN's smpl_mean_params.npz")
    parser.add_argument("--smpl", default=None, help="SMPL model file or folder (SPIN weights)")
    parser.add_argument("--out", required=True, help="output folder")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--bbox", help="x,y,w,h of the person in pixels")
    boxes.add_argument("--bbox-json", help='{"bbox": [x, y, w, h]} file, or a folder of them')
    boxes.add_argument("--openpose", help="OpenPose json, or a folder of them")
    boxes.add_argument("--detect", action="store_true", help="OpenCV HOG person detector")
    parser.add_argument("--save-mesh", action="store_true", help="vertices in the npz + .obj")
    parser.add_argument("--no-render", action="store_true", help="skip overlays and side views")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per network call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast for the network (see BENCHMARKS.md for its cost)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    from hmr_fast.pretrained import load_pretrained

    try:
        bbox = None
        if args.bbox is not None:
            from hmr_fast.demo import parse_bbox

            bbox = parse_bbox(args.bbox)
        source = BoxSource(bbox, args.bbox_json, args.openpose, args.detect)
        model = load_pretrained(args.checkpoint, mean_params=args.mean_params, smpl=args.smpl,
                                map_location=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"hmr-fast predict: {err}", file=sys.stderr)
        return 2
    predictor = Predictor(model, args.batch_size, args.device, args.bf16)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, skipped = expand_inputs(args.inputs)
    from tqdm import tqdm

    images = [p for p in files if p.suffix.lower() not in VIDEO_EXTS]
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTS]
    with tqdm(total=len(files), desc="predict", unit="file", disable=args.no_progress) as bar:
        done = predict_images(images, predictor, source, out_dir, args.save_mesh,
                              not args.no_render, skipped, bar)
        for path in videos:
            try:
                process_video(path, predictor, source, out_dir, args.save_mesh,
                              not args.no_render)
                done += 1
            except (LookupError, ValueError, OSError) as err:
                skipped.append(_skip(path, err))
            bar.update(1)
    print(f"predict: {done} input(s) written to {out_dir}, {len(skipped)} skipped")
    for item, _, detail in skipped:
        print(f"  skipped {item}: {detail}")
    if skipped:
        counts = Counter(reason for _, reason, _ in skipped)
        print("  skipped by reason: " + ", ".join(f"{r}: {n}" for r, n in counts.items()))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
