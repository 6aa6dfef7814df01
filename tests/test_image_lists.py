"""List-file datasets (ImageNet-LT / iNaturalist / Places-LT layout) and ImageNet-style transforms,
over a tiny JPEG tree generated here."""

import pickle

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ltx import config_lib
from ltx.data import augment, augment_imagenet, datasets, image_lists, pipeline

# (relative path, label, (width, height), mode) of the tiny training tree: counts 4 / 2 / 1.
_TRAIN = [
    ("train/c0/a.jpg", 0, (40, 30), "RGB"),
    ("train/c0/b.jpg", 0, (33, 57), "RGB"),
    ("train/c0/c.jpg", 0, (64, 64), "L"),  # Grayscale: decoded to 3 equal channels.
    ("train/c0/d.jpg", 0, (50, 20), "CMYK"),
    ("train/c1/a.jpg", 1, (28, 45), "RGB"),
    ("train/c1/b.jpg", 1, (60, 41), "RGB"),
    ("train/c2/a.jpg", 2, (36, 36), "RGB"),
]
_TEST = [("val/x.jpg", 2, (48, 35), "RGB"), ("val/y.jpg", 0, (30, 52), "RGB"),
         ("val/z.jpg", 1, (45, 45), "L")]


def _write_image(path, size, mode, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: a JPEG-friendly image with structure for the crops to see.
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    Image.fromarray(rgb).convert(mode).save(path, format="JPEG", quality=90)


def _write_list(path, entries):
    path.write_text("".join(f"{rel} {label}\n" for rel, label, *_ in entries))
    return str(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_lt")
    for seed, (rel, _, size, mode) in enumerate(_TRAIN + _TEST):
        _write_image(root / rel, size, mode, seed)
    lists = root / "lists"
    lists.mkdir()
    _write_list(lists / "ImageNet_LT_train.txt", _TRAIN)
    _write_list(lists / "ImageNet_LT_val.txt", _TEST[:2])
    _write_list(lists / "ImageNet_LT_test.txt", _TEST)
    _write_list(lists / "ImageNet_LT_forward2.txt", _TEST[:1] * 2)
    return root


def _config(root, crop_size=224, eval_resize=256):
    c = config_lib.add_list_file_data(config_lib.base_config(), "imagenet_lt", root=str(root))
    c.data.list_dir = str(root / "lists")
    c.data.augment.crop_size = crop_size
    c.data.augment.eval_resize = eval_resize
    return c


def _source(tmp_path, lines, num_classes=3):
    path = tmp_path / "list.txt"
    path.write_text(lines)
    return image_lists.ImageListSource(str(path), str(tmp_path), num_classes)


# -- the dataset ----------------------------------------------------------------------------


def test_counts_splits_and_decoding(tree):
    d = datasets.build(_config(tree).data)
    assert d.num_classes == 1000 and d.image_shape == (224, 224, 3)
    np.testing.assert_array_equal(d.class_counts[:4], [4, 2, 1, 0])
    assert d.class_counts.sum() == 7 and len(d.val) == 2 and len(d.test) == 3
    assert d.mean == augment.IMAGENET_MEAN and d.std == augment.IMAGENET_STD
    for i, (rel, label, (w, h), mode) in enumerate(_TRAIN):
        record = d.train.source[int(d.train.indices[i])]
        assert record["image"].shape == (h, w, 3) and record["image"].dtype == np.uint8
        assert record["label"] == label == d.train.labels[i]
        with Image.open(tree / rel) as pil:
            np.testing.assert_array_equal(record["image"], np.asarray(pil.convert("RGB")))
        if mode == "L":
            image = record["image"]
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    # A test-agnostic list loads the same way; the source pickles for grain worker processes.
    forward = image_lists.load_split(str(tree / "lists" / "ImageNet_LT_forward2.txt"),
                                     str(tree), 1000)
    np.testing.assert_array_equal(forward.labels, [2, 2])
    again = pickle.loads(pickle.dumps(forward.source))
    np.testing.assert_array_equal(again[1]["image"], forward.source[1]["image"])


def test_reference_list_names_and_normalisation():
    assert image_lists.DEFAULT_LISTS["inaturalist2018"] == (
        "iNaturalist18_train.txt", None, "iNaturalist18_val.txt")
    assert image_lists.NORMALIZATION["inaturalist2018"] == ((0.466, 0.471, 0.380),
                                                            (0.195, 0.194, 0.192))
    assert image_lists.NORMALIZATION["places_lt"] == (augment.IMAGENET_MEAN,
                                                      augment.IMAGENET_STD)
    assert {n: datasets.spec(n)[0] for n in image_lists.DEFAULT_LISTS if n != "list_files"} == {
        "imagenet_lt": 1000, "inaturalist2018": 8142, "places_lt": 365}
    # Any other list-file dataset: its size comes from the config.
    c = config_lib.add_list_file_data(config_lib.base_config(), "list_files", root="/data")
    c.data.num_classes, c.data.augment.crop_size = 37, 64
    assert datasets.spec(c.data) == (37, (64, 64, 3))
    with pytest.raises(ValueError, match="needs config.data"):
        datasets.spec("list_files")


def test_val_list_none_drops_the_split_and_missing_lists_are_named(tree):
    c = _config(tree)
    c.data.val_list = "none"
    assert datasets.build(c.data).val is None
    c.data.test_list = "ImageNet_LT_missing.txt"
    with pytest.raises(FileNotFoundError, match="ImageNet_LT_missing.txt does not exist"):
        datasets.build(c.data)
    c = _config(tree)
    c.data.augment.kind = "cifar"
    with pytest.raises(ValueError, match="augment.kind='imagenet'"):
        datasets.build(c.data)
    c = _config(tree)
    c.data.root = ""
    with pytest.raises(FileNotFoundError, match="config.data.root is empty"):
        datasets.build(c.data)


# -- clear errors ---------------------------------------------------------------------------


def test_malformed_lines_and_labels_out_of_range_name_the_line(tmp_path):
    with pytest.raises(ValueError, match=r"list.txt:3: expected 'relative/path label'.*'b.jpg'"):
        _source(tmp_path, "a.jpg 0\n\nb.jpg\n")
    with pytest.raises(ValueError, match=r"list.txt:2: expected .*'b.jpg one'"):
        _source(tmp_path, "a.jpg 0\nb.jpg one\n")
    with pytest.raises(ValueError, match=r"list.txt:2: label 3 out of range \[0, 3\)"):
        _source(tmp_path, "a.jpg 0\nb.jpg 3\n")
    with pytest.raises(ValueError, match=r"list.txt:1: label -1 out of range"):
        _source(tmp_path, "a.jpg -1\n")
    with pytest.raises(ValueError, match="has no entries"):
        _source(tmp_path, "\n")
    with pytest.raises(FileNotFoundError, match="nowhere.txt does not exist"):
        image_lists.ImageListSource(str(tmp_path / "nowhere.txt"), str(tmp_path), 3)


def test_missing_and_corrupt_images_name_path_and_line(tmp_path):
    _write_image(tmp_path / "good.jpg", (20, 10), "RGB", 0)
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg at all")
    full = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(full[:len(full) // 2])
    source = _source(tmp_path, "good.jpg 0\nmissing.jpg 1\ngarbage.jpg 2\ntruncated.jpg 0\n")
    assert source[0]["image"].shape == (10, 20, 3)  # Listing is lazy about the others.
    with pytest.raises(FileNotFoundError, match=r"missing.jpg does not exist \(listed at "
                                                 r".*list.txt:2\)"):
        source[1]
    with pytest.raises(OSError, match=r"cannot read image .*garbage.jpg \(listed at "
                                      r".*list.txt:3\)"):
        source[2]
    with pytest.raises(OSError, match=r"cannot read image .*truncated.jpg \(listed at "
                                      r".*list.txt:4\)"):
        source[3]
    with pytest.raises(FileNotFoundError, match=r"1 of the 4 images .*/missing.jpg \(listed at "
                                                 r".*list.txt:2\)"):
        image_lists.ImageListSource(str(tmp_path / "list.txt"), str(tmp_path), 3,
                                    check_files=True)


# -- transforms -----------------------------------------------------------------------------


def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), rng.integers(0, 256, (h, w))],
                    -1).astype(np.uint8)


@pytest.mark.parametrize("randaugment", [False, True])
def test_train_transform_shape_range_and_determinism(randaugment):
    transform = augment_imagenet.make_train_transform(crop_size=224, randaugment=randaugment)
    image = _photo(180, 300)
    a = transform(image, np.random.default_rng(3))
    b = transform(image, np.random.default_rng(3))
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    outs = {transform(image, np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(outs) == 6
    gray = np.repeat(_photo(40, 70)[..., :1], 3, -1)  # Smaller than the crop: upsampled.
    assert transform(gray, np.random.default_rng(0)).shape == (224, 224, 3)


def test_eval_transform_is_resize_256_and_center_crop_224():
    image = _photo(257, 300)  # Odd margins exercise the crop's rounding.
    out = augment_imagenet.make_eval_transform(resize=256, crop_size=224)(image)
    new_w = int(256 * 300 / 257)  # torchvision truncates the longer side.
    resized = Image.fromarray(image).resize((new_w, 256), Image.Resampling.BILINEAR)
    left, top = int(round((new_w - 224) / 2)), int(round((256 - 224) / 2))
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)))
    np.testing.assert_array_equal(out, expected)
    tall = augment_imagenet.make_eval_transform()(_photo(400, 256))
    np.testing.assert_array_equal(tall, _photo(400, 256)[88:312, 16:240])  # No resize needed.
    with pytest.raises(ValueError, match="eval resize=200 < crop_size=224"):
        augment_imagenet.make_eval_transform(resize=200)


