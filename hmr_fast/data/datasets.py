"""Training / evaluation datasets over annotation npz files (``hmr_fast.data.formats``).

``KeypointDataset(npz_path, image_root, image_size=224, train=True, ...)`` items (tensors):

==============  ===========  =====================================================
``img``         (3, S, S)    float32, RGB, ImageNet-normalised
``keypoints_2d`` (19, 3)     HMR's 19 keypoints in [-1, 1] crop coords + label flag
``keypoints_3d`` (14, 4)     LSP-14 3D joints (metres, camera frame) + validity
``pose``        (72,)        SMPL pose (zeros where ``has_smpl`` is 0)
``betas``       (10,)        SMPL shape
``has_smpl``    ()           float32 flag
``has_3d``      ()           float32 flag: the row has at least one valid 3D joint
``index``       ()           int64 npz row the sample came from (after substitution)
``skipped``     ()           int64 unreadable images met while producing this sample
``image_ok``    ()           bool: False only with ``on_unreadable="skip"`` when the row's
                             image could not be read (the item is then a black placeholder
                             that must not be scored)
``center``      (2,)         float32 crop centre in the source image (un-augmented)
``scale``       ()           float32 crop scale (box side / 200)
``flip``        ()           float32 1 when the sample was mirrored
==============  ===========  =====================================================
With ``return_masks=True`` also ``part_mask`` (S, S) uint8 (0 background, 1..6 LSP parts,
mirrored labels swapped on flips), ``silhouette`` (S, S) uint8 (0/1), ``has_mask`` () and
``mask_state`` () int64: 0 no mask listed for the row, 1 read, 2 listed but unreadable. Masks
are read from ``mask_root`` (default: the image root; SPIN keeps LSP's in ``upi-s1h``).

Bad data never stops a run:

* non-finite labels are unlabelled joint by joint (``formats.clean_labels``), counted in
  ``label_counts``; rows whose crop is unusable (``formats.invalid_rows``) are dropped at
  construction and counted in ``num_invalid_rows``;
* an image that cannot be read completely (missing, corrupt, empty, truncated: see
  ``hmr_fast.data.images``) is, with ``on_unreadable="substitute"`` (training), replaced by
  another row chosen deterministically from the index; with ``"skip"`` (evaluation) the item
  is returned with ``image_ok`` False so that the caller leaves it out. Either way it is
  counted: in the dataset object of the process that read it (``image_failures``; with
  DataLoader workers each worker has its own copy) and in the returned sample's ``skipped``
  field, which is what a caller should sum over batches;
* ``report_skipped(image_failures=None)`` emits ONE warning summarising both counts (pass the
  summed ``skipped`` from the batches when using workers) and returns them.
If ``max_retries`` consecutive substitutes fail too, a RuntimeError names an example path.
Do not call ``cv2.setNumThreads`` inside forked DataLoader workers: it can deadlock on the
thread pool inherited from the parent (seen with opencv-python-headless 5.0).

Decoding: when the crop is at least twice smaller than the source box (after the largest
zoom), the image is read at 1/2, 1/4 or 1/8 size (``cv2.IMREAD_REDUCED_COLOR_*``: JPEG
scales in the DCT domain, faster and anti-aliased) and the row's coordinates are rescaled;
``reduced_decode=False`` always decodes full size.

Pre-cropped cache (``hmr_fast.data.cache``), always explicit: ``cache_dir=None`` (default)
reads the source images; a path uses that cache (ValueError if it was built from other rows);
``"auto"`` uses ``<npz stem>_cache/`` next to the npz (where ``hmr-fast cache-data`` writes by
default) and raises if it is missing or stale.

Augmentation is reproducible: a sample's parameters come from an RNG keyed by
``(seed, epoch, index)``; call ``set_epoch`` before each epoch (DataLoader workers copy the
dataset when an iterator starts, so non-persistent workers see it).

``MixedDataset(datasets_2d, datasets_3d, ratio_3d=0.5)`` mixes datasets: index i is a 3D
sample when ``floor((i + 1) * r) > floor(i * r)`` (exactly a fraction r of any run of
consecutive indices: with r = 0.5 every even-sized batch of a sequential sampler is half
2D-only and half 3D-labelled, as in HMR), and the dataset / row inside the group come from an
RNG keyed by ``(seed, epoch, i)``. Use it with a sequential sampler (``shuffle=False``): the
randomness lives in the index -> row map, which makes resuming at any index exact.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from hmr_fast.body.constants import HMR19_FROM_J24
from hmr_fast.data.augment import (
    PADDINGS,
    AugConfig,
    AugParams,
    augment_sample,
    crop_matrix,
    sample_aug_params,
    warp_image,
)
from hmr_fast.data.cache import cached_row, default_cache_dir, load_cache_index
from hmr_fast.data.formats import clean_labels, invalid_rows, load_annotations
from hmr_fast.data.images import (  # noqa: F401  (re-exported: the dataset's image API)
    REDUCED_FLAGS,
    ImageReadError,
    read_image_bgr,
    reduced_coords,
)

# Part labels swap sides when the image is mirrored (1 head, 2 torso, 3/4 arms, 5/6 legs).
PART_FLIP = np.array([0, 1, 2, 4, 3, 6, 5], np.uint8)
_SUBSTITUTE_STRIDE = 7919  # a prime: substitutes walk the whole index before repeating
ON_UNREADABLE = ("substitute", "skip")
MASK_NONE, MASK_OK, MASK_UNREADABLE = 0, 1, 2


class KeypointDataset(Dataset):
    """One annotation npz + its image root (see the module docstring for items and policy)."""

    def __init__(
        self,
        npz_path,
        image_root,
        image_size: int = 224,
        train: bool = True,
        aug: AugConfig | None = None,
        cache_dir=None,
        seed: int = 0,
        return_masks: bool = False,
        max_retries: int = 20,
        reduced_decode: bool = True,
        on_unreadable: str = "substitute",
        mask_root=None,
        padding: str = "edge",
    ):
        if int(image_size) <= 0:
            raise ValueError(f"image_size must be a positive int, got {image_size}")
        if on_unreadable not in ON_UNREADABLE:
            raise ValueError(f"on_unreadable must be one of {ON_UNREADABLE}, got {on_unreadable!r}")
        self.npz_path = str(npz_path)
        self.image_root = Path(image_root)
        self.mask_root = Path(mask_root) if mask_root is not None else self.image_root
        self.on_unreadable = on_unreadable
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {tuple(PADDINGS)}, got {padding!r}")
        self.padding = padding
        self.image_size = int(image_size)
        self.train = bool(train)
        self.aug = aug if aug is not None else AugConfig()
        self.seed = int(seed)
        self.return_masks = bool(return_masks)
        self.max_retries = int(max_retries)
        self.reduced_decode = bool(reduced_decode)
        self.epoch = 0
        ann, self.label_counts = clean_labels(load_annotations(npz_path))
        bad = invalid_rows(ann)
        self.num_invalid_rows = int(bad.sum())
        self.rows = np.nonzero(~bad)[0]
        if len(self.rows) == 0:
            raise ValueError(
                f"{npz_path}: no usable rows ({len(bad)} rows, every centre/scale is "
                "non-finite or scale <= 0)"
            )
        self.ann = ann
        self.has_part = bool(ann["has_part"])
        self.has_S = bool(ann["has_S"])
        self.cache = None
        if cache_dir is not None:
            self.cache = load_cache_index(
                default_cache_dir(npz_path) if cache_dir == "auto" else cache_dir, ann, padding
            )
        self.image_failures = 0

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Key the augmentation RNG with ``epoch`` (call before creating the iterator)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        return self.get(i, (self.seed, self.epoch, int(i)))

    # -- loading -----------------------------------------------------------------------
    def _load(self, row: int):
        """-> (image BGR, center, scale, part) in the pixels of the image actually read."""
        ann = self.ann
        center, scale, part = ann["center"][row], float(ann["scale"][row]), ann["part"][row]
        if self.cache is not None and self.cache["cropname"][row]:
            try:
                img = read_image_bgr(self.cache["dir"] / self.cache["cropname"][row])
                c, s, p = cached_row(
                    center, scale, part, float(self.cache["factor"]), int(self.cache["resolution"])
                )
                return img, c, s, p
            except ImageReadError:
                pass  # fall back to the source image
        r = self._reduction(scale)
        img = read_image_bgr(self.image_root / ann["imgname"][row], r)
        if r > 1:
            part = part.copy()
            part[:, :2] = reduced_coords(part[:, :2], r)
            center, scale = reduced_coords(center, r), scale / r
        return img, center, scale, part

    def _reduction(self, scale: float) -> int:
        """Largest decode reduction (1, 2, 4, 8) keeping >= 1 source pixel per crop pixel."""
        if not self.reduced_decode:
            return 1
        zoom = max(self.aug.zoom_max, 1.0) if self.train else 1.0
        out_per_src = self.image_size * zoom / (200.0 * scale)
        r = 1
        while r < 8 and out_per_src * r * 2 <= 1.0:
            r *= 2
        return r

    def _read_mask(self, key: str, row: int, m: np.ndarray):
        """-> (state MASK_NONE / MASK_OK / MASK_UNREADABLE, (S, S) uint8 mask or None)."""
        name = self.ann[key][row]
        if not name:
            return MASK_NONE, None
        try:
            mask = read_image_bgr(self.mask_root / name, gray=True)
        except ImageReadError:
            return MASK_UNREADABLE, None
        return MASK_OK, warp_image(mask, m, self.image_size, cv2.INTER_NEAREST)

    def get(self, i: int, key) -> dict:
        """Item ``i`` (0..len-1) with augmentation drawn from an RNG keyed by ``key``."""
        n = len(self.rows)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for dataset of {n} rows")
        i = i % n
        skipped, last_error = 0, None
        for attempt in range(self.max_retries + 1):
            row = int(self.rows[(i + attempt * _SUBSTITUTE_STRIDE) % n])
            try:
                img, center, scale, part = self._load(row)
            except ImageReadError as exc:
                skipped += 1
                self.image_failures += 1
                last_error = exc
                if self.on_unreadable == "skip":
                    return self._placeholder(row, key)
                continue
            return self._make_item(img, center, scale, part, row, key, skipped)
        raise RuntimeError(
            f"{self.npz_path}: {skipped} images in a row could not be read (e.g. {last_error}); "
            f"check image_root={self.image_root}"
        )

    def _placeholder(self, row: int, key) -> dict:
        """The item of an unreadable row in "skip" mode: black, ``image_ok`` False."""
        ann = self.ann
        black = np.zeros((1, 1, 3), np.uint8)
        item = self._make_item(black, ann["center"][row], float(ann["scale"][row]),
                               ann["part"][row], row, key, 1)  # fmt: skip
        item["image_ok"] = torch.tensor(False)
        return item

    def _make_item(self, img, center, scale, part, row, key, skipped) -> dict:
        ann, size = self.ann, self.image_size
        if self.train:
            params = sample_aug_params(np.random.default_rng(list(key)), size, self.aug)
        else:
            params = AugParams()
        sample = augment_sample(img, center, scale, part, ann["S"][row], ann["pose"][row],
                                params, size, padding=self.padding, bgr=True)
        kp2 = sample["part"][list(HMR19_FROM_J24)]
        if not self.has_part:
            kp2[:, 2] = 0.0
        s3 = sample["S"][:14]
        has_3d = float(self.has_S and (s3[:, 3] > 0).any())
        has_smpl = float(ann["has_smpl"][row] > 0)
        pose = sample["pose"] if has_smpl else np.zeros(72, np.float32)
        item = {
            "img": torch.from_numpy(sample["img"]),
            "keypoints_2d": torch.from_numpy(kp2),
            "keypoints_3d": torch.from_numpy(s3),
            "pose": torch.from_numpy(np.asarray(pose, np.float32)),
            "betas": torch.from_numpy(ann["shape"][row] * np.float32(has_smpl)),
            "has_smpl": torch.tensor(has_smpl, dtype=torch.float32),
            "has_3d": torch.tensor(has_3d, dtype=torch.float32),
            "index": torch.tensor(row, dtype=torch.int64),
            "skipped": torch.tensor(skipped, dtype=torch.int64),
            "center": torch.from_numpy(ann["center"][row].astype(np.float32)),
            "scale": torch.tensor(float(ann["scale"][row]), dtype=torch.float32),
            "flip": torch.tensor(float(params.flip), dtype=torch.float32),
            "image_ok": torch.tensor(True),
        }
        if self.return_masks:
            # masks live in source-image pixels: use the source crop matrix
            ms = crop_matrix(ann["center"][row], float(ann["scale"][row]), size, params)
            parts_state, parts = self._read_mask("partname", row, ms)
            sil_state, sil = self._read_mask("maskname", row, ms)
            if parts is not None and params.flip:
                parts = PART_FLIP[np.minimum(parts, 6)]
            if sil is None and parts is not None:
                sil = (parts > 0).astype(np.uint8)
            has = parts is not None or sil is not None
            # A listed mask that cannot be read must be reported, not scored as absent.
            state = max(parts_state, sil_state)
            item["mask_state"] = torch.tensor(state, dtype=torch.int64)
            zeros = np.zeros((size, size), np.uint8)
            item["part_mask"] = torch.from_numpy(parts if parts is not None else zeros)
            item["silhouette"] = torch.from_numpy((sil if sil is not None else zeros) > 0)
            item["silhouette"] = item["silhouette"].to(torch.uint8)
            item["has_mask"] = torch.tensor(float(has), dtype=torch.float32)
        return item

    def report_skipped(self, image_failures: int | None = None) -> dict:
        """Emit ONE warning summarising what was dropped or unlabelled; return the counts.

        ``image_failures``: the total to report (e.g. the sum of the batches' ``skipped``
        when DataLoader workers did the reading); default: this process's own count.
        """
        failures = self.image_failures if image_failures is None else int(image_failures)
        counts = {"invalid_rows": self.num_invalid_rows, "image_failures": failures}
        counts.update(self.label_counts)
        if any(counts.values()):
            fate = "replaced by other rows" if self.on_unreadable == "substitute" else "skipped"
            warnings.warn(
                f"{self.npz_path}: dropped {self.num_invalid_rows} rows with a non-finite or "
                f"non-positive centre/scale; {failures} unreadable images were {fate}; "
                f"unlabelled {self.label_counts['invalid_joints_2d']} 2D and "
                f"{self.label_counts['invalid_joints_3d']} 3D joints and "
                f"{self.label_counts['invalid_smpl_rows']} SMPL rows with non-finite values",
                stacklevel=2,
            )
        return counts


def probe_image_root(dataset: KeypointDataset, sample: int = 20) -> None:
    """Fail early, naming the folder, when none of ``sample`` rows spread over the dataset
    has its image under the image root (the root is wrong), instead of failing later with
    a run of unreadable images. A cache that holds the crops counts as found."""
    n = len(dataset.rows)
    rows = dataset.rows[np.unique(np.linspace(0, n - 1, min(n, sample)).astype(int))]
    cache = dataset.cache
    for row in rows:
        if (dataset.image_root / dataset.ann["imgname"][row]).is_file():
            return
        if cache is not None and cache["cropname"][row]:
            return
    example = dataset.image_root / dataset.ann["imgname"][rows[0]]
    raise FileNotFoundError(
        f"{dataset.npz_path}: none of {len(rows)} sampled images is under the image root "
        f"{dataset.image_root} (e.g. {example}); pass the folder imgname is relative to "
        "with --image-root"
    )


class MixedDataset(Dataset):
    """Mix 2D-only and 3D-labelled datasets at a fixed ratio (see the module docstring).

    ``weights_2d`` / ``weights_3d`` choose among the datasets of a group (default: in
    proportion to their lengths). ``length`` defaults to the sum of all lengths.
    """

    def __init__(
        self,
        datasets_2d: list,
        datasets_3d: list,
        ratio_3d: float = 0.5,
        length: int | None = None,
        seed: int = 0,
        weights_2d=None,
        weights_3d=None,
    ):
        self.datasets_2d, self.datasets_3d = list(datasets_2d), list(datasets_3d)
        if not self.datasets_2d and not self.datasets_3d:
            raise ValueError("MixedDataset needs at least one dataset")
        if not 0.0 <= ratio_3d <= 1.0 or not math.isfinite(ratio_3d):
            raise ValueError(f"ratio_3d must be in [0, 1], got {ratio_3d}")
        if not self.datasets_3d:
            ratio_3d = 0.0
        if not self.datasets_2d:
            ratio_3d = 1.0
        self.ratio = Fraction(ratio_3d).limit_denominator(10_000)
        self.seed = int(seed)
        self.epoch = 0
        self.w2 = self._weights(self.datasets_2d, weights_2d, "weights_2d")
        self.w3 = self._weights(self.datasets_3d, weights_3d, "weights_3d")
        total = sum(len(d) for d in self.datasets_2d + self.datasets_3d)
        self.length = int(length) if length is not None else total

    @staticmethod
    def _weights(datasets, weights, name):
        if not datasets:
            return None
        w = np.asarray([len(d) for d in datasets] if weights is None else weights, np.float64)
        if w.shape != (len(datasets),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"{name} must be {len(datasets)} non-negative numbers, got {weights}")
        return w / w.sum()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets_2d + self.datasets_3d:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def is_3d(self, index: int) -> bool:
        p, q = self.ratio.numerator, self.ratio.denominator
        return (index + 1) * p // q > index * p // q

    def locate(self, index: int) -> tuple[int, int, int]:
        """index -> (group 0 = 2D / 1 = 3D, dataset number in the group, row)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for MixedDataset of {self.length}")
        group = int(self.is_3d(index))
        datasets, w = (self.datasets_3d, self.w3) if group else (self.datasets_2d, self.w2)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.choice(len(datasets), p=w))
        return group, k, int(rng.integers(len(datasets[k])))

    def __getitem__(self, index: int) -> dict:
        group, k, row = self.locate(int(index))
        ds = (self.datasets_3d if group else self.datasets_2d)[k]
        if hasattr(ds, "get"):
            item = ds.get(row, (self.seed, self.epoch, int(index), 1))
        else:
            item = ds[row]
        # position in datasets_2d + datasets_3d
        item["dataset"] = torch.tensor(k + group * len(self.datasets_2d), dtype=torch.int64)
        return item
