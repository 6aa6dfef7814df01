"""Every file ltx reads or writes goes through ltx/files.py, so a gs:// path works wherever a
local one does: no module outside it calls `open`, `os.path.*`, `shutil.*` or the os module's
file-system functions, except the few places listed here, which never see a workdir or data
path."""

import ast
import os

import ltx

PACKAGE = os.path.dirname(ltx.__file__)

# (module, enclosing function) -> why its os calls are not on a workdir or data path.
ALLOWED = {
    ("ltx/files.py", "*"): "the path layer itself",
    ("ltx/compile_cache.py", "*"): "JAX's compilation cache is a local folder of this host",
    ("ltx/config_lib.py", "load_config_file"): "importlib loads a config file from local disk",
    ("ltx/provenance.py", "git_commit"): "looks for ltx's own git checkout beside __file__",
    ("ltx/faults.py", "__enter__"): "flock on a local workdir (object stores take another path)",
    ("ltx/faults.py", "check_workdir_free"): "a shared flock probe of a local lock file (object "
                                         "stores take another path)",
    ("ltx/data/image_lists.py", "_is_absolute"): "os.path.isabs of a local path's string",
    ("ltx/data/tfds_source.py", "join_key"): "string operations on a TFDS feature's file name",
    ("ltx/cli.py", "config_flag"): "config files are Python modules imported from local disk",
    ("ltx/sweep.py", "grid"): "config files are Python modules imported from local disk",
    ("ltx/sweep.py", "_open_log"): "a subprocess's stdout must be a local file (copied to a "
                                   "remote sweep root when the run ends)",
    ("ltx/convert/arrays.py", "load_state_dict"): "os.path.splitext of a file name's string",
    ("ltx/data/digits.py", "_load_digits"): "scikit-learn's bundled digits file, installed "
                                            "beside its package on local disk",
}

_OS_FS = {"makedirs", "mkdir", "listdir", "remove", "unlink", "rename", "replace", "rmdir",
          "walk", "scandir", "stat", "open", "fdopen"}


def _calls(tree):
    """(function name, line, call text) of the forbidden calls in a module's AST."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            if isinstance(child, ast.Call):
                text = ast.unparse(child.func)
                if (text == "open" or text.startswith(("os.path.", "shutil."))
                        or (text.startswith("os.") and text[3:] in _OS_FS)):
                    found.append((name, child.lineno, text))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_no_file_access_outside_the_path_layer():
    offending = []
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, os.path.dirname(PACKAGE))
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for function, line, text in _calls(tree):
                if (module, "*") in ALLOWED or (module, function) in ALLOWED:
                    continue
                offending.append(f"{module}:{line} {text}(...) in {function}")
    assert not offending, ("file access outside ltx/files.py (use ltx.files, or add the place "
                           "to ALLOWED with the reason it never sees a workdir or data path):\n"
                           + "\n".join(offending))


def test_the_checker_finds_each_kind_of_call():
    source = ("import os, shutil\n"
              "def f(p):\n"
              "    open(p)\n    os.path.join(p, 'x')\n    shutil.rmtree(p)\n"
              "    os.makedirs(p)\n    files.open(p)\n    os.getpid()\n")
    assert [(f, t) for f, _, t in _calls(ast.parse(source))] == [
        ("f", "open"), ("f", "os.path.join"), ("f", "shutil.rmtree"), ("f", "os.makedirs")]
