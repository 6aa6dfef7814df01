"""The command-line tools and their error convention.

    ltx-eval --workdir=runs/digits [--shot_convention=lfme] [--step=N] [--nopictures] [--evals=...]
    ltx-predict --workdir=runs/digits my_digits/ --top_k=3 [--prior=p0,...,p9]
    ltx-stats --config=configs/digits_lt_balpoe.py | --workdir=runs/digits [--xla]
    ltx-import --config=... --checkpoint=model.pth --workdir=runs/imported [--stage=...]
    ltx-prepare cifar100 [--tarball=cifar-100-python.tar.gz] [--data_dir=~/ltx_data]
    ltx-prepare records --root=... --list_dir=... --out=...   # list files as ArrayRecord shards
    ltx-prepare folders /data/my_set [--list_dir=...]   # <root>/{train,val,test}/<class>/<image>
    ltx-sweep --root=runs/grid --configs=configs/digits_lt_ce.py,... --seeds=1,2,3 [--table]
    python -m ltx.cli eval --workdir=...        # any tool without the console scripts

(`ltx-train` is `ltx.train`.) Each tool defines its flags here and imports its module (and JAX)
only when it runs, so `--help` answers at once, with exit status 0: what the tool does, its
usage with positional arguments and subcommands, how config arguments work where it takes a
config (`HELP`, `CONFIG_ARGUMENTS`), and its flags. The logic lives in `ltx.report`,
`ltx.predict`, `ltx.stats`, `ltx.checkpoint_import` and `ltx.data.cifar`.

Errors: bad input (a config value, a path, a dataset, a checkpoint, a flag) ends with one line
`ltx-<tool>: error: <message>` on stderr and exit status 2 (`EXIT_BAD_INPUT`); a diverged run
with status 3 (`EXIT_DIVERGED`); a preempted run (SIGTERM/SIGINT, checkpoint saved) with 4
(`EXIT_PREEMPTED`). The traceback is kept for real bugs, and for any error when the environment
variable LTX_TRACEBACK=1 is set.
"""

from __future__ import annotations

import os
import sys

from ltx import faults, files

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 4
TRACEBACK_ENV = "LTX_TRACEBACK"
# What bad input raises: ltx's checks raise ValueError (ConfigError, CheckpointMismatchError, ...)
# and the file system OSError (a missing path, a full disk).
BAD_INPUT = (ValueError, OSError)


def fail(tool: str, message: str, status: int = EXIT_BAD_INPUT, *, hint: bool = True):
    """Prints `<tool>: error: <message>` to stderr and exits with `status`; `hint` adds how to
    see the traceback."""
    hint = (f"\n(set {TRACEBACK_ENV}=1 for the traceback)" if hint and status == EXIT_BAD_INPUT
            and os.environ.get(TRACEBACK_ENV) != "1" else "")
    print(f"{tool}: error: {message}{hint}", file=sys.stderr, flush=True)
    sys.exit(status)


CONFIG_ARGUMENTS = (
    "Config arguments: --config=<file.py>[:<key>=<value>,...] builds the config that the "
    "file's get_config(<key>=<value>,...) returns; the keys a file takes are listed under "
    "'Arguments:' in its docstring (e.g. configs/cifar100_lt_balpoe.py:ir=50,mixup=0.4). Every "
    "config takes tiny=1 (a smoke run: a 1-block model, every stage at most one epoch) and "
    "epochs=N (the recipe rescaled to N epochs, its decay and warm-up epochs with it). Then "
    "--config.<field>=<value> sets any field of the built config, e.g. --config.seed=2 "
    "--config.data.data_dir=~/ltx_data --config.batch_size=64.")

