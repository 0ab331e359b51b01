"""The training data of a config: the mixed 2D/3D image datasets and the mocap prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hmr_fast.data.formats import find_annotation_file
from hmr_fast.train.config import TrainConfig


def per_dataset(values: list, n: int, name: str) -> list:
    """One value per --data entry: ``values`` empty (None each), one (shared) or n."""
    values = list(values)
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(
            f"{name}: give one value for all {n} data entries or one per entry, got "
            f"{len(values)} ({', '.join(map(str, values))})"
        )
    return values


def dataset_sources(cfg: TrainConfig) -> list[tuple[Path, Path, str | None]]:
    """(annotation npz, image root, cache dir or "auto" or None) of every --data entry.

    The image root is ``image_root`` (one for all or one per entry) or the entry's folder;
    the cache is used only when ``image_cache`` names it ("auto": each npz's ``X_cache/``).
    """
    roots = per_dataset(cfg.image_root, len(cfg.data), "image_root")
    caches = [None] * len(cfg.data)
    if cfg.image_cache == "auto":
        caches = ["auto"] * len(cfg.data)
    elif cfg.image_cache:
        caches = per_dataset(cfg.image_cache.split(","), len(cfg.data), "image_cache")
    out = []
    for d, root, cache in zip(cfg.data, roots, caches):
        npz = find_annotation_file(d)
        root = Path(root) if root else (Path(d) if Path(d).is_dir() else npz.parent)
        if not root.is_dir():
            raise FileNotFoundError(f"image root {root} (for data {d}) is not a directory")
        out.append((npz, root, (cache.strip() or None) if cache else None))
    return out


def build_train_dataset(cfg: TrainConfig):
    """KeypointDatasets of every --data entry, mixed 2D/3D by ``ratio_3d``."""
    from hmr_fast.data.augment import AugConfig
    from hmr_fast.data.datasets import KeypointDataset, MixedDataset, probe_image_root

    if not cfg.data:
        raise ValueError("no training data: pass --data DIR[,DIR...] (see `hmr-fast synth`)")
    sets_2d, sets_3d = [], []
    for npz, root, cache in dataset_sources(cfg):
        ds = KeypointDataset(
            npz,
            root,
            image_size=cfg.image_size,
            train=True,
            aug=AugConfig(flip_prob=cfg.flip_prob),
            cache_dir=cache,
            seed=cfg.seed,
            padding=cfg.crop_padding,
        )
        probe_image_root(ds)
        (sets_3d if cfg.use_3d and _has_3d_labels(ds) else sets_2d).append(ds)
    if len(sets_2d) + len(sets_3d) == 1:
        return (sets_2d + sets_3d)[0]
    return MixedDataset(sets_2d, sets_3d, ratio_3d=cfg.ratio_3d, seed=cfg.seed)


def _has_3d_labels(ds) -> bool:
    """A dataset with any 3D joints or SMPL parameters goes in MixedDataset's 3D group."""
    return bool(ds.has_S) or bool(np.any(ds.ann["has_smpl"][ds.rows] > 0))


def invalid_rows_of(dataset) -> int:
    """Rows the dataset(s) dropped at construction (unusable centre / scale)."""
    if hasattr(dataset, "datasets_2d"):
        return sum(invalid_rows_of(d) for d in dataset.datasets_2d + dataset.datasets_3d)
    return int(getattr(dataset, "num_invalid_rows", 0))


def label_counts_of(dataset) -> dict:
    """Labels the dataset(s) removed as non-finite, summed: {reason: count}."""
    parts = dataset.datasets_2d + dataset.datasets_3d if hasattr(dataset, "datasets_2d") else [
        dataset
    ]
    total: dict = {}
    for d in parts:
        for k, v in getattr(d, "label_counts", {}).items():
            total[k] = total.get(k, 0) + int(v)
    return total


def build_mocap(cfg: TrainConfig):
    """(pose (M,72), betas (M,10)) float32 tensors of the mocap prior."""
    if not cfg.mocap:
        raise ValueError(
            "no mocap file: pass --mocap FILE (e.g. from `hmr-fast synth-mocap --out FILE`)"
        )
    path = Path(cfg.mocap)
    if not path.is_file():
        raise FileNotFoundError(f"mocap file not found: {path}")
    from hmr_fast.data.mocap import MocapDataset

    ds = MocapDataset([path])
    pose, betas = ds.pose.float(), ds.betas.float()
    return pose, betas


def skipped_data_message(invalid_rows: int, skipped: int, unlabelled: dict) -> str | None:
    """One line on the bad data a run dropped, or None when there was none."""
    if not (skipped or invalid_rows or any(unlabelled.values())):
        return None
    return (
        f"skipped bad data: {invalid_rows} annotation rows with a non-finite or non-positive "
        f"centre/scale (dropped), {skipped} unreadable or truncated images (replaced by other "
        f"rows); non-finite labels removed: {unlabelled.get('invalid_joints_2d', 0)} 2D "
        f"joints, {unlabelled.get('invalid_joints_3d', 0)} 3D joints, "
        f"{unlabelled.get('invalid_smpl_rows', 0)} SMPL rows"
    )
