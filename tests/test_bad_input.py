"""Every command reports bad input as ONE line on stderr that names the path, exits non-zero,
and prints no traceback.

Each console script of setup.py (CONSOLE_SCRIPTS) is run as `python -m MODULE` (so that this
checkout answers, also from a worktree) once with an input path that does not exist and once
with a file of the wrong kind: a non-image file where the command takes images, a file where it
takes a folder, a text file as a model or graph, a manifest or pairs file that is garbage. A new
console script without both cases fails here, named. The inputs are tiny and every case fails
before slow work (paths are checked before a model loads). The runs are forks of one process
that imported TensorFlow once (tests/_forked_commands), with two cases also run in a fresh
interpreter to show that the fork answers the same.
"""

import os
import re
import subprocess
import sys

import pytest

from tests._commands import checkout_env, console_scripts
from tests._forked_commands import ForkedCommand, run_forked
from tests.conftest import make_image_folder, make_tiny_embedding_model

MISSING, WRONG_KIND = "missing path", "wrong kind of file"
REQUIRED_CASES = (MISSING, WRONG_KIND)

# module -> {case: (arguments, the bad path its error line must name)}. The arguments are
# templates: {tmp} is the test's folder; {model} a tiny .keras model, {photo} a real image and
# {faces} an identity folder of images (valid inputs beside the bad one); {not_image} a text
# file named .jpg; {garbage_dataset} a folder whose manifest.json is not JSON; {text} a text
# file.
CASES = {
    "facenet_tf.train": {
        MISSING: (["--train_data={tmp}/no_such_dataset", "--model_dir={tmp}/run"],
                  "{tmp}/no_such_dataset"),
        WRONG_KIND: (["--train_data={garbage_dataset}", "--model_dir={tmp}/run"],
                     "{garbage_dataset}"),
        "missing flag file": (["--flagfile={tmp}/no_such.flags", "--train_data={tmp}",
                               "--model_dir={tmp}/run"], "{tmp}/no_such.flags"),
    },
    "beam_jobs.mine_triplets": {
        MISSING: (["--dataset={tmp}/no_such_dataset", "--model={model}",
                   "--output_dir={tmp}/gen"], "{tmp}/no_such_dataset"),
        WRONG_KIND: (["--dataset={garbage_dataset}", "--model={model}", "--output_dir={tmp}/gen"],
                     "{garbage_dataset}"),
    },
    "beam_jobs.build_dataset": {
        MISSING: (["--input_dir={tmp}/no_such_folder", "--output_dir={tmp}/dataset"],
                  "{tmp}/no_such_folder"),
        WRONG_KIND: (["--input_dir={not_image}", "--output_dir={tmp}/dataset"], "{not_image}"),
    },
    "facenet_tf.evaluate": {
        MISSING: (["--model={model}", "--pairs={tmp}/no_such_pairs.txt", "--images={faces}"],
                  "{tmp}/no_such_pairs.txt"),
        WRONG_KIND: (["--model={model}", "--pairs={text}", "--images={faces}"], "{text}"),
    },
    "facenet_tf.export": {
        MISSING: (["--checkpoint={tmp}/no_such_model.keras", "--export_dir={tmp}/export"],
                  "{tmp}/no_such_model.keras"),
        WRONG_KIND: (["--checkpoint={tmp}/text.keras", "--export_dir={tmp}/export"],
                     "{tmp}/text.keras"),
    },
    "facenet_tf.embed": {
        MISSING: (["--model={model}", "--input={tmp}/no_such_folder", "--output={tmp}/e.npz"],
                  "{tmp}/no_such_folder"),
        WRONG_KIND: (["--model={model}", "--input={not_image}", "--output={tmp}/e.npz"],
                     "{not_image}"),
    },
    "facenet_tf.compare": {
        MISSING: (["--model={model}", "{tmp}/no_such_photo.jpg", "{photo}"],
                  "{tmp}/no_such_photo.jpg"),
        WRONG_KIND: (["--model={model}", "--nodetect_faces", "{not_image}", "{photo}"],
                     "{not_image}"),
    },
    "facenet_tf.cluster": {
        MISSING: (["--model={model}", "{tmp}/no_such_folder"], "{tmp}/no_such_folder"),
        WRONG_KIND: (["--model={model}", "{not_image}"], "{not_image}"),
    },
    "facenet_tf.pretrained": {
        MISSING: (["--export_dir={tmp}/pretrained", "--graph_path={tmp}/no_such_graph.pb"],
                  "{tmp}/no_such_graph.pb"),
        WRONG_KIND: (["--export_dir={tmp}/pretrained", "--graph_path={text}"], "{text}"),
    },
    "facenet_tf.demo": {
        MISSING: (["--input_dir={tmp}/no_such_folder", "--work_dir={tmp}/demo"],
                  "{tmp}/no_such_folder"),
        WRONG_KIND: (["--input_dir={not_image}", "--work_dir={tmp}/demo"], "{not_image}"),
    },
    "facenet_tf.make_pairs": {
        MISSING: (["--images={tmp}/no_such_folder", "--output={tmp}/pairs.txt"],
                  "{tmp}/no_such_folder"),
        WRONG_KIND: (["--images={not_image}", "--output={tmp}/pairs.txt"], "{not_image}"),
    },
    "beam_jobs.align_faces": {
        MISSING: (["--input_dir={tmp}/no_such_folder", "--output_dir={tmp}/aligned"],
                  "{tmp}/no_such_folder"),
        WRONG_KIND: (["--input_dir={not_image}", "--output_dir={tmp}/aligned"], "{not_image}"),
    },
    "beam_jobs.index_faces": {
        MISSING: (["--input_dir={tmp}/no_such_folder", "--model={model}",
                   "--output_dir={tmp}/index"], "{tmp}/no_such_folder"),
        WRONG_KIND: (["--input_dir={not_image}", "--model={model}", "--output_dir={tmp}/index"],
                     "{not_image}"),
    },
    "facenet_tf.search": {
        MISSING: (["--index={tmp}/no_such_index", "--query={photo}"], "{tmp}/no_such_index"),
        WRONG_KIND: (["--index={garbage_dataset}", "--query={photo}"], "{garbage_dataset}"),
    },
    "facenet_tf.enroll": {
        MISSING: (["--model={model}", "--gallery={tmp}/gallery", "--input={tmp}/no_such_folder"],
                  "{tmp}/no_such_folder"),
        WRONG_KIND: (["--model={model}", "--gallery={tmp}/gallery", "--input={not_image}"],
                     "{not_image}"),
    },
    "facenet_tf.identify": {
        MISSING: (["--gallery={tmp}/no_such_gallery", "--input={photo}"],
                  "{tmp}/no_such_gallery"),
        WRONG_KIND: (["--gallery={text}", "--input={photo}"], "{text}"),
    },
    "facenet_tf.serve": {
        MISSING: (["--gallery={tmp}/gallery", "--key_file={tmp}/no_such_keys.json", "--port=0"],
                  "{tmp}/no_such_keys.json"),
        WRONG_KIND: (["--gallery={tmp}/gallery", "--key_file={text}", "--port=0"], "{text}"),
    },
}

