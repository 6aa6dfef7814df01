"""Datasets read from "relative/path label" list files and an image folder.

ImageNet-LT, iNaturalist 2018 and Places-LT ship as list files whose lines are
`relative/path/to/image.jpg <label>`, paths relative to an image root (docs/shared.md); the
test-agnostic lists of SADE/BalPoE (ImageNet_LT_forward50.txt, ..._uniform.txt, ...) have the
same format. `ImageListSource` is a random-access (grain) source over one such list: records
decode the JPEG with Pillow to uint8 RGB [H, W, 3] when read (grayscale, CMYK and palette images
are converted to RGB), so sizes vary and the transforms of `augment_imagenet` bring them to one.

Validation: the list is parsed in full when the source is built (format and label range, with
file and line in the error), which costs a second or so even for iNaturalist's 437k lines.
Image files are not checked up front by default: a stat per image is a minute or more on network
file systems for the big lists. `check_files=True` stats them all at build time; otherwise a
missing or undecodable image raises when its record is read, naming the image, list file and line.

Layout expected by `image_list_dataset` (defaults in `DEFAULT_LISTS`, as SADE/BalPoE name them):

    <list_dir>/ImageNet_LT_train.txt      # lines "train/n01440764/n01440764_10026.JPEG 0"
    <root>/train/n01440764/n01440764_10026.JPEG

`list_dir` defaults to `root`; a list given as an absolute path is used as is.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ltx import files
from ltx.data import augment, augment_imagenet, long_tail, splits

# Reference list-file names: (train, val, test). iNaturalist 2018 has no separate validation
# list; the references test on iNaturalist18_val.txt. The Places-LT names are OLTR's, which
# SADE's data_txt/Places_LT_v2/ and LFME use.
DEFAULT_LISTS = {
    "imagenet_lt": ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"),
    "inaturalist2018": ("iNaturalist18_train.txt", None, "iNaturalist18_val.txt"),
    "places_lt": ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"),
    # Any dataset of this layout (`ltx-prepare folders` writes it); val.txt is used if it exists.
    "list_files": ("train.txt", "val.txt", "test.txt"),
}

NORMALIZATION = {
    "imagenet_lt": (augment.IMAGENET_MEAN, augment.IMAGENET_STD),
    "inaturalist2018": (augment.INATURALIST_MEAN, augment.INATURALIST_STD),
    "places_lt": (augment.IMAGENET_MEAN, augment.IMAGENET_STD),
    "list_files": (augment.IMAGENET_MEAN, augment.IMAGENET_STD),
}

_FORMAT = "expected 'relative/path label' with an integer label"


def parse_list(list_path: str, num_classes: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Reads a list file.

    Blank lines are skipped; the label is the last whitespace-separated field, so a path may
    contain spaces.

    Returns:
      (relative paths, labels int64 [N], 1-based line numbers int64 [N]).

    Raises:
      FileNotFoundError: `list_path` does not exist.
      ValueError: a malformed line or a label outside [0, num_classes), naming file and line;
        or a list with no entries.
    """
    if not files.isfile(list_path):
        raise FileNotFoundError(f"list file {list_path} does not exist (each line: "
                                "'relative/path label'); set config.data.list_dir or the "
                                "config.data.*_list fields (val_list='none' drops the "
                                "validation split)")
    paths, labels, lines = [], [], []
    with files.open(list_path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rsplit(None, 1)
            try:
                if len(fields) != 2:
                    raise ValueError
                label = int(fields[1])
            except ValueError:
                raise ValueError(f"{list_path}:{lineno}: {_FORMAT}, got {line.rstrip()!r}"
                                 ) from None
            if not 0 <= label < num_classes:
                raise ValueError(f"{list_path}:{lineno}: label {label} out of range "
                                 f"[0, {num_classes}) in {line.rstrip()!r}")
            paths.append(fields[0].strip())
            labels.append(label)
            lines.append(lineno)
    if not paths:
        raise ValueError(f"list file {list_path} has no entries ({_FORMAT})")
    return paths, np.asarray(labels, np.int64), np.asarray(lines, np.int64)


# -- folder-per-class trees -------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")
FOLDER_SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.txt"


def write_folder_lists(root: str, out_dir: str | None = None) -> dict[str, Any]:
    """Writes the list files of a folder-per-class tree, for the 'list_files' dataset.

    Layout read (`val/` is optional; a class may be missing from val/ or test/):

        <root>/train/<class name>/<image>    <root>/val/<class name>/<image>
        <root>/test/<class name>/<image>

    Classes are the folders of `train/`, sorted by name; class i's name is line i + 1 of
    `classes.txt`. Writes `train.txt`, `test.txt` (and `val.txt`) with lines
    "<split>/<class>/<image> <label>" sorted by path, into `out_dir` (default: `root`), each
    whole or not at all. Returns {'classes': [...], 'counts': {split: int [C]}, 'lists': {split:
    path}}. Raises FileNotFoundError / ValueError naming the folder at fault.
    """
    root = files.absolute(root)
    out_dir = files.absolute(out_dir or root)
    train_dir = files.join(root, "train")
    if not files.isdir(train_dir):
        raise FileNotFoundError(f"{train_dir} does not exist; expected {root}/train/<class>/"
                                "<image> (and test/, optionally val/, alike)")
    classes = [d for d in files.listdir(train_dir) if files.isdir(files.join(train_dir, d))]
    if len(classes) < 2:
        raise ValueError(f"{train_dir} has {len(classes)} class folder(s); expected >= 2")
    label_of = {name: i for i, name in enumerate(classes)}
    entries: dict[str, list[tuple[str, int]]] = {}
    for split in FOLDER_SPLITS:
        split_dir = files.join(root, split)
        if not files.isdir(split_dir):
            if split != "val":
                raise FileNotFoundError(f"{split_dir} does not exist; the {split} split is "
                                        "required")
            continue
        found = []
        for name in files.listdir(split_dir):
            folder = files.join(split_dir, name)
            if not files.isdir(folder):
                continue
            if name not in label_of:
                raise ValueError(f"{folder} is a class that train/ does not have; expected "
                                 f"one of the {len(classes)} classes of {train_dir}")
            images = [f for f in files.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)]
            if split == "train" and not images:
                raise ValueError(f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
            found += [(f"{split}/{name}/{image}", label_of[name]) for image in images]
        if not found:
            raise ValueError(f"{split_dir} holds no images in class folders")
        entries[split] = found
    files.makedirs(out_dir)
    lists = {}
    for split, found in entries.items():
        lists[split] = files.join(out_dir, f"{split}.txt")
        files.write_text(lists[split], "".join(f"{path} {label}\n" for path, label in found))
    files.write_text(files.join(out_dir, CLASSES_FILE), "".join(f"{c}\n" for c in classes))
    counts = {split: np.bincount([label for _, label in found], minlength=len(classes))
              for split, found in entries.items()}
    return {"classes": classes, "counts": counts, "lists": lists}


def read_class_names(list_dir: str) -> list[str] | None:
    """The class names of `<list_dir>/classes.txt` (line i + 1 names class i), or None if there
    is no such file."""
    path = files.join(list_dir, CLASSES_FILE) if list_dir else ""
    if not path or not files.isfile(path):
        return None
    return [line.strip() for line in files.read_text(path).splitlines() if line.strip()]


def infer_num_classes(list_dir: str, train_list: str) -> int:
    """C of a 'list_files' dataset whose config leaves `data.num_classes` at 0: the lines of
    `<list_dir>/classes.txt` if it exists, else the largest label of the training list + 1."""
    classes = files.join(list_dir, CLASSES_FILE)
    if files.isfile(classes):
        return sum(1 for line in files.read_text(classes).splitlines() if line.strip())
    if not files.isfile(train_list):
        raise FileNotFoundError(
            f"config.data.num_classes=0 (from the data) but neither {classes} nor the training "
            f"list {train_list} exists; set config.data.num_classes or config.data.list_dir")
    _, labels, _ = parse_list(train_list, np.iinfo(np.int64).max)
    return int(labels.max()) + 1


def decode_image(path: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] of the image file at `path` (any mode Pillow reads)."""
    with files.open(path, "rb") as f, Image.open(f) as pil:
        return np.asarray(pil.convert("RGB"), np.uint8)


class ImageListSource(Sequence):
    """A random-access source of `{'image': uint8 [H, W, 3], 'label': int64}` over a list file.

    Picklable (paths are one bytes array), so grain worker processes can decode.
    """

    def __init__(self, list_path: str, root: str, num_classes: int, *,
                 check_files: bool = False):
        paths, labels, lines = parse_list(list_path, num_classes)
        self.list_path = list_path
        self.root = root
        self.num_classes = num_classes
        self.labels = labels
        self._lines = lines
        self._paths = np.asarray([p.encode("utf-8") for p in paths], dtype=np.bytes_)
        if check_files:
            missing = [i for i in range(len(self)) if not files.isfile(self.image_path(i))]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of the {len(self)} images of {list_path} are missing, "
                    f"the first {self.image_path(missing[0])} ({self._where(missing[0])})")

    def __len__(self) -> int:
        return len(self.labels)

    def _where(self, index: int) -> str:
        return f"listed at {self.list_path}:{self._lines[index]}"

    def image_path(self, index: int) -> str:
        return files.join(self.root, self._paths[index].decode("utf-8"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.image_path(index)
        try:
            image = decode_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image {path} does not exist ({self._where(index)}); "
                                    "is config.data.root the folder the list paths start from?"
                                    ) from None
        except (OSError, ValueError, SyntaxError) as err:  # Pillow's decode failures.
            raise OSError(f"cannot read image {path} ({self._where(index)}): {err}") from err
        return {"image": image, "label": self.labels[index]}

    def __repr__(self) -> str:
        return f"ImageListSource({self.list_path!r}, root={self.root!r}, num_records={len(self)})"


def load_split(list_path: str, root: str, num_classes: int, *,
               check_files: bool = False) -> splits.Split:
    """The split of every line of one list file (e.g. a test-agnostic forward/backward list)."""
    source = ImageListSource(list_path, root, num_classes, check_files=check_files)
    return splits.Split(source, np.arange(len(source)), source.labels)


def _is_absolute(path: str) -> bool:
    return not files.is_local(path) or os.path.isabs(path)


def resolve_list(list_dir: str, given: str, default: str | None) -> str | None:
    """The path of a split's list: `given` (absolute, or relative to `list_dir`), else
    `default`; None for 'none'."""
    name = given or default
    if name is None or name.lower() == "none":
        return None
    return name if _is_absolute(name) else files.join(list_dir, name)


def list_paths(name: str, list_dir: str, train_list: str = "", val_list: str = "",
               test_list: str = "") -> tuple[str, str | None, str]:
    """(train, val or None, test) list paths of a list-file dataset (fields as for
    `image_list_dataset`); ValueError when the train or test list is dropped."""
    result = []
    for split_name, given, default in zip(("train", "val", "test"),
                                          (train_list, val_list, test_list),
                                          DEFAULT_LISTS[name]):
        path = resolve_list(list_dir, given, default)
        if (name == "list_files" and split_name == "val" and not given and path is not None
                and not files.isfile(path)):
            path = None  # The optional val.txt of a custom dataset.
        if path is None and split_name != "val":
            raise ValueError(f"{name} needs a {split_name} list; got {given!r}")
        result.append(path)
    return tuple(result)


def image_list_dataset(name: str, *, num_classes: int, root: str, list_dir: str = "",
                       train_list: str = "", val_list: str = "", test_list: str = "",
                       crop_size: int = 224, eval_resize: int = 256,
                       check_files: bool = False, imbalance_ratio: float = 1.0,
                       profile: str = "exp", subset_seed: int = 0) -> splits.Dataset:
    """ImageNet-LT, iNaturalist 2018, Places-LT or any other dataset ('list_files') from list
    files.

    Args:
      name: a key of `DEFAULT_LISTS` ('list_files': `train.txt`, `test.txt` and `val.txt` if
        it exists, ImageNet's normalisation).
      num_classes: C; every label must lie in [0, C).
      root: image root the list paths are relative to.
      list_dir: folder of the list files ('' = `root`).
      train_list, val_list, test_list: list file names (relative to `list_dir`) or absolute
        paths; '' takes the reference name of `DEFAULT_LISTS`, 'none' drops the split (the
        train and test lists are required).
      crop_size: side of the model input (the train and eval crops).
      eval_resize: shorter side before the eval centre crop (256 for 224 crops).
      check_files: stat every image at build time.
      imbalance_ratio, profile, subset_seed: with a ratio > 1, the training split is the
        long-tailed subset of the training list that CIFAR-LT takes of CIFAR
        (`long_tail.long_tail_counts` from the smallest class's count, then
        `long_tail.long_tail_indices`): how to make a long-tailed version of a balanced set.

    Returns:
      The dataset; class counts come from the training list, and `eval_transform` is
      resize(eval_resize) + center_crop(crop_size).
    """
    if name not in DEFAULT_LISTS:
        raise ValueError(f"name={name!r}; expected one of {sorted(DEFAULT_LISTS)}")
    if not root:
        raise FileNotFoundError(f"config.data.root is empty; {name} needs the image folder "
                                "its list files' paths are relative to")
    train, val, test = (
        None if path is None else load_split(path, root, num_classes, check_files=check_files)
        for path in list_paths(name, list_dir or root, train_list, val_list, test_list))
    return assemble(name, num_classes, train, val, test, crop_size=crop_size,
                    eval_resize=eval_resize, imbalance_ratio=imbalance_ratio, profile=profile,
                    subset_seed=subset_seed, class_names=read_class_names(list_dir or root))


def assemble(name: str, num_classes: int, train: splits.Split, val: splits.Split | None,
             test: splits.Split, *, crop_size: int = 224, eval_resize: int = 256,
             imbalance_ratio: float = 1.0, profile: str = "exp", subset_seed: int = 0,
             class_names: list[str] | None = None) -> splits.Dataset:
    """The dataset of a list-file family from its splits (read from list files or from TFDS):
    the long-tailed subset of `train` for a ratio > 1, the family's normalisation and the
    eval transform (arguments as for `image_list_dataset`).

    A subset that leaves a class without images raises ValueError naming it (`class_names`,
    else its index); one that keeps less than half of a training list that is long-tailed
    already prints a warning (`long_tail.checked_subset`)."""
    if imbalance_ratio > 1:
        present = np.bincount(train.labels, minlength=num_classes)
        counts = long_tail.long_tail_counts(max(int(present.min()), 1), num_classes,
                                            imbalance_ratio, profile)
        long_tail.warn(long_tail.checked_subset(
            present, counts, imbalance_ratio=imbalance_ratio, profile=profile,
            class_names=class_names, source="the training list"))
        keep = long_tail.long_tail_indices(train.labels, counts, seed=subset_seed)
        train = splits.Split(train.source, train.indices[keep], train.labels[keep])
    mean, std = NORMALIZATION[name]
    return splits.Dataset(
        name=name,
        num_classes=num_classes,
        image_shape=(crop_size, crop_size, 3),
        mean=mean,
        std=std,
        train=train,
        test=test,
        val=val,
        class_counts=splits.counts_from_labels(train.labels, num_classes),
        eval_transform=augment_imagenet.make_eval_transform(resize=eval_resize,
                                                            crop_size=crop_size),
    )
