"""Image folders, one sub-folder per class: ``train/<class>/*.png``, ``test/<class>/*.png`` and optionally
``val/<class>/...`` (or ``valid/``, as CINIC-10 names it). This is the layout of torchvision's ``ImageFolder``,
of CINIC-10 (Darlow et al. 2018) and of the CIFAR-10 JPEG copy in ``/work/shared/data/cifar10-jpeg``.

The ``image_folder`` source is the ImageNet layout: ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``, where
``val/`` is the held-out set every ImageNet result is reported on, so it becomes the test split (a validation split
for model selection is carved from train with ``data.val_size``). Photos of many sizes need option ``size``.

Files are ``.jpg``, ``.jpeg`` or ``.png`` (any case); hidden entries (``.DS_Store``) are skipped, anything else in a
class folder is an error. Class names are the sorted sub-folder names of ``train/``; ``test/`` and ``val/`` must
have the same ones. Within a class, files are taken in sorted name order. Every image is decoded with Pillow in
``mode`` "RGB" (the default, H x W x 3) or "L" (grey, H x W x 1), and all must have one size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlab.data.dataset import Dataset, Split
from kdlab.data.sources.common import data_folder, make_split
from kdlab.data.sources.image_files import CHANNELS, IMAGE_SUFFIXES, decode_images
from kdlab.errors import KdlabError

VAL_FOLDER_NAMES = ("val", "valid")


@dataclass(frozen=True)
class SampleFiles:
    """What a class folder holds, for the listing helpers and their messages (images here, audio clips in
    :mod:`kdlab.data.sources.audio_folder`)."""

    suffixes: tuple[str, ...]
    a_file: str  # "an image file"
    plural: str  # "images"
    example: str  # "<image>.png"

    def matches(self, name: str) -> bool:
        return name.lower().endswith(self.suffixes)


IMAGE_FILES = SampleFiles(IMAGE_SUFFIXES, "an image file", "images", "<image>.png")


def visible_entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def class_folders(split_folder: Path, kind: SampleFiles = IMAGE_FILES) -> list[str]:
    """Sorted names of the class sub-folders of ``split_folder``; loose images (``kind`` files) there are an error."""
    names = []
    for entry in visible_entries(split_folder):
        if entry.is_dir():
            names.append(entry.name)
        elif kind.matches(entry.name):
            raise KdlabError(f"{entry.path}: {kind.plural} must be inside one sub-folder per class, not directly in "
                             f"{split_folder}")
    if not names:
        raise KdlabError(f"{split_folder}: no class folders (expected {split_folder}/<class>/{kind.example})")
    return names


def sample_files(class_folder: Path, kind: SampleFiles = IMAGE_FILES) -> list[str]:
    """The image (``kind``) files of one class folder, in sorted order; none, or a foreign entry, is an error."""
    files = []
    for entry in visible_entries(class_folder):
        if not (entry.is_file() and kind.matches(entry.name)):
            raise KdlabError(f"{entry.path}: not {kind.a_file} (a class folder may hold only "
                             f"{', '.join(kind.suffixes)} files)")
        files.append(entry.path)
    if not files:
        raise KdlabError(f"{class_folder}: empty class folder (no {', '.join(kind.suffixes)} files)")
    return files


def split_folders(root: Path, kind: SampleFiles = IMAGE_FILES, test_folder: str = "test") -> dict[str, Path]:
    """{"train": ..., "test": ..., and "val": ... if there is one} under ``root``; the test split is read from
    ``test_folder`` (``val`` in the ImageNet layout, which then has no separate validation folder)."""
    folders = {}
    for split, name in (("train", "train"), ("test", test_folder)):
        if not (root / name).is_dir():
            raise KdlabError(f"{root}: missing {name}/ folder (expected {root}/{name}/<class>/{kind.example})")
        folders[split] = root / name
    if test_folder in VAL_FOLDER_NAMES:
        return folders
    val = [root / name for name in VAL_FOLDER_NAMES if (root / name).is_dir()]
    if len(val) > 1:
        raise KdlabError(f"{root}: both {val[0].name}/ and {val[1].name}/ exist; keep one validation folder")
    if val:
        folders["val"] = val[0]
    return folders


def list_split(split_folder: Path, classes: list[str], train_folder: Path,
               kind: SampleFiles = IMAGE_FILES) -> tuple[list[str], np.ndarray]:
    """The image (``kind``) files of one split and their labels (indices into ``classes``)."""
    found = class_folders(split_folder, kind)
    if found != classes:
        only_train = sorted(set(classes) - set(found))
        only_here = sorted(set(found) - set(classes))
        raise KdlabError(f"class folders differ between {train_folder} and {split_folder}: only in train: "
                         f"{only_train or 'none'}; only in {split_folder.name}: {only_here or 'none'}")
    files, labels = [], []
    for label, name in enumerate(classes):
        class_files = sample_files(split_folder / name, kind)
        files += class_files
        labels += [label] * len(class_files)
    return files, np.asarray(labels, dtype=np.int64)


def list_folder(path: str, *, mode: str = "RGB", size: int | None = None, test_folder: str = "test") -> Dataset:
    """The image folders under ``path`` as a :class:`Dataset` of :class:`~kdlab.data.files.ImageFiles`: listed and
    checked, nothing decoded (what ``data.residency: stream`` reads from). ``mode`` and ``size`` as in
    :func:`decode_folder`; ``test_folder`` names the folder of the test split."""
    from PIL import Image

    from kdlab.data.files import ImageFiles

    root = data_folder(path)
    if mode not in CHANNELS:
        raise KdlabError(f"{root}: option mode must be one of {', '.join(CHANNELS)}, got {mode!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise KdlabError(f"{root}: option size must be a positive whole number of pixels, got {size!r}")
    folders = split_folders(root, test_folder=test_folder)
    classes = class_folders(folders["train"])
    listed = {split: list_split(f, classes, folders["train"]) for split, f in folders.items()}
    first = listed["train"][0][0]
    if size is None:
        try:
            with Image.open(first) as image:
                width, height = image.size
        except Exception as error:  # noqa: BLE001 - any failure to read the header is the file's
            raise KdlabError(f"{first}: not a readable JPEG or PNG image ({error})") from None
    else:
        height = width = size
    splits = {split: make_split_of_files(ImageFiles(files, height, width, mode, size), labels)
              for split, (files, labels) in listed.items()}
    return Dataset(name=root.name, classes=classes, train=splits["train"], test=splits["test"],
                   val=splits.get("val"), fingerprint="")


def make_split_of_files(files, labels: np.ndarray) -> Split:
    return Split(files, np.ascontiguousarray(labels, dtype=np.int64))


def decode_folder(path: str, *, mode: str = "RGB", size: int | None = None, test_folder: str = "test") -> Dataset:
    """The image folders under ``path`` (train/, test/, optional val/ or valid/), decoded in ``mode``. With
    ``size``, every image is resized (shorter side to ``size``, centre crop; :func:`kdlab.data.files.fit`), for
    folders of photos of many sizes; without it, all must have one size."""
    if size is not None:
        listed = list_folder(path, mode=mode, size=size, test_folder=test_folder)
        decoded = {name: getattr(listed, name) for name in ("train", "test", "val")}
        return Dataset(name=listed.name, classes=listed.classes, fingerprint="", **{
            name: None if split is None else make_split(split.images.decode(), split.labels)
            for name, split in decoded.items()})
    root = data_folder(path)
    if mode not in CHANNELS:
        raise KdlabError(f"{root}: option mode must be one of {', '.join(CHANNELS)}, got {mode!r}")
    folders = split_folders(root, test_folder=test_folder)
    classes = class_folders(folders["train"])
    listed = {split: list_split(f, classes, folders["train"]) for split, f in folders.items()}
    all_files = [file for files, _ in listed.values() for file in files]
    images = decode_images(all_files, mode, f"decoding {root.name}")
    splits: dict[str, Split] = {}
    start = 0
    for split, (files, labels) in listed.items():
        splits[split] = make_split(images[start : start + len(files)], labels)
        start += len(files)
    return Dataset(
        name=root.name,
        classes=classes,
        train=splits["train"],
        test=splits["test"],
        val=splits.get("val"),
        fingerprint="",
    )


def decode_image_folder(path: str, *, mode: str = "RGB", size: int | None = None) -> Dataset:
    """The ImageNet layout under ``path`` (train/ and val/, val/ as the test split), decoded; options as in
    :func:`decode_folder`."""
    return decode_folder(path, mode=mode, size=size, test_folder="val")


def list_image_folder(path: str, *, mode: str = "RGB", size: int | None = None) -> Dataset:
    """The ImageNet layout under ``path``, listed for streaming (:func:`list_folder`)."""
    return list_folder(path, mode=mode, size=size, test_folder="val")