# What TensorFlow, absl and Beam write to stderr by themselves, in formats the commands' error
# line ("PROGRAM: error: ...") never has; each pattern matches from the start of a line:
# - the glog/absl line format: severity letter, MMDD, time, thread id, file:line]. TF's C++
#   runtime writes "I0000 00:00:1796538706.278510 123 port.cc:153] oneDNN ..." (its seconds
#   are the epoch), absl-py's logging "I1206 06:13:23.357638 1397.. progress.py:22] ..."
#   (the progress bars, for one);
# - absl C++'s notice before its logging is initialised;
# - Python logging's default "LEVEL:logger:message" (Beam's "WARNING:root:apitools not
#   found ...", "INFO:tensorflow:...").
# Anything else counts, also a log record's continuation lines. A traceback is looked for in
# the unfiltered text.
LOG_LINE = re.compile(
    r"[DIWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|(DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.]*:")
TIMEOUT_S = 300


def _message_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def _all_cases():
    """(script, module, case) for every console script and every case it must have, plus its
    extra cases."""
    out = []
    for script, module in sorted(console_scripts().items()):
        names = list(REQUIRED_CASES) + [c for c in CASES.get(module, {}) if c not in REQUIRED_CASES]
        out.extend((script, module, case) for case in names)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    faces = make_image_folder(str(tmp / "faces"), num_identities=2, images_per_identity=2)
    make_tiny_embedding_model().save(str(tmp / "tiny.keras"))
    (tmp / "not_an_image.jpg").write_text("this is not an image\n")
    (tmp / "text.txt").write_text("just some text\n")
    (tmp / "text.keras").write_text("not a model\n")
    (tmp / "garbage_dataset").mkdir()
    (tmp / "garbage_dataset" / "manifest.json").write_text("{not json\n")
    return {"tmp": str(tmp), "model": str(tmp / "tiny.keras"), "faces": faces,
            "photo": os.path.join(faces, "person_00", "img_000.png"),
            "not_image": str(tmp / "not_an_image.jpg"), "text": str(tmp / "text.txt"),
            "garbage_dataset": str(tmp / "garbage_dataset")}