def test_random_resized_crop_at_full_scale_is_a_plain_resize():
    image = _photo(50, 50)
    out = augment_imagenet.random_resized_crop(image, np.random.default_rng(0), size=32,
                                               scale=(1.0, 1.0), ratio=(1.0, 1.0))
    expected = Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(out, np.asarray(expected))


def test_random_resized_crop_windows_follow_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = augment_imagenet.crop_box(120, 200, rng, scale=(0.08, 1.0),
                                                    ratio=(3 / 4, 4 / 3))
        assert 0 <= top <= 120 - h and 0 <= left <= 200 - w
        assert 0.08 * 24000 * 0.9 <= h * w <= 24000
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # Nothing fits a 10:1 strip at ratio 1: the fallback is its centred square-most window.
    assert augment_imagenet.crop_box(10, 100, rng, scale=(0.9, 1.0), ratio=(1.0, 1.0)) == (
        0, 45, 10, 10)


def test_color_jitter_is_identity_at_zero_and_an_enhance_otherwise():
    image = _photo(30, 40)
    same = augment_imagenet.color_jitter(image, np.random.default_rng(0), brightness=0,
                                         contrast=0, saturation=0, hue=0)
    np.testing.assert_array_equal(same, image)
    # Brightness alone: the factor is the generator's uniform draw after the order permutation.
    rng = np.random.default_rng(5)
    rng.permutation(4)
    factor = rng.uniform(0.6, 1.4)
    out = augment_imagenet.color_jitter(image, np.random.default_rng(5), brightness=0.4,
                                        contrast=0, saturation=0, hue=0)
    expected = ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor)
    np.testing.assert_array_equal(out, np.asarray(expected))
    hued = augment_imagenet.color_jitter(image, np.random.default_rng(1), brightness=0,
                                         contrast=0, saturation=0, hue=0.5)
    assert hued.shape == image.shape and not np.array_equal(hued, image)