# Per tool: (what it does, usage lines (with <placeholders>) and examples, whether it takes
# config arguments). `--help` prints
# these, then the tool's flags; `ltx.cli` keeps them here so that the texts of all the tools
# read alike.
HELP = {
    "ltx-train": (
        "Trains the method and model that a config file describes, in a workdir: checkpoints, "
        "metrics.jsonl and, at the end, final_metrics.json and the test table on stdout. The "
        "same command again resumes an interrupted run from its newest intact checkpoint; a "
        "finished workdir is reported, not trained again. A multi-stage config trains each "
        "stage in <workdir>/<stage>. Bad input exits 2, a diverged run 3, a preempted run "
        "(SIGTERM/SIGINT, checkpoint saved) 4.",
        ["ltx-train --config=<config.py>[:<key>=<value>,...] --workdir=<dir> "
         "[--config.<field>=<value> ...]",
         "ltx-train --config=configs/digits_lt_balpoe.py --workdir=/tmp/ltx/digits",
         "ltx-train --config=configs/cifar100_lt_balpoe.py:ir=100,tiny=1 --workdir=/tmp/ltx/smoke"],
        True),
    "ltx-eval": (
        "Evaluates a finished training workdir the way long-tail papers report it: top-1 over "
        "all classes and the many/medium/few groups, NLL, ECE, MCE and Brier for the ensemble "
        "and each expert, the test-agnostic forward/backward long-tailed test sets, and the "
        "method's own evaluators. Writes <workdir>/eval/report.json (strict JSON, null for an "
        "undefined metric), report.md and the pictures, and prints the report.",
        ["ltx-eval --workdir=<finished workdir> [--shot_convention=<name>] [--step=N] "
         "[--nopictures] [--evals=<name>,...]",
         "ltx-eval --workdir=/tmp/ltx/digits"],
        False),
    "ltx-predict": (
        "Prints the top-k classes (by name where the dataset's class names are known, else "
        "by index) and their probabilities for your own images with the final predictor of a "
        "finished workdir. Positional arguments are image files or folders (every image file "
        "directly in a folder); images are converted to the dataset's channels and input size "
        "as in evaluation. --prior corrects the prediction for a known test class prior.",
        ["ltx-predict --workdir=<finished workdir> <image or folder> [<image or folder> ...] "
         "[--top_k=K] [--prior=p0,p1,...]",
         "ltx-predict --workdir=/tmp/ltx/digits my_digits/ --top_k=3"],
        False),
    "ltx-stats": (
        "Prints one JSON object with the trainable parameters and forward GFLOPs per image of "
        "the model a config describes (no data is read, nothing is trained) or of a finished "
        "workdir's final predictor. --xla adds XLA's own flop count of the lowered model.",
        ["ltx-stats --config=<config.py>[:<key>=<value>,...] [--config.<field>=<value> ...] "
         "[--xla]",
         "ltx-stats --workdir=<finished workdir> [--xla]",
         "ltx-stats --config=configs/imagenet_lt_balpoe.py:arch=resnet50"],
        True),
    "ltx-import": (
        "Converts a checkpoint of the reference code or torchvision (a torch.save .pth/.pt "
        "file, read without PyTorch; .safetensors or .npz) onto the model a config describes "
        "and writes it as a new ltx workdir (config.json, a step-0 checkpoint and "
        "import_report.json: what was copied, what was skipped and why), which ltx-eval, "
        "ltx-predict and ltx-stats then use as if ltx had trained it. Every ltx variable must "
        "be filled. A multi-stage config is imported into one stage (--stage, default the "
        "last).",
        ["ltx-import --config=<config.py>[:<key>=<value>,...] --checkpoint=<file> "
         "--workdir=<new dir> [--stage=<stage>]",
         "ltx-import --config=configs/imagenet_lt_ce.py:arch=resnet10 "
         "--config.model.head=linear --checkpoint=resnet10.pth --workdir=runs/resnet10"],
        True),
    "ltx-prepare": (
        "Prepares datasets once, offline. 'cifar10' and 'cifar100' read the official CIFAR "
        "tarball (python or binary version; its SHA-256 is checked against the published one) "
        "into <data_dir>/cifar10 or cifar100, which the CIFAR configs read. 'folders <root>' "
        "writes the list files (train.txt, test.txt, val.txt, classes.txt) of a "
        "<root>/{train,val,test}/<class>/<image> tree for configs/custom_lt.py. 'records' "
        "stores the images of list files as ArrayRecord shards of pre-resized images "
        "(config.data.source='records').",
        ["ltx-prepare cifar10 | cifar100 [--tarball=<cifar-*-python.tar.gz>] "
         "[--data_dir=<dir>] [--accept_unofficial_tarball]",
         "ltx-prepare folders <root> [--list_dir=<dir>]",
         "ltx-prepare records --root=<images> --list_dir=<lists> --out=<dir> "
         "[--shorter_side=256] [--quality=95] [--workers=N]",
         "ltx-prepare cifar100 --tarball=~/Downloads/cifar-100-python.tar.gz"],
        False),
    "ltx-sweep": (
        "Trains a grid of runs (config files x config arguments x --config overrides x seeds) "
        "under one root folder, resuming unfinished runs and skipping finished ones, then "
        "writes the table of their mean and standard deviation over seeds (table.md, table.csv, "
        "table.json). Each entry of --configs may carry config arguments "
        "(configs/x.py:mixup=0.4); --args adds an axis of them, --set an axis of overrides.",
        ["ltx-sweep --root=<dir> --configs=<config.py>[:<key>=<value>],... --seeds=1,2,3 "
         "[--args=<key>=v1,v2] [--set=<dotted.field>=v1,v2] [--parallel=N] [--eval] [--pack]",
         "ltx-sweep --root=<dir> --table"],
        True),
}
HELP_ARGUMENTS = ("--help", "-help", "-h", "--helpshort", "-?", "--helpfull")


