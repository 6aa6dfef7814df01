"""Dataset registry: `config.data.name` -> a `Dataset` of long-tailed splits.

`config.data.source` says where the records come from: 'files' (the default: CIFAR from the
folder `ltx-prepare` writes, the list-file datasets from list files and an image folder),
'tfds' (a dataset prepared by TFDS in ArrayRecord format, read without TensorFlow;
`ltx.data.tfds_source`) or, for the list-file datasets, 'records' (ArrayRecord shards of
pre-resized images that `ltx-prepare records` writes; `ltx.data.records`). All give the same
splits of the same lists; only the reading (and, for records, the stored image size) differs.
"""

from __future__ import annotations

from ltx.data import cifar, digits, image_lists, splits

SOURCES = ("files", "tfds", "records")

NAMES = ("digits_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt", "inaturalist2018",
         "places_lt", "list_files")

# (num_classes, image_shape fed to the model) per dataset name, known without reading any data:
# what `ltx.stats` and shape-only tools need. ImageNet-scale entries are the 224x224 crops.
SPECS = {
    "digits_lt": (10, (8, 8, 1)),
    "cifar10_lt": (10, (32, 32, 3)),
    "cifar100_lt": (100, (32, 32, 3)),
    "imagenet_lt": (1000, (224, 224, 3)),
    "inaturalist2018": (8142, (224, 224, 3)),
    "places_lt": (365, (224, 224, 3)),
}


def spec(data) -> tuple[int, tuple[int, int, int]]:
    """(num_classes, image_shape) of a dataset without loading it: `data` is `config.data` or a
    dataset name ('list_files' needs the config: `data.num_classes`, `data.augment.crop_size`)."""
    name = data if isinstance(data, str) else data.name
    if name == "list_files":
        if isinstance(data, str):
            raise ValueError("the 'list_files' dataset's spec needs config.data (num_classes)")
        size = int(data.augment.crop_size)
        num_classes = int(data.num_classes)
        if num_classes == 0 and _source(data) == "tfds" and not data.list_dir:
            from ltx.data import tfds_source
            num_classes = tfds_source.num_classes(_tfds_name(data), _tfds_data_dir(data))
        elif num_classes == 0:  # From classes.txt or the training list.
            list_dir = data.list_dir or data.root
            train_list = image_lists.resolve_list(list_dir, data.train_list,
                                                  image_lists.DEFAULT_LISTS[name][0])
            num_classes = image_lists.infer_num_classes(list_dir, train_list)
        return num_classes, (size, size, 3)
    if name not in SPECS:
        raise ValueError(f"config.data.name={name!r}; expected one of {sorted(NAMES)}")
    return SPECS[name]


def class_names(data) -> list[str] | None:
    """The class names of `config.data` in label order, or None where the data names none;
    reads no image: digits-LT's digits, the names a CIFAR tarball lists (kept in the prepared
    folder's info.json), a TFDS dataset's label names, `classes.txt` beside a list-file
    dataset's lists (what `ltx-prepare folders` writes). Names whose number is not the
    dataset's number of classes are not used (None)."""
    name = data.name
    try:
        num_classes = spec(data)[0]
        if name == "digits_lt":
            names = [str(d) for d in range(num_classes)]
        elif _source(data) == "tfds" and (name in cifar.NAMES or not data.get("list_dir", "")):
            from ltx.data import tfds_source
            names = tfds_source.class_names(_tfds_name(data), _tfds_data_dir(data))
        elif name in cifar.NAMES:
            names = cifar.class_names(name, data.data_dir)
        else:
            names = image_lists.read_class_names(data.get("list_dir", "") or data.root)
    except (OSError, ImportError):  # Names are for display: none rather than no prediction.
        return None
    return names if names is not None and len(names) == num_classes else None


def build(data_config) -> splits.Dataset:
    """Builds the dataset described by `config.data` (fields as in the configs/ files).

    A method may train on a view of it (`ltx.methods.dataset_view`, e.g. a class-balanced
    expert's classes plus a reject class)."""
    name = data_config.name
    if _source(data_config) == "tfds" and name != "digits_lt":
        return _build_from_tfds(data_config)
    if _source(data_config) == "records":
        return _build_from_records(data_config)
    if name == "digits_lt":
        return digits.digits_lt(data_config.imbalance_ratio, profile=data_config.profile,
                                subset_seed=data_config.subset_seed)
    if name in ("cifar10_lt", "cifar100_lt"):
        return cifar.cifar_lt(name, data_dir=data_config.data_dir,
                              imbalance_ratio=data_config.imbalance_ratio,
                              profile=data_config.profile, subset_seed=data_config.subset_seed)
    if name in image_lists.DEFAULT_LISTS:
        aug = data_config.augment
        if aug.get("kind", "cifar") != "imagenet":
            raise ValueError(f"{name} has images of every size; it needs "
                             "config.data.augment.kind='imagenet' (random resized crops), got "
                             f"{aug.get('kind', 'cifar')!r}")
        return image_lists.image_list_dataset(
            name, num_classes=spec(data_config)[0], root=data_config.root,
            list_dir=data_config.list_dir, train_list=data_config.train_list,
            val_list=data_config.val_list, test_list=data_config.test_list,
            crop_size=aug.crop_size, eval_resize=aug.eval_resize,
            check_files=data_config.check_files,
            **({"imbalance_ratio": data_config.imbalance_ratio, "profile": data_config.profile,
                "subset_seed": data_config.subset_seed} if name == "list_files" else {}))
    raise ValueError(f"config.data.name={name!r}; expected one of {NAMES}")


