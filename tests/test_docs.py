"""The docs cannot drift from the code: their Python runs and the flags they name exist.

Whatever README.md, docs/*.md and CONTRIBUTING.md hold today is checked (nothing about their
content is written here). The conventions, also in CONTRIBUTING.md ("Docs"):

1. Every ```python block of README.md and docs/*.md runs, each in a fresh Python process
   (this checkout first on its path) in an empty temporary working directory. A block that
   needs files names them in an HTML comment on the line right before it,
       <!-- run with: tflite=runs/orl/tflite image=face_a.png image=face_b.png -->
   where each KIND=PATH puts a tiny stand-in of that kind at PATH (relative to the working
   directory; the kinds are FIXTURES below). A block that cannot run here says why instead,
       <!-- not run: needs a GPU -->
   and is reported as skipped with that reason; the reason is required. A failing block fails
   its test, named by file and line (its traceback gives the file's own line numbers).
2. Every --flag given to a command (`python -m MODULE ...` of a module of this repository, a
   console script of setup.py, or `make TARGET VAR="..."` where the Makefile hands $(VAR) to
   `python -m MODULE`) in any code block but a Python one, or in an inline `python -m ...`
   span, of README.md, docs/*.md and CONTRIBUTING.md is a flag MODULE defines (--noFLAG for a
   boolean one), absl's --flagfile, --undefok or help flags, or, for a beam_jobs module, one of
   Beam's pipeline options (every option of Beam's PipelineOptions classes, Dask's included).
3. Every flag in configs/*.flags is a flag of facenet_tf.train (the recipes are its flag files).
4. Every --strategy_options value in the docs, and the example in the flag's own help, holds
   options that facenet_tf.triplets.mining accepts for the command's --strategy.

A module's flags are read in one subprocess that imports each module and, for a command (a
module running through facenet_tf._cli), calls its run() up to _cli.run (or, without one, its
_define_flags()): the flags the command defines when it runs. A module defining no absl flags
(e.g. an argparse one) is asked for its --help instead.
"""

import concurrent.futures
import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.pipelines.build_dataset import build_dataset
from facenet_tf.serving.saved_model import export_saved_model
from facenet_tf.serving.tflite import export_tflite
from facenet_tf.triplets import mining
from tests._commands import checkout_env, console_scripts
from tests._forked_commands import ForkedCommand, run_forked
from tests.conftest import REPO_ROOT, make_image_folder, make_tiny_embedding_model

RUN_DOCS = ["README.md"] + sorted(
    os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
FLAG_DOCS = RUN_DOCS + ["CONTRIBUTING.md"]
CONFIGS = sorted(os.path.relpath(p, REPO_ROOT)
                 for p in glob.glob(os.path.join(REPO_ROOT, "configs", "*.flags")))
TIMEOUT_S = 300
# Accepted by every absl command besides its own flags.
ABSL_SPECIAL = {"flagfile", "undefok", "help", "helpshort", "helpfull", "helpxml"}
NOT_RUN = re.compile(r"<!--\s*not run:(.*?)-->")
RUN_WITH = re.compile(r"<!--\s*run with:(.*?)-->")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")
MODULE_NAME = re.compile(r"[a-z_]\w*(\.[a-z_]\w*)*")
COMMAND_ENDS = {";", "&&", "||", "|", "&", ">", ">>", "<", "(", ")"}


# ---- fixtures a Python block can ask for: KIND=PATH --------------------------------------

_PREPROCESS = PreprocessConfig(image_size=(32, 32), standardization="fixed")
_THRESHOLD = 1.0


def _image(path, seed=0):
    """A 40x36 RGB image, PNG or JPEG by the extension."""
    pixels = np.random.RandomState(seed).randint(0, 256, (40, 36, 3)).astype(np.uint8)
    jpeg = path.lower().endswith((".jpg", ".jpeg"))
    data = tf.io.encode_jpeg(pixels) if jpeg else tf.io.encode_png(pixels)
    with open(path, "wb") as f:
        f.write(data.numpy())


def _image_folder(path):
    """An identity-per-folder tree of small PNGs (4 identities x 3)."""
    make_image_folder(path)


def _dataset(path):
    """A beam_jobs.build_dataset output of 8 identities x 3 small images."""
    build_dataset(make_image_folder(path + ".images", num_identities=8), path, num_shards=2)


def _keras_model(path):
    """A tiny embedding network as a .keras file (32x32 input)."""
    make_tiny_embedding_model().save(path)


def _saved_model(path):
    """A facenet_tf.export-style SavedModel of the tiny network, with a threshold."""
    export_saved_model(make_tiny_embedding_model(), path, _PREPROCESS, threshold=_THRESHOLD)


def _tflite(path):
    """A facenet_tf.export --tflite_dir directory of the tiny network: float32 and int8 files
    and their metadata JSON, with a threshold."""
    export_tflite(make_tiny_embedding_model(), path, _PREPROCESS,
                  calibration_images=make_image_folder(path + ".calibration"),
                  num_calibration=10, threshold=_THRESHOLD)


FIXTURES = {"image": _image, "image_folder": _image_folder, "dataset": _dataset,
            "keras_model": _keras_model, "saved_model": _saved_model, "tflite": _tflite}


# ---- reading the Markdown ----------------------------------------------------------------

@dataclasses.dataclass
class Block:
    doc: str      # path relative to the repository
    line: int     # 1-based line of the opening fence
    lang: str
    code: str
    marker: str   # the line right before the fence


def _read(doc):
    with open(os.path.join(REPO_ROOT, doc)) as f:
        return f.read().splitlines()


def fenced_blocks(doc) -> list:
    lines, blocks, i = _read(doc), [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith("```")), len(lines))
        indent = len(match.group(1))
        code = "\n".join(line[indent:] for line in lines[i + 1:end])
        blocks.append(Block(doc, i + 1, match.group(2).lower(), code,
                            lines[i - 1].strip() if i else ""))
        i = end + 1
    return blocks