def help_text(tool: str, *, full: bool = False) -> str:
    """What `<tool> --help` prints: what the tool does, its usage (positional arguments and
    subcommands included), how config arguments work where it takes them, and its flags
    (`full`: every flag defined, absl's and JAX's included)."""
    import textwrap

    from absl import flags
    about, usage, config = HELP[tool]
    # Usage lines have placeholders (<...>); the others are examples.
    examples = [line for line in usage if "<" not in line]
    lines = [textwrap.fill(f"{tool}: {about}", 79), "", "Usage:"]
    lines += ["  " + line for line in usage if line not in examples]
    if examples:
        lines += ["", "Examples:"] + ["  " + line for line in examples]
    if config:
        lines += ["", textwrap.fill(CONFIG_ARGUMENTS, 79)]
    if full:
        listed = flags.FLAGS.get_help()
    else:
        # The tool's own flags (`key_flags` registers them for the program name).
        listed = flags.FLAGS.module_help(sys.argv[0]).strip().split("\n", 1)[-1]
    lines += ["", "Flags:", listed.rstrip()]
    if not full:
        lines += ["", "--helpfull lists every flag (absl's and JAX's too)."]
    return "\n".join(lines)


def run(tool: str, main, argv=None) -> None:
    """`absl.app.run(main)` with the error convention of the module docstring; `--help` (and
    -h, --helpshort, --helpfull) prints `help_text` and exits 0."""
    from absl import app, flags

    args = sys.argv if argv is None else argv
    asked = [a for a in args[1:args.index("--") if "--" in args else None]
             if a in HELP_ARGUMENTS]
    if asked and tool in HELP:
        print(help_text(tool, full="--helpfull" in asked), flush=True)
        sys.exit(0)

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as err:
            fail(tool, _without_traceback(str(err)), hint=False)
        except (AttributeError, KeyError) as err:  # A --config.<key> override of no field.
            overrides = [a.split("=")[0] for a in args[1:] if a.startswith("--config.")]
            fail(tool, _unknown_override(args, overrides)
                 or f"a --config override names a field the config does not have "
                    f"({str(err).strip(chr(34))}); overrides given: {overrides}", hint=False)

    def guarded(args):
        from absl import logging
        # orbax, grain and JAX log every step of their work at INFO; --verbosity=0 shows it.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(args)
        except app.UsageError as err:
            fail(tool, str(err), hint=False)
        except faults.Diverged as err:
            fail(tool, str(err), EXIT_DIVERGED)
        except faults.Preempted as err:
            fail(tool, str(err), EXIT_PREEMPTED)
        except BAD_INPUT as err:
            if os.environ.get(TRACEBACK_ENV) == "1":
                raise
            fail(tool, _message(err))

    app.run(guarded, argv=argv, flags_parser=parse)