@pytest.fixture(scope="module")
def runs(inputs):
    """(module, case) -> (command line shown, bad path, CompletedProcess), for every case of
    CASES, each a fork of one process that imported TensorFlow once (tests/_forked_commands;
    test_a_fresh_process_answers_as_the_fork checks that the fork changes nothing)."""
    env = checkout_env(TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("FACENET_TF_TRACEBACK", None)
    keys = [(module, case) for module, cases in CASES.items() for case in cases]
    argvs = [_argv(key, inputs) for key in keys]
    results = run_forked([ForkedCommand(argv, cwd=inputs["tmp"]) for argv in argvs], env=env,
                         timeout_s=TIMEOUT_S)
    return {key: (" ".join(["python", *argv]), CASES[key[0]][key[1]][1].format(**inputs), result)
            for key, argv, result in zip(keys, argvs, results)}


def _argv(key, inputs) -> list:
    args, _ = CASES[key[0]][key[1]]
    return ["-m", key[0], *[a.format(**inputs) for a in args]]


def test_every_console_script_has_both_cases():
    lacking = [f"{script} ({module}): {case!r}" for script, module in console_scripts().items()
               for case in REQUIRED_CASES if case not in CASES.get(module, {})]
    assert not lacking, ("console scripts without a bad-input case (add them to CASES in "
                         f"tests/test_bad_input.py): {lacking}")


@pytest.mark.slow  # one TensorFlow import, then a fork per case
@pytest.mark.parametrize("script, module, case", _all_cases())
def test_bad_input_is_one_line_naming_the_path(runs, script, module, case):
    assert case in CASES.get(module, {}), (
        f"console script {script} ({module}) has no {case!r} case: add one to CASES in "
        f"tests/test_bad_input.py")
    shown, bad, result = runs[(module, case)]
    report = f"{shown}\nexit {result.returncode}; stderr:\n{result.stderr[-3000:]}"
    assert result.returncode != 0, report
    assert "Traceback" not in result.stderr, report
    lines = _message_lines(result.stderr)
    assert len(lines) == 1, f"{len(lines)} lines besides the log lines: {lines}\n{report}"
    assert bad in lines[0], f"the error does not name {bad}\n{report}"


def test_the_log_filter_keeps_error_lines():
    """The filter drops the logging formats only: an error line survives, also one that
    mentions a log level or an absl file."""
    stderr = "\n".join([
        "I0000 00:00:1796537558.639689   15905 cpu_feature_guard.cc:227] This TensorFlow binary",
        "I1206 06:13:23.357638 139774543743872 progress.py:22] finding faces:   0%|",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "WARNING:root:apitools not found, and bigquery client libraries are not available",
        "INFO:tensorflow:Assets written to: /tmp/x",
        "compare.py: error: /x/WARNING:root:a.jpg: no such file",
        "Error: I0000 at progress.py:22] something",
    ])
    assert _message_lines(stderr) == ["compare.py: error: /x/WARNING:root:a.jpg: no such file",
                                       "Error: I0000 at progress.py:22] something"]


@pytest.mark.slow
def test_a_fresh_process_answers_as_the_fork(runs, inputs):
    """The forked runs stand for `python -m MODULE ...` in a fresh interpreter: for two cases,
    a fresh process prints the same message line and exits with the same status."""
    env = checkout_env(TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("FACENET_TF_TRACEBACK", None)
    for key in (("facenet_tf.embed", MISSING), ("beam_jobs.mine_triplets", WRONG_KIND)):
        fresh = subprocess.run([sys.executable, *_argv(key, inputs)], cwd=inputs["tmp"],
                               env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        forked = runs[key][2]
        assert (fresh.returncode, _message_lines(fresh.stderr)) == (
            forked.returncode, _message_lines(forked.stderr)), (fresh.stderr, forked.stderr)