def prose_lines(doc):
    """(line number, text) of the lines outside fenced blocks."""
    inside = False
    for number, line in enumerate(_read(doc), 1):
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            yield number, line


def python_blocks() -> list:
    return [b for doc in RUN_DOCS for b in fenced_blocks(doc) if b.lang in ("python", "py")]


# ---- 1. the Python blocks ----------------------------------------------------------------

def _fixture_specs(block):
    match = RUN_WITH.search(block.marker)
    if not match:
        return []
    specs = []
    for item in match.group(1).split():
        kind, sep, path = item.partition("=")
        assert sep and kind in FIXTURES and path and not os.path.isabs(path), (
            f"{block.doc}:{block.line - 1}: bad 'run with' item {item!r}: want KIND=PATH, a "
            f"relative PATH and KIND one of {sorted(FIXTURES)}")
        specs.append((kind, path))
    return specs


_RUNNER = ("import sys; source = sys.stdin.read(); "
           "exec(compile(source, sys.argv[1], 'exec'), {'__name__': '__main__'})")


def _run_block(block, workdir):
    # Blank lines in front, so that a traceback's line numbers are the Markdown file's.
    source = "\n" * block.line + block.code + "\n"
    env = checkout_env(TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-c", _RUNNER, os.path.join(REPO_ROOT, block.doc)],
                          input=source, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def block_runs(tmp_path_factory):
    """"doc:line" -> CompletedProcess of every runnable Python block, two at a time."""
    todo = []
    for block in python_blocks():
        if NOT_RUN.search(block.marker):
            continue
        workdir = tmp_path_factory.mktemp("doc_block")
        for kind, path in _fixture_specs(block):
            target = os.path.join(workdir, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            FIXTURES[kind](target)
        todo.append((f"{block.doc}:{block.line}", block, str(workdir)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda item: _run_block(*item[1:]), todo)
        return {key: result for (key, _, _), result in zip(todo, results)}


@pytest.mark.slow  # each block is a Python process importing TensorFlow, plus the fixtures
@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: f"{b.doc}:{b.line}")
def test_python_block_runs(block, block_runs):
    not_run = NOT_RUN.search(block.marker)
    if not_run:
        reason = not_run.group(1).strip()
        assert reason, f"{block.doc}:{block.line - 1}: '<!-- not run: -->' without a reason"
        pytest.skip(f"{block.doc}:{block.line}: not run: {reason}")
    result = block_runs[f"{block.doc}:{block.line}"]
    assert result.returncode == 0, (
        f"the ```python block at {block.doc}:{block.line} failed (exit {result.returncode}); "
        f"mark it <!-- not run: REASON --> or give it files with <!-- run with: KIND=PATH -->"
        f"\n{result.stderr[-4000:]}")


# ---- 2-4. the flags named in the docs and in configs/ ------------------------------------

@dataclasses.dataclass
class Command:
    doc: str
    line: int
    module: str
    args: list


def _project_packages():
    return {name for name in os.listdir(REPO_ROOT)
            if os.path.isfile(os.path.join(REPO_ROOT, name, "__init__.py"))}


def _make_variables():
    """{VAR: module} for the Makefile's `$(PY) -m MODULE $(VAR)` recipe lines."""
    with open(os.path.join(REPO_ROOT, "Makefile")) as f:
        return {var: module for module, var in
                re.findall(r"-m\s+([\w.]+)\s+\$\((\w+)\)", f.read())}


def _tokens(text):
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:  # an unbalanced quote in an example: split plainly
        return text.split()


def commands_in(doc, text, line):
    """The project commands of one shell line: Command(doc, line, module, arguments)."""
    scripts, packages, make_vars = console_scripts(), _project_packages(), _make_variables()
    tokens = _tokens(re.sub(r"^\s*\$\s+", "", text))
    found = []
    for i, token in enumerate(tokens):
        rest = tokens[i + 1:]
        args = rest[:next((j for j, t in enumerate(rest) if t in COMMAND_ENDS), len(rest))]
        name = os.path.basename(token)
        if re.fullmatch(r"python(3(\.\d+)?)?", name) and args[:1] == ["-m"] and len(args) > 1:
            # A module of this repository, not a placeholder such as facenet_tf.X.
            if args[1].split(".")[0] in packages and MODULE_NAME.fullmatch(args[1]):
                found.append(Command(doc, line, args[1], args[2:]))
        elif token in scripts:
            found.append(Command(doc, line, scripts[token], args))
        elif token == "make":
            for arg in args:
                var, sep, value = arg.partition("=")
                if sep and var in make_vars:
                    found.append(Command(doc, line, make_vars[var], _tokens(value)))
    return found


def doc_commands(doc) -> list:
    commands = []
    for block in fenced_blocks(doc):
        if block.lang in ("python", "py"):
            continue
        # Continuation lines joined; the line number kept is the command's first.
        logical, start = "", None
        for offset, text in enumerate(block.code.splitlines(), 1):
            start = start or block.line + offset
            if text.rstrip().endswith("\\"):
                logical += text.rstrip()[:-1] + " "
                continue
            commands += commands_in(doc, logical + text, start)
            logical, start = "", None
    for number, text in prose_lines(doc):
        for span in re.findall(r"`([^`]+)`", text):
            commands += commands_in(doc, span, number)
    return commands


def flag_names(args) -> list:
    """The --flags of a command's arguments, without values (brackets of optional parts
    dropped)."""
    names = []
    for arg in args:
        arg = arg.strip("[]")
        if arg.startswith("--") and len(arg) > 2:
            names.append(arg[2:].split("=", 1)[0])
    return names


_DUMP = r"""
import importlib, inspect, json, sys
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions
try:
    import apache_beam.runners.dask.dask_runner  # DaskOptions (the [dask] extra)
except ImportError:
    pass
from facenet_tf import _cli

class Defined(Exception):
    pass

def stop(*args, **kwargs):  # instead of running the command, once its flags are defined
    raise Defined()

_cli.run = stop
app.define_help_flags()
FLAGS = flags.FLAGS
out = {}
for name in sys.argv[1:]:
    before = set(FLAGS)
    try:
        module = importlib.import_module(name)
        run = getattr(module, "run", None)
        # A command (it runs through facenet_tf._cli): its run() defines the flags as the
        # console script does, then stops at _cli.run; without a run(), its _define_flags().
        # Other modules: their import-time flags.
        if getattr(module, "_cli", None) is _cli and callable(run) and not inspect.signature(
                run).parameters:
            try:
                run()
            except Defined:
                pass
        elif callable(getattr(module, "_define_flags", None)):
            module._define_flags()
    except Exception as e:
        out[name] = {"error": f"{type(e).__name__}: {e}"}
        continue
    own = [n for n in set(FLAGS) - before if FLAGS[n].name == n]
    out[name] = {"flags": sorted(n for n in FLAGS if FLAGS[n].name == n),
                 "own": sorted(own),
                 "booleans": sorted(n for n in FLAGS if FLAGS[n].boolean),
                 "help": {n: FLAGS[n].help for n in own}}
    for n in own:  # the next module may define the same names
        delattr(FLAGS, n)
parsers = []
PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
out["<beam>"] = sorted({s[2:] for action in parsers[0]._actions
                        for s in action.option_strings if s.startswith("--")})
print("FLAGS_JSON " + json.dumps(out))
"""


def _help_flags(modules, env) -> dict:
    """module -> ({names}, {boolean names}) of the flags `python -m MODULE --help` lists, for
    modules that define no absl flags (argparse, say); the commands run as forks of one
    process that imported the library once (tests._forked_commands)."""
    runs = run_forked([ForkedCommand(["-m", module, "--help"]) for module in modules], env=env,
                      timeout_s=TIMEOUT_S)
    out = {}
    for module, result in zip(modules, runs):
        found = re.findall(r"--(\[no\])?([A-Za-z][\w-]*)", result.stdout)
        out[module] = ({n for _, n in found}, {n for no, n in found if no})
    return out


@pytest.fixture(scope="module")
def module_flags():
    """module -> {"flags": set, "booleans": set, "help": {flag: text}} for every module the
    docs run, every console script's and facenet_tf.train; "<beam>" -> Beam's options."""
    modules = {c.module for doc in FLAG_DOCS for c in doc_commands(doc)}
    modules |= set(console_scripts().values()) | {"facenet_tf.train"}
    env = checkout_env(TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", _DUMP, *sorted(modules)], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    line = next((l for l in result.stdout.splitlines() if l.startswith("FLAGS_JSON ")), None)
    assert line, f"reading the commands' flags failed:\n{result.stderr[-4000:]}"
    dump = json.loads(line[len("FLAGS_JSON "):])
    out = {"<beam>": set(dump.pop("<beam>"))}
    listed = _help_flags(sorted(m for m, info in dump.items()
                                if "error" not in info and not info["own"]), env)
    for module, info in dump.items():
        if "error" in info:
            out[module] = {"error": info["error"]}
            continue
        names, booleans = listed.get(module, (set(info["flags"]), set(info["booleans"])))
        out[module] = {"flags": names | ABSL_SPECIAL, "booleans": booleans, "help": info["help"]}
    return out


def unknown_flags(command, known) -> list:
    """The flags of `command` that its module does not accept."""
    info = known[command.module]
    if "error" in info:
        return [f"(python -m {command.module} does not import: {info['error']})"]
    accepted = set(info["flags"]) | {"no" + b for b in info["booleans"]}
    if command.module.startswith("beam_jobs."):
        accepted |= known["<beam>"]
    return [f"--{name}" for name in flag_names(command.args) if name not in accepted]


@pytest.mark.parametrize("doc", FLAG_DOCS)
def test_every_flag_in_the_docs_exists(doc, module_flags):
    bad = [f"{c.doc}:{c.line}: python -m {c.module} {flag}"
           for c in doc_commands(doc) for flag in unknown_flags(c, module_flags)]
    assert not bad, "flags the commands do not define:\n" + "\n".join(bad)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_flag_in_a_recipe_is_a_trainer_flag(config, module_flags):
    with open(os.path.join(REPO_ROOT, config)) as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1)]
    commands = [Command(config, n, "facenet_tf.train", [line]) for n, line in lines
                if line.startswith("--")]
    assert commands, f"{config}: no flags"
    bad = [f"{c.doc}:{c.line}: {flag}" for c in commands
           for flag in unknown_flags(c, module_flags)]
    assert not bad, "flags facenet_tf.train does not define:\n" + "\n".join(bad)


def _strategy_options_uses(known):
    """(where, strategy, options JSON text) of every --strategy_options value in the docs,
    and of the examples in the flag's help."""
    uses = []
    for doc in FLAG_DOCS:
        for c in doc_commands(doc):
            values = _flag_values(c.args)
            if "strategy_options" in values:
                uses.append((f"{c.doc}:{c.line}", values.get("strategy", "semi_hard"),
                             values["strategy_options"]))
    for module, info in known.items():
        text = info.get("help", {}).get("strategy_options") if isinstance(info, dict) else None
        for example in re.findall(r"'(\{.*?\})'", text or ""):
            uses.append((f"python -m {module} --help, --strategy_options", "semi_hard", example))
    return uses


def _flag_values(args):
    values = {}
    for i, arg in enumerate(args):
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[2:].partition("=")
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
            values[name] = value
    return values


def test_strategy_options_examples_are_accepted(module_flags):
    uses = _strategy_options_uses(module_flags)
    assert any("--help" in where for where, _, _ in uses), "no --strategy_options example found"
    bad = []
    for where, strategy, text in uses:
        try:
            mining.resolve_options(strategy, json.loads(text))
        except ValueError as e:  # json.JSONDecodeError is a ValueError too
            bad.append(f"{where}: --strategy_options {text!r} (strategy {strategy}): {e}")
    assert not bad, "\n".join(bad)


def test_the_command_reader_finds_flags_in_every_form():
    """commands_in on hand-written lines: modules, console scripts and make variables, flags
    with = or a separate value, booleans, brackets and comments."""
    found = commands_in("x.md", "$ python -m facenet_tf.embed --model $M --input=p/ "
                        "[--flip] # --not_this", 1)
    assert [(c.module, flag_names(c.args)) for c in found] == [
        ("facenet_tf.embed", ["model", "input", "flip"])]
    found = commands_in("x.md", "P=x; facenet-compare --nodetect_faces a b && "
                        ".venv/bin/python -m apache_beam.x --runner=Y", 1)
    assert [(c.module, flag_names(c.args)) for c in found] == [
        ("facenet_tf.compare", ["nodetect_faces"])]
    found = commands_in("x.md", 'make demo DEMO_ARGS="--model pretrained --fresh"', 1)
    assert [(c.module, flag_names(c.args)) for c in found] == [
        ("facenet_tf.demo", ["model", "fresh"])]