@pytest.mark.parametrize("name", augment_imagenet.RAND_AUGMENT_OPS)
def test_every_randaugment_op_keeps_shape(name):
    pil = Image.fromarray(_photo(24, 32))
    for magnitude in (0.0, 5.0, 10.0):
        out = augment_imagenet._rand_op(pil, name, magnitude, np.random.default_rng(0),
                                        augment_imagenet.RAND_AUGMENT_FILL)
        assert out.size == (32, 24) and out.mode == "RGB"


def test_randaugment_magnitude_maps():
    image = _photo(24, 32)
    pil = Image.fromarray(image)
    rng = np.random.default_rng(0)
    fill = augment_imagenet.RAND_AUGMENT_FILL
    assert fill == (124, 116, 104)
    solarized = augment_imagenet._rand_op(pil, "Solarize", 10.0, rng, fill)
    np.testing.assert_array_equal(np.asarray(solarized), image)  # Threshold 256: no-op.
    posterized = np.asarray(augment_imagenet._rand_op(pil, "Posterize", 10.0, rng, fill))
    np.testing.assert_array_equal(posterized, image & 0xF0)  # Keeps 4 bits.
    added = np.asarray(augment_imagenet._rand_op(pil, "SolarizeAdd", 10.0, rng, fill))
    np.testing.assert_array_equal(added, np.where(image < 128, np.minimum(image + 110, 255),
                                                  image))
    # No op applied (probability 0) leaves the image as it was.
    np.testing.assert_array_equal(
        augment_imagenet.rand_augment(image, np.random.default_rng(0), prob=0.0), image)