def config_flag(name: str = "config"):
    """The ConfigDict of the config-file flag `name`, or FileNotFoundError naming the file
    (ml_collections defers a missing file's error to the first use of the config)."""
    from absl import flags
    spec = flags.FLAGS[name].config_filename or ""
    path = spec.split(":", 1)[0]
    # config_flags imports the file as a Python module from the local disk, never a URL.
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--{name}={spec!r}: the config file {path!r} does not exist")
    return flags.FLAGS[name].value


def _unknown_override(args, overrides) -> str | None:
    """One line naming the first override of `overrides` that `--config=<file>[:<arg>]` of
    `args` has no field for, with the close field names (`config_lib.unknown_override`); None
    when the config cannot be loaded to tell."""
    from ltx import config_lib
    spec = next((a.split("=", 1)[1] for a in args[1:] if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    try:
        config = config_lib.load_config_file(path, arg or None)
    except Exception:  # noqa: BLE001 (the flag parser reports a config that does not load)
        return None
    return config_lib.unknown_override(config, overrides)


def _without_traceback(message: str) -> str:
    """A flag error's message without the traceback that config_flags embeds in it: the text
    before it and the traceback's last line (the error)."""
    head, sep, tail = message.partition("Traceback (most recent call last):")
    if not sep:
        return message
    last = [line for line in tail.strip().splitlines() if line.strip()][-1:]
    return (head.strip() + " " + " ".join(last)).strip()


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) or not str(err):
        return f"{type(err).__name__}: {err!r}"
    return str(err)


def key_flags(module: str) -> None:
    """`--help` lists the flags of `module` (absl lists the main module's, sys.argv[0])."""
    from absl import flags
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _finished_workdir(path: str) -> str:
    """`path` if it is a training workdir (its config.json), else ValueError."""
    if not path:
        raise ValueError("--workdir is required")
    if not files.isdir(path):
        raise FileNotFoundError(f"--workdir={path!r} does not exist")
    if not files.isfile(files.join(path, "config.json")):
        raise FileNotFoundError(f"--workdir={path!r} has no config.json; expected a training "
                                "workdir (what ltx-train writes)")
    return path


# -- ltx-eval ---------------------------------------------------------------------------------

def evaluate(argv=None) -> None:
    """`ltx-eval`: the report of a finished workdir (`ltx.report.evaluate_workdir`)."""
    from absl import flags
    if "max_per_class" not in flags.FLAGS:
        flags.DEFINE_string("workdir", None, "A finished training workdir.")
        flags.DEFINE_string("shot_convention", None, "Many/medium/few rule, a name of "
                            "ltx.data.shots.SHOT_CONVENTIONS (default: the run's config).")
        flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
        flags.DEFINE_integer("max_per_class", None, "Head size of the long-tailed test sets "
                             "(default: config.evals.shifted.max_per_class, 100).")
        flags.DEFINE_bool("pictures", True, "Draw the PNGs (--nopictures: the report files).")
        flags.DEFINE_list("evals", [], "Evaluators to run after the config's (config.evals), "
                          "e.g. test_time_aggregation (ltx.evaluators).")
        flags.DEFINE_bool("test_time_aggregation", False, "Also learn test-time expert weights "
                          "on every test distribution (the same as --evals="
                          "test_time_aggregation; models whose ensemble is the mean of >= 2 "
                          "experts).")
        flags.DEFINE_integer("test_time_seed", 0, "Seed of the test-time aggregation's views.")
        flags.DEFINE_integer("test_time_epochs", None, "Epochs of the test-time aggregation "
                             "(default: the official 5).")
        flags.DEFINE_float("test_time_learning_rate", None, "Its learning rate (default: the "
                           "official one of the dataset).")
        key_flags(__name__)

    def main(argv):
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments {argv[1:]}")
        f = flags.FLAGS
        workdir = _finished_workdir(f.workdir)
        if f.max_per_class is not None and f.max_per_class < 1:
            raise ValueError(f"--max_per_class={f.max_per_class}; expected >= 1")
        from ltx import compile_cache, report, workdirs  # The heavy imports, after the checks.
        compile_cache.enable()
        from ltx.data import shots
        if f.shot_convention is not None and f.shot_convention not in shots.SHOT_CONVENTIONS:
            raise ValueError(f"--shot_convention={f.shot_convention!r}; expected one of "
                             f"{sorted(shots.SHOT_CONVENTIONS)}")
        overrides = {k: v for k, v in (("epochs", f.test_time_epochs),
                                        ("learning_rate", f.test_time_learning_rate))
                     if v is not None}
        test_time = f.test_time_aggregation or "test_time_aggregation" in f.evals
        if overrides and not test_time:
            raise ValueError(f"--test_time_{next(iter(overrides))} without "
                             "--test_time_aggregation")
        evals = {name: {} for name in f.evals}
        if test_time:
            evals["test_time_aggregation"] = {"seed": f.test_time_seed, **overrides}
        config = workdirs.load_config(workdir)
        report.resolve_evals(config, evals)  # Unknown names, bad settings: before the restore.
        report.evaluate_workdir(workdir, shot_convention=f.shot_convention, step=f.step,
                                max_per_class=f.max_per_class, pictures=f.pictures, verbose=True,
                                evals=evals)
        print(f"Wrote {files.join(workdir, 'eval')}/report.json, report.md"
              + (" and the PNGs." if f.pictures else "."))

    run("ltx-eval", main, argv)


# -- ltx-predict ------------------------------------------------------------------------------

def predict(argv=None) -> None:
    """`ltx-predict`: top-k classes of image files or folders (`ltx.predict.Predictor`)."""
    from absl import flags
    if "top_k" not in flags.FLAGS:
        flags.DEFINE_string("workdir", None, "A finished training workdir.")
        flags.DEFINE_integer("top_k", 5, "How many classes to print per image (>= 1).")
        flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
        flags.DEFINE_string("prior", None, "Comma-separated target class prior, one value per "
                            "class, summing to 1.")
        key_flags(__name__)

    def main(argv):
        f = flags.FLAGS
        paths = argv[1:]
        if not paths:
            raise ValueError("no image given; usage: ltx-predict --workdir=<dir> <image or "
                             "folder> ...")
        workdir = _finished_workdir(f.workdir)
        if f.top_k < 1:
            raise ValueError(f"--top_k={f.top_k}; expected >= 1")
        missing = [p for p in paths if not files.exists(p)]
        if missing:
            raise FileNotFoundError(f"image path(s) {missing} do not exist")
        prior = None
        if f.prior is not None:
            try:
                prior = [float(x) for x in f.prior.split(",")]
            except ValueError:
                raise ValueError(f"--prior={f.prior!r}; expected comma-separated numbers")
        # The heavy imports, after the checks.
        from ltx import compile_cache, predict as predict_lib, workdirs
        compile_cache.enable()
        from ltx.data import datasets
        if prior is not None:
            num_classes, _ = datasets.spec(workdirs.load_config(workdir).data)
            prior = predict_lib.check_prior(prior, num_classes)
        images = [name for path in paths for name in predict_lib.image_files(path)]
        predictor = predict_lib.Predictor.from_workdir(workdir, step=f.step)
        images, probs = predictor.predict_paths(images, prior)
        names = predictor.class_names  # Shown where the dataset names its classes.
        for name, best in zip(images, predict_lib.top_k(probs, f.top_k)):
            print(f"{name}: " + ", ".join(f"{predict_lib.class_label(c, names)} ({p:.3f})"
                                          for c, p in best))

    run("ltx-predict", main, argv)


# -- ltx-stats --------------------------------------------------------------------------------

def stats(argv=None) -> None:
    """`ltx-stats`: parameters and GFLOPs of a config's model or a workdir's final predictor."""
    from absl import flags
    from ml_collections import config_flags
    if "xla" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                        lock_config=True)
        flags.DEFINE_string("workdir", "", "A finished workdir: the stats of its final "
                            "predictor (instead of --config).")
        flags.DEFINE_bool("xla", False, "Also report XLA's cost_analysis() flops.")
        key_flags(__name__)

    def main(argv):
        import json

        f = flags.FLAGS
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments {argv[1:]}")
        if bool(f["config"].present) == bool(f.workdir):
            raise ValueError("give exactly one of --config and --workdir")
        if f.workdir:
            _finished_workdir(f.workdir)
        from ltx import stats as stats_lib
        if f.workdir:
            print(json.dumps(stats_lib.workdir_stats(f.workdir, xla=f.xla)))
        else:
            config = config_flag()
            from ltx import config_check  # The model is built by config_stats itself.
            config_check.check(config, built=False, data=False)
            print(json.dumps(stats_lib.config_stats(config, xla=f.xla)))

    run("ltx-stats", main, argv)


