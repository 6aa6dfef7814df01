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

from ltx.data import augment, augment_imagenet, splits

# Reference list-file names: (train, val, test). iNaturalist 2018 has no separate validation
# list; the references test on iNaturalist18_val.txt. The Places-LT names are OLTR's, which
# SADE's data_txt/Places_LT_v2/ and LFME use.
DEFAULT_LISTS = {
    "imagenet_lt": ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"),
    "inaturalist2018": ("iNaturalist18_train.txt", None, "iNaturalist18_val.txt"),
    "places_lt": ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"),
    # Any dataset of this layout, with `data.num_classes` classes.
    "list_files": ("train.txt", None, "test.txt"),
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
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"list file {list_path} does not exist (each line: "
                                "'relative/path label'); set config.data.list_dir or the "
                                "config.data.*_list fields (val_list='none' drops the "
                                "validation split)")
    paths, labels, lines = [], [], []
    with open(list_path, encoding="utf-8") as f:
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


def decode_image(path: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] of the image file at `path` (any mode Pillow reads)."""
    with Image.open(path) as pil:
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
            missing = [i for i in range(len(self)) if not os.path.isfile(self.image_path(i))]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of the {len(self)} images of {list_path} are missing, "
                    f"the first {self.image_path(missing[0])} ({self._where(missing[0])})")

    def __len__(self) -> int:
        return len(self.labels)

    def _where(self, index: int) -> str:
        return f"listed at {self.list_path}:{self._lines[index]}"

    def image_path(self, index: int) -> str:
        return os.path.join(self.root, self._paths[index].decode("utf-8"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.image_path(index)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path} does not exist ({self._where(index)}); "
                                    "is config.data.root the folder the list paths start from?")
        try:
            image = decode_image(path)
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


def _resolve(list_dir: str, given: str, default: str | None) -> str | None:
    name = given or default
    if name is None or name.lower() == "none":
        return None
    return name if os.path.isabs(name) else os.path.join(list_dir, name)


def image_list_dataset(name: str, *, num_classes: int, root: str, list_dir: str = "",
                       train_list: str = "", val_list: str = "", test_list: str = "",
                       crop_size: int = 224, eval_resize: int = 256,
                       check_files: bool = False) -> splits.Dataset:
    """ImageNet-LT, iNaturalist 2018, Places-LT or any other dataset ('list_files') from list
    files.

    Args:
      name: a key of `DEFAULT_LISTS` ('list_files': `train.txt`, `test.txt` and no val list by
        default, ImageNet's normalisation).
      num_classes: C; every label must lie in [0, C).
      root: image root the list paths are relative to.
      list_dir: folder of the list files ('' = `root`).
      train_list, val_list, test_list: list file names (relative to `list_dir`) or absolute
        paths; '' takes the reference name of `DEFAULT_LISTS`, 'none' drops the split (the
        train and test lists are required).
      crop_size: side of the model input (the train and eval crops).
      eval_resize: shorter side before the eval centre crop (256 for 224 crops).
      check_files: stat every image at build time.

    Returns:
      The dataset; class counts come from the training list, and `eval_transform` is
      resize(eval_resize) + center_crop(crop_size).
    """
    if name not in DEFAULT_LISTS:
        raise ValueError(f"name={name!r}; expected one of {sorted(DEFAULT_LISTS)}")
    if not root:
        raise FileNotFoundError(f"config.data.root is empty; {name} needs the image folder "
                                "its list files' paths are relative to")
    list_dir = list_dir or root
    loaded = []
    for split_name, given, default in zip(("train", "val", "test"),
                                          (train_list, val_list, test_list),
                                          DEFAULT_LISTS[name]):
        path = _resolve(list_dir, given, default)
        if path is None and split_name != "val":
            raise ValueError(f"{name} needs a {split_name} list; got {given!r}")
        loaded.append(None if path is None else
                      load_split(path, root, num_classes, check_files=check_files))
    train, val, test = loaded
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
