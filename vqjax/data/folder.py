"""Image folders as datasets: `dataset.name="image_folder"`, `dataset.data_dir=DIR`.

    DIR/train/<class>/**/*.jpg|png|webp        labelled: sorted class folder names -> ids 0, 1, ...
    DIR/validation/<class>/...  (or DIR/val)   labelled with the train split's ids
    DIR/train/*.jpg                            flat: unlabelled (label 0, num_classes None)

ImageNet's usual layout (`train/n01440764/*.JPEG`, `val/` sorted into the same class folders)
works unchanged. Files are read as bytes here and decoded by the pipeline's `DecodeImage` (in
grain worker processes with `num_workers > 0`), so an undecodable or unreadable file is skipped
and counted like any unreadable record, never a crash.

The file list of a split is built once (a sorted walk, symbolic links followed, hidden entries
skipped) and cached as an .npz: in `DIR/.vqjax_cache/` when DIR is writable, else in
`~/.cache/vqjax/image_folder/`. A later start stats the cached folders (one `stat` per folder, no
walk of the files) and rebuilds the list only when one of them changed (a file added, removed or
renamed in it). Every process of a job builds the same sorted list, so the determinism rule of
`pipeline.py` holds unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
from collections import Counter

import numpy as np

from vqjax.data.errors import DatasetNotFoundError

log = logging.getLogger(__name__)

NAME = "image_folder"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# split name -> folder names tried in order
SPLIT_FOLDERS = {
    "train": ("train",),
    "validation": ("validation", "val"),
    "val": ("val", "validation"),
    "test": ("test",),
}
CACHE_VERSION = 1
CACHE_DIR_NAME = ".vqjax_cache"
USER_CACHE_DIR = pathlib.Path("~/.cache/vqjax/image_folder").expanduser()


class ImageFolderError(DatasetNotFoundError):
    """The folder does not hold an image dataset in the expected layout (the message lists what
    was found)."""


def is_image_folder(name: str) -> bool:
    return name == NAME


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _listing(directory: str, limit: int = 12) -> str:
    """What a folder holds, for error messages: "train/ (dir), notes.txt, ..." """
    try:
        entries = sorted((e for e in os.scandir(directory) if not e.name.startswith(".")),
                         key=lambda e: e.name)
    except OSError as error:
        return f"(cannot list: {error})"
    if not entries:
        return "(empty)"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def split_directory(data_dir: str | os.PathLike, split: str) -> pathlib.Path:
    """DIR/train for "train", DIR/validation or DIR/val for "validation", ...; a clear error
    listing what DIR holds otherwise."""
    root = pathlib.Path(data_dir).expanduser()
    if not str(data_dir):
        raise ImageFolderError(
            "dataset.name='image_folder' needs dataset.data_dir: the folder holding train/ (and "
            "validation/ or val/), e.g. --config.dataset.data_dir=/data/my_images")
    if not root.is_dir():
        raise ImageFolderError(f"image_folder: data_dir {str(root)!r} is not a directory")
    candidates = SPLIT_FOLDERS.get(split, (split,))
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    wanted = " or ".join(f"{c}/" for c in candidates)
    raise ImageFolderError(
        f"image_folder: no {split!r} split in {str(root)!r}: expected a folder {wanted} there. "
        f"Found: {_listing(str(root))}. Layout: DIR/train/<class>/*.jpg (labelled by class "
        "folder) or DIR/train/*.jpg (unlabelled), and DIR/validation/ (or val/) alike.")


# ------------------------------------------------------------------------------------------------
# Walking and caching the file list
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileList:
    """The images of one split: paths relative to `root` (bytes, os.fsencode'd) and the class
    folder of each ("" for a flat folder), plus every folder walked with its mtime (for the
    cache check)."""

    root: str
    files: np.ndarray  # bytes [N], relative paths, sorted
    class_of_file: np.ndarray  # int32 [N], index into `class_folders`, -1 when flat
    class_folders: tuple[str, ...]  # sorted top-level folders holding images (empty: flat)
    directories: np.ndarray  # bytes [D], relative paths of every folder walked ("" = root)
    mtimes: np.ndarray  # int64 [D], st_mtime_ns of each


def _walk(root: str):
    """Sorted (relative dir, [image names], [other file names]) of every folder under `root`,
    following symbolic links (not into a folder already on the current path) and skipping
    hidden entries."""
    stack = [("", frozenset())]
    while stack:
        relative, ancestors = stack.pop()
        directory = os.path.join(root, relative)
        real = os.path.realpath(directory)
        if real in ancestors:  # a symbolic link loop
            continue
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            log.warning("image_folder: cannot list %s (%s): skipped", directory, error)
            continue
        images, others, subdirs = [], [], []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(os.path.join(relative, entry.name))
            elif _is_image(entry.name):
                images.append(entry.name)
            else:
                others.append(entry.name)
        yield relative, images, others
        stack.extend((d, ancestors | {real}) for d in reversed(subdirs))


def scan(root: str | os.PathLike) -> FileList:
    """Walks `root` (a split folder) once: its images, by top-level class folder."""
    root = os.fspath(root)
    files, classes, directories, mtimes = [], [], [], []
    class_folders: list[str] = []
    top_images = 0
    others: Counter = Counter()
    for relative, images, other_files in _walk(root):
        directories.append(os.fsencode(relative))
        mtimes.append(os.stat(os.path.join(root, relative)).st_mtime_ns)
        others.update(os.path.splitext(name)[1].lower() or "(no extension)"
                      for name in other_files)
        if not images:
            continue
        if relative == "":
            top_images = len(images)
            class_index = -1
        else:
            top = relative.split(os.sep, 1)[0]
            if not class_folders or class_folders[-1] != top:
                class_folders.append(top)  # the walk is sorted, so are these
            class_index = len(class_folders) - 1
        files.extend(os.fsencode(os.path.join(relative, name)) for name in images)
        classes.extend([class_index] * len(images))
    if not files:
        found = ", ".join(f"{n} {ext}" for ext, n in others.most_common(8)) or "no files"
        raise ImageFolderError(
            f"image_folder: no images in {root!r} (looked for {', '.join(IMAGE_EXTENSIONS)} "
            f"files, in it and in its subfolders). Found: {found}; folders "
            f"{len(directories)}, top level: {_listing(root)}")
    if top_images and class_folders:
        raise ImageFolderError(
            f"image_folder: {root!r} mixes {top_images} images at its top level with class "
            f"folders ({', '.join(class_folders[:5])}{', ...' if len(class_folders) > 5 else ''})"
            ": put every image in a class folder (labelled) or none (unlabelled)")
    return FileList(
        root=root,
        files=np.asarray(files, dtype=bytes),
        class_of_file=np.asarray(classes, np.int32),
        class_folders=tuple(class_folders),
        directories=np.asarray(directories, dtype=bytes),
        mtimes=np.asarray(mtimes, np.int64),
    )


def _cache_paths(root: str) -> list[pathlib.Path]:
    """Where a split's file list may be cached: next to the data, else in the user's cache."""
    split = pathlib.Path(root)
    key = hashlib.sha1(os.fsencode(os.path.realpath(root))).hexdigest()[:16]
    return [split.parent / CACHE_DIR_NAME / f"{split.name}.npz",
            USER_CACHE_DIR / f"{split.name}-{key}.npz"]


def _read_cache(path: pathlib.Path, root: str) -> FileList | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            if int(cached["version"]) != CACHE_VERSION or str(cached["root"]) != root:
                return None
            listing = FileList(
                root=root, files=cached["files"], class_of_file=cached["class_of_file"],
                class_folders=tuple(str(c) for c in cached["class_folders"]),
                directories=cached["directories"], mtimes=cached["mtimes"])
    except (OSError, KeyError, ValueError):
        return None
    for relative, mtime in zip(listing.directories, listing.mtimes):
        try:
            if os.stat(os.path.join(root, os.fsdecode(relative))).st_mtime_ns != mtime:
                return None
        except OSError:
            return None
    return listing


def _write_cache(listing: FileList) -> pathlib.Path | None:
    for path in _cache_paths(listing.root):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, version=np.int64(CACHE_VERSION), root=np.asarray(listing.root),
                     files=listing.files, class_of_file=listing.class_of_file,
                     class_folders=np.asarray(listing.class_folders, dtype=str),
                     directories=listing.directories, mtimes=listing.mtimes)
            os.replace(tmp, path)  # atomic: concurrent processes write the same content
            return path
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            continue
    log.warning("image_folder: could not cache the file list of %s anywhere", listing.root)
    return None


def file_list(root: str | os.PathLike) -> FileList:
    """The split's file list: from the cache when no folder changed since, else walked (and
    cached)."""
    root = os.path.realpath(os.fspath(root))
    for path in _cache_paths(root):
        if path.is_file():
            listing = _read_cache(path, root)
            if listing is not None:
                return listing
    log.info("image_folder: listing %s", root)
    listing = scan(root)
    cached = _write_cache(listing)
    log.info("image_folder: %d images in %d class folders under %s (file list cached at %s)",
             len(listing.files), len(listing.class_folders), root, cached)
    return listing


# ------------------------------------------------------------------------------------------------
# The data source
# ------------------------------------------------------------------------------------------------


class ImageFolderSource:
    """Random-access source over a split of an image folder: record i -> {"image": the file's
    bytes, "label": int32}. Picklable (grain workers get a copy).

    `class_names` are the train split's class folders, sorted (empty for a flat train folder);
    other splits are labelled with those ids, and a class folder absent from train is an error.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str):
        self.data_dir = str(pathlib.Path(data_dir).expanduser())
        self.split = split
        self.root = os.path.realpath(split_directory(self.data_dir, split))
        listing = file_list(self.root)
        if split == "train":
            train = listing
        else:
            train = file_list(split_directory(self.data_dir, "train"))
        self.class_names: tuple[str, ...] = train.class_folders
        ids = {name: i for i, name in enumerate(self.class_names)}
        if listing.class_folders:
            unknown = [c for c in listing.class_folders if c not in ids]
            if unknown:
                raise ImageFolderError(
                    f"image_folder: the {split!r} split ({self.root}) has class folders that "
                    f"train/ lacks: {', '.join(unknown[:10])}"
                    + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else "")
                    + ". Class ids come from train/'s sorted folder names.")
            mapping = np.asarray([ids[c] for c in listing.class_folders], np.int32)
            labels = mapping[listing.class_of_file]
        else:
            if self.class_names:
                log.warning("image_folder: %s is flat but train/ has %d classes: its images get "
                            "label 0", self.root, len(self.class_names))
            labels = np.zeros(len(listing.files), np.int32)
        self._root_bytes = os.fsencode(self.root)
        self.files = listing.files
        self.labels = labels

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> str:
        return os.fsdecode(os.path.join(self._root_bytes, bytes(self.files[index])))

    def __getitem__(self, index: int) -> dict:
        with open(self.path(index), "rb") as f:  # OSError: skipped and counted by the pipeline
            image = f.read()
        return {"image": image, "label": self.labels[index]}

    def __repr__(self) -> str:
        return (f"ImageFolderSource({self.root!r}, {len(self)} images, "
                f"{len(self.class_names)} classes)")