# -- ltx-import -------------------------------------------------------------------------------

def import_checkpoint(argv=None) -> None:
    """`ltx-import`: a PyTorch checkpoint as an ltx workdir (`ltx.checkpoint_import`)."""
    from absl import flags
    from ml_collections import config_flags
    if "checkpoint" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "The ltx config of the model.",
                                        lock_config=True)
        flags.DEFINE_string("checkpoint", None, "A .pth/.pt/.safetensors/.npz file.")
        flags.DEFINE_string("workdir", None, "The ltx workdir to write (must be new).")
        flags.DEFINE_string("stage", "", "The stage of a multi-stage config to import into "
                            "(default: the last).")
        flags.DEFINE_string("class_counts", "", "The training images per class, when the "
                            "dataset is not on this machine: a JSON list of C integers, the "
                            "dataset's training list file ('path label' lines) or 'uniform' "
                            "(for predicting only: shot groups and priors then mean nothing). "
                            "Default: read from the config's dataset.")
        flags.mark_flags_as_required(["config", "checkpoint", "workdir"])
        key_flags(__name__)

    def main(argv):
        f = flags.FLAGS
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments {argv[1:]}")
        if not files.isfile(f.checkpoint):
            raise FileNotFoundError(f"--checkpoint={f.checkpoint!r} is not a file")
        from ltx import checkpoint_import, compile_cache, config_check
        config = config_flag()
        counts = checkpoint_import.read_class_counts(f.class_counts, config)
        config_check.check(config, data=counts is None)
        compile_cache.enable()
        summary = checkpoint_import.import_checkpoint(f.checkpoint, config, f.workdir,
                                                      stage=f.stage, class_counts=counts)
        print(f"Imported {summary['checkpoint']} into {f.workdir}: {summary['summary']}")

    run("ltx-import", main, argv)