# -- config dispatch and the pipeline end to end --------------------------------------------


def test_default_augment_config_keeps_the_cifar_transform():
    c = config_lib.add_fixed_size_data(config_lib.base_config(), "cifar100_lt",
                                       imbalance_ratio=100.0)
    assert c.data.augment.kind == "cifar"
    image = _photo(32, 32)
    np.testing.assert_array_equal(
        pipeline.make_transform(c.data.augment)(image, np.random.default_rng(4)),
        augment.make_train_transform()(image, np.random.default_rng(4)))
    c.data.augment.kind = "tfds"
    with pytest.raises(ValueError, match="augment.kind='tfds'"):
        pipeline.make_transform(c.data.augment)


def test_pipeline_end_to_end_over_the_tree(tree):
    config = _config(tree)
    config.data.augment.randaugment = True
    d = datasets.build(config.data)
    transform = pipeline.make_transform(config.data.augment)
    ds = pipeline.train_dataset(d.train, global_batch_size=4, seed=0, mean=d.mean, std=d.std,
                                transform=transform)
    it = pipeline.train_iterator(ds)
    first, second = next(it), next(it)
    for batch in (first, second):
        assert batch["image"].shape == (4, 224, 224, 3) and batch["image"].dtype == np.float32
        assert np.isfinite(batch["image"]).all() and batch["label"].max() <= 2
    np.testing.assert_array_equal(pipeline.train_iterator(ds).__next__()["image"],
                                  first["image"])
    batches = list(pipeline.eval_batches(d.test, global_batch_size=2, mean=d.mean, std=d.std,
                                         transform=d.eval_transform))
    assert [b["image"].shape for b in batches] == [(2, 224, 224, 3)] * 2
    assert batches[1]["mask"].tolist() == [True, False]
    np.testing.assert_array_equal(batches[0]["label"], [2, 0])
    expected = augment.normalize(d.eval_transform(d.test.source[0]["image"]), d.mean, d.std)
    np.testing.assert_allclose(batches[0]["image"][0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="all input arrays must have the same shape"):
        next(pipeline.eval_batches(d.test, global_batch_size=2, mean=d.mean, std=d.std))


@pytest.mark.slow
def test_imagenet_lt_balpoe_config_trains_and_evaluates_over_the_tree(tree, tmp_path):
    import json
    import os

    from ltx import trainer

    config = config_lib.load_config_file(
        os.path.join(os.path.dirname(__file__), os.pardir, "configs", "imagenet_lt_balpoe.py"),
        "arch=resnet10,epochs=1")
    config.data.root = str(tree)
    config.data.list_dir = str(tree / "lists")
    config.data.num_workers = 0
    config.data.augment.crop_size = 32  # The 224 path is covered above; this keeps it fast.
    config.data.augment.eval_resize = 36
    config.model.widths = (8, 8, 16, 16)
    config.batch_size = 4
    config.eval.batch_size = 4
    config.checkpoint.async_save = False
    final, run = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert run.model.num_experts == 3 and run.step == 2  # ceil(7 / 4)
    assert run.dataset.image_shape == (32, 32, 3) and run.dataset.num_classes == 1000
    with open(tmp_path / "run" / "final_metrics.json") as f:
        assert json.load(f)["dataset"] == "imagenet_lt"
    assert np.isfinite(final["nll"]) and np.isfinite(final["val_nll"])
    # The shipped test-agnostic lists replace the subsets cut from the test split.
    from ltx import report as evaluate

    report = evaluate.evaluate_workdir(str(tmp_path / "run"), predictor=run, pictures=False)
    assert list(report["distributions"]) == ["forward-2"]
    assert report["distributions"]["forward-2"]["num_images"] == 2
    assert report["meta"]["shifted_test_lists"] == str(tree / "lists")
    markdown = (tmp_path / "run" / "eval" / "report.md").read_text()
    assert "shipped test-agnostic list files" in markdown
