"""Dataset registry: `config.data.name` -> a `Dataset` of long-tailed splits."""

from __future__ import annotations

from ltx.data import cifar, class_subsets, digits, image_lists, splits

NAMES = ("digits_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt", "inaturalist2018",
         "places_lt")

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


def spec(name: str) -> tuple[int, tuple[int, int, int]]:
    """(num_classes, image_shape) of dataset `name` without loading it."""
    if name not in SPECS:
        raise ValueError(f"config.data.name={name!r}; expected one of {sorted(SPECS)}")
    return SPECS[name]


def build(data_config) -> splits.Dataset:
    """Builds the dataset described by `config.data` (fields as in the configs/ files).

    A class-balanced expert's config (`data.expert_classes` / `data.expert_group`) gets that
    expert's view of the dataset (`ltx.data.class_subsets`)."""
    name = data_config.name
    if name == "digits_lt":
        dataset = digits.digits_lt(data_config.imbalance_ratio, profile=data_config.profile,
                                   subset_seed=data_config.subset_seed)
    elif name in ("cifar10_lt", "cifar100_lt"):
        dataset = cifar.cifar_lt(name, data_dir=data_config.data_dir,
                                 imbalance_ratio=data_config.imbalance_ratio,
                                 profile=data_config.profile, subset_seed=data_config.subset_seed)
    elif name in image_lists.DEFAULT_LISTS:
        aug = data_config.augment
        if aug.get("kind", "cifar") != "imagenet":
            raise ValueError(f"{name} has images of every size; it needs "
                             "config.data.augment.kind='imagenet' (random resized crops), got "
                             f"{aug.get('kind', 'cifar')!r}")
        dataset = image_lists.image_list_dataset(
            name, num_classes=spec(name)[0], root=data_config.root,
            list_dir=data_config.list_dir, train_list=data_config.train_list,
            val_list=data_config.val_list, test_list=data_config.test_list,
            crop_size=aug.crop_size, eval_resize=aug.eval_resize,
            check_files=data_config.check_files)
    else:
        raise ValueError(f"config.data.name={name!r}; expected one of {NAMES}")
    return class_subsets.apply(data_config, dataset)