# -- ltx-prepare ------------------------------------------------------------------------------

def prepare(argv=None) -> None:
    """`ltx-prepare`: CIFAR-10/100 from the official tarball into the data directory
    (`ltx.data.cifar.prepare`)."""
    from absl import flags
    if "tarball" not in flags.FLAGS:
        flags.DEFINE_string("tarball", None, "cifar-10/100-python.tar.gz or -binary.tar.gz "
                            "(default: looked for in <data_dir>/downloads/manual, <data_dir>, "
                            "~/tensorflow_datasets/downloads/manual and the current folder).")
        flags.DEFINE_string("data_dir", None, "Where to write <dataset>/ (default: "
                            "$LTX_DATA_DIR, else ~/ltx_data: what the configs read when "
                            "config.data.data_dir is empty).")
        flags.DEFINE_string("list_dir", None, "folders: where to write the list files "
                            "(default: the root); records: the folder of the lists to write.")
        flags.DEFINE_string("root", None, "records: the image root of the lists' paths.")
        flags.DEFINE_string("out", None, "records: the folder to write the shards into.")
        flags.DEFINE_integer("shorter_side", 256, "records: resize images whose shorter side "
                             "is longer to this (256 for 224 crops).")
        flags.DEFINE_integer("quality", 95, "records: JPEG quality of the stored images.")
        flags.DEFINE_integer("workers", -1, "records: decoding processes (-1: one per core "
                             "but one; 0: this process).")
        flags.DEFINE_bool("accept_unofficial_tarball", False, "cifar10/cifar100: prepare a "
                          "tarball whose SHA-256 is not the published one (a dataset of your "
                          "own in CIFAR's format); refused otherwise.")
        key_flags(__name__)

    def main(argv):
        from ltx.data import cifar
        names = argv[1:]
        if names[:1] == ["folders"]:
            return _prepare_folders(names[1:])
        if names[:1] == ["records"]:
            return _prepare_records(names[1:])
        if len(names) != 1 or names[0].removesuffix("_lt") not in cifar.TARBALLS:
            raise ValueError(f"expected one dataset, {' or '.join(sorted(cifar.TARBALLS))}, "
                             f"'folders <root>' or 'records'; got {names}: ltx-prepare cifar100 "
                             "--tarball=cifar-100-python.tar.gz")
        f = flags.FLAGS
        folder = cifar.prepare(names[0], tarball=f.tarball, data_dir=f.data_dir,
                               official_only=not f.accept_unofficial_tarball)
        info = files.read_json(files.join(folder, "info.json"))
        print(f"Prepared {info['dataset']} in {folder} from {info['tarball']}: "
              f"{info['counts']['train']} train and {info['counts']['test']} test images.")
        if not info["official"]:
            print(f"Note: {info['tarball']} is not an official CIFAR tarball (SHA-256 "
                  f"{info['sha256']}); accepted by {cifar.ACCEPT_FLAG}.")

    run("ltx-prepare", main, argv)