def without_images(data_config, class_counts) -> splits.Dataset:
    """The dataset of `config.data` with no split read: its name, number of classes, input
    shape, normalisation and eval transform, and the given training counts int [C]; `train`,
    `val` and `test` are None. What a restored model needs to predict images of one's own
    (`ltx-predict`, `ltx-import`) when the dataset is not on this machine. digits-LT is
    embedded, so it is built whole (its normalisation is measured on its images)."""
    import numpy as np

    from ltx.data import augment, augment_imagenet
    name = data_config.name
    num_classes, image_shape = spec(data_config)
    counts = np.asarray(class_counts, np.int64)
    if counts.shape != (num_classes,) or (counts < 0).any():
        raise ValueError(f"class counts of shape {counts.shape} (min "
                         f"{counts.min() if counts.size else '-'}); expected {num_classes} "
                         f"non-negative counts for {name}")
    if name == "digits_lt":
        return build(data_config)
    if name in cifar.NAMES:
        mean, std, transform = augment.CIFAR_MEAN, augment.CIFAR_STD, None
    else:
        mean, std = image_lists.NORMALIZATION[name]
        aug = data_config.augment
        transform = augment_imagenet.make_eval_transform(resize=aug.eval_resize,
                                                         crop_size=aug.crop_size)
    return splits.Dataset(name=name, num_classes=num_classes, image_shape=image_shape,
                          mean=mean, std=std, train=None, test=None, val=None,
                          class_counts=counts, eval_transform=transform)


def _source(data_config) -> str:
    source = data_config.get("source", "files")
    if source not in SOURCES:
        raise ValueError(f"config.data.source={source!r}; expected one of {SOURCES}")
    return source


def _tfds_name(data_config) -> str:
    from ltx.data import tfds_source
    name = data_config.get("tfds_name", "") or tfds_source.TFDS_NAMES.get(data_config.name)
    if not name:
        raise ValueError(f"config.data.tfds_name is empty; the {data_config.name!r} dataset "
                         "read from TFDS needs the TFDS dataset's name (e.g. 'food101')")
    return name


def _tfds_data_dir(data_config) -> str | None:
    return data_config.get("tfds_data_dir", "") or None


def _build_from_tfds(data_config) -> splits.Dataset:
    from ltx.data import tfds_source
    name, tfds_name, data_dir = data_config.name, _tfds_name(data_config), _tfds_data_dir(
        data_config)
    if name in cifar.NAMES:
        return cifar.long_tailed(name, tfds_source.cifar_arrays(tfds_name, data_dir),
                                 imbalance_ratio=data_config.imbalance_ratio,
                                 profile=data_config.profile,
                                 subset_seed=data_config.subset_seed,
                                 class_names=class_names(data_config))
    aug = data_config.augment
    num_classes = spec(data_config)[0]
    list_dir = data_config.get("list_dir", "")
    if list_dir:  # The official list files, joined to the TFDS records.
        train, val, test = _list_splits(data_config, num_classes)
    else:
        train, val, test = tfds_source.direct_splits(tfds_name, data_dir)
    return _assemble(data_config, num_classes, train, val, test)


def _assemble(data_config, num_classes, train, val, test) -> splits.Dataset:
    name, aug = data_config.name, data_config.augment
    return image_lists.assemble(
        name, num_classes, train, val, test, crop_size=aug.crop_size,
        eval_resize=aug.eval_resize,
        **({"imbalance_ratio": data_config.imbalance_ratio, "profile": data_config.profile,
            "subset_seed": data_config.subset_seed, "class_names": class_names(data_config)}
           if name == "list_files" else {}))


def _list_splits(data_config, num_classes: int):
    """(train, val or None, test) of the configured list files, each read by
    `load_list_split` (from TFDS records or from record shards)."""
    paths = image_lists.list_paths(
        data_config.name, data_config.list_dir or data_config.get("root", ""),
        data_config.train_list, data_config.val_list, data_config.test_list)
    return tuple(None if path is None else load_list_split(data_config, path, num_classes)
                 for path in paths)


def _build_from_records(data_config) -> splits.Dataset:
    if data_config.name not in image_lists.DEFAULT_LISTS:
        raise ValueError(f"config.data.source='records' is for the list-file datasets "
                         f"{sorted(image_lists.DEFAULT_LISTS)}; {data_config.name!r} is not one")
    num_classes = spec(data_config)[0]
    return _assemble(data_config, num_classes, *_list_splits(data_config, num_classes))


def load_list_split(data_config, list_path: str, num_classes: int) -> splits.Split:
    """The split of every line of one list file of the configured dataset (e.g. a test-agnostic
    forward/backward list): read from `data.root`, or joined to the TFDS records."""
    source = _source(data_config)
    if source == "tfds":
        from ltx.data import tfds_source
        return tfds_source.list_split(_tfds_name(data_config), _tfds_data_dir(data_config),
                                      list_path, num_classes)
    if source == "records":
        from ltx.data import records
        return records.list_split(data_config.records_dir, list_path, num_classes)
    return image_lists.load_split(list_path, data_config.root, num_classes)