def _prepare_folders(args) -> None:
    """`ltx-prepare folders <root> [--list_dir=<dir>]`: the list files of a folder-per-class
    tree (`ltx.data.image_lists.write_folder_lists`)."""
    from absl import flags

    from ltx.data import image_lists
    if len(args) != 1:
        raise ValueError(f"expected one folder: ltx-prepare folders <root>; got {args}")
    out = flags.FLAGS.list_dir
    result = image_lists.write_folder_lists(args[0], out)
    counts = result["counts"]
    train = counts["train"]
    print(f"{len(result['classes'])} classes; train {int(train.sum())} images (largest class "
          f"{int(train.max())}, smallest {int(train.min())})"
          + "".join(f", {split} {int(counts[split].sum())}" for split in ("val", "test")
                    if split in counts)
          + f". Wrote {', '.join(sorted(result['lists'].values()))} and "
          f"{image_lists.CLASSES_FILE}; train with --config=configs/custom_lt.py:root={args[0]}"
          + (f" --config.data.list_dir={out}" if out else ""))


def _prepare_records(args) -> None:
    """`ltx-prepare records --root=... --list_dir=... --out=...`: every list file of list_dir
    (all '*.txt' but classes.txt) as ArrayRecord shards of resized images
    (`ltx.data.records.write_list`)."""
    import numpy as np
    from absl import flags

    from ltx.data import image_lists, pipeline, records
    if args:
        raise ValueError(f"unexpected arguments {args}: ltx-prepare records --root=<images> "
                         "--list_dir=<lists> --out=<folder>")
    f = flags.FLAGS
    for name in ("root", "list_dir", "out"):
        if not getattr(f, name):
            raise ValueError(f"ltx-prepare records needs --{name}")
    if not files.isdir(f.list_dir):
        raise FileNotFoundError(f"--list_dir={f.list_dir!r} is not a folder")
    lists = [n for n in files.listdir(f.list_dir)
             if n.endswith(".txt") and n != image_lists.CLASSES_FILE]
    if not lists:
        raise FileNotFoundError(f"--list_dir={f.list_dir!r} holds no list file (*.txt)")
    workers = pipeline.resolve_num_workers(f.workers)
    for name in lists:
        index = records.write_list(files.join(f.list_dir, name), f.root, f.out,
                                   num_classes=int(np.iinfo(np.int64).max),
                                   shorter_side=f.shorter_side, quality=f.quality,
                                   workers=workers)
        print(f"{name}: {index['num_records']} images in {len(index['shards'])} shard(s)",
              flush=True)
    print(f"Wrote {f.out}; train with --config.data.source=records "
          f"--config.data.records_dir={f.out} --config.data.list_dir={f.list_dir}")


# -- ltx-sweep --------------------------------------------------------------------------------

def sweep(argv=None) -> None:
    """`ltx-sweep`: a grid of runs and its table (`ltx.sweep`)."""
    from absl import flags
    if "parallel" not in flags.FLAGS:
        flags.DEFINE_string("root", None, "Folder of the sweep's runs and tables.")
        flags.DEFINE_list("configs", [], "Config files, comma-separated, each optionally with "
                          "one key=value of its argument (configs/x.py:mixup=0.4); more "
                          "through --args.")
        flags.DEFINE_list("seeds", ["1"], "Seeds.")
        flags.DEFINE_multi_string("args", [], "A config-argument axis, key=v1,v2 (repeatable).")
        flags.DEFINE_multi_string("set", [], "An override axis, dotted.key=v1,v2 "
                                  "(--config.dotted.key; repeatable).")
        flags.DEFINE_integer("parallel", 1, "Runs at once.")
        flags.DEFINE_bool("one_device_each", False, "Give run k of those in flight device k "
                          "only (hosts with several accelerators).")
        flags.DEFINE_bool("eval", False, "Also run ltx-eval (shifted test distributions).")
        flags.DEFINE_bool("pack", False, "Train the seeds of each cell as one process and one "
                          "program (ltx.packed; the same workdirs and table).")
        flags.DEFINE_bool("table", False, "Only tabulate --root; train nothing.")
        flags.mark_flag_as_required("root")
        key_flags(__name__)

    def main(argv):
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments {argv[1:]}")
        from ltx import sweep as sweep_lib  # No JAX: the runs are subprocesses.
        f = flags.FLAGS
        failed = []
        if not f.table:
            try:
                seeds = [int(s) for s in f.seeds]
            except ValueError:
                raise ValueError(f"--seeds={','.join(f.seeds)}; expected integers") from None
            runs = sweep_lib.grid(f.configs, seeds, args=f.args, overrides=f.set)
            status = sweep_lib.run_grid(runs, f.root, parallel=f.parallel, evaluate=f.eval,
                                        one_device_each=f.one_device_each, pack=f.pack)
            failed = [w for w, s in status.items() if s.startswith("failed")]
        rows = sweep_lib.write_table(f.root)
        print(sweep_lib.format_markdown(rows))
        print(f"Wrote {f.root}/table.md, table.csv and table.json ({len(rows)} rows).")
        if failed:
            fail("ltx-sweep", f"{len(failed)} run(s) failed: {failed}; their logs are "
                 "<workdir>.log; rerun the same command to retry them", status=1, hint=False)

    run("ltx-sweep", main, argv)


TOOLS = {"eval": evaluate, "predict": predict, "stats": stats, "import": import_checkpoint,
         "prepare": prepare, "sweep": sweep}


def _dispatch() -> None:
    """`python -m ltx.cli <tool> [flags]`."""
    if len(sys.argv) == 2 and sys.argv[1] in HELP_ARGUMENTS:
        print("python -m ltx.cli <tool> [flags]: the command-line tools without the console "
              "scripts; `python -m ltx.cli <tool> --help` describes one.\n\nTools:")
        for tool in TOOLS:
            print(f"  {tool:<8} (ltx-{tool})")
        print("ltx-train is `python -m ltx.train`.")
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        fail("ltx.cli", f"expected a tool, one of {sorted(TOOLS)}: python -m ltx.cli <tool> "
             "[flags]")
    tool = sys.argv.pop(1)
    sys.argv[0] = f"ltx-{tool}"
    TOOLS[tool]()


if __name__ == "__main__":
    _dispatch()
