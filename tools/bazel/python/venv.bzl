"""A repository rule that registers the project's .venv python as Bazel's Python toolchain."""

_BUILD = """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "venv_py3",
    interpreter_path = "{python}",
    python_version = "PY3",
)

py_runtime_pair(name = "venv_pair", py3_runtime = ":venv_py3")

toolchain(
    name = "toolchain",
    toolchain = ":venv_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(ctx):
    workspace = ctx.path(Label("//:WORKSPACE")).dirname
    venv = ctx.os.environ.get("FACENET_TF_VENV", "%s/.venv" % workspace)
    python = ctx.path("%s/bin/python" % venv)
    if not python.exists:
        fail("No virtualenv python at %s: run scripts/ensure_venv.sh (or `make test`) first" % python)
    ctx.file("BUILD", _BUILD.format(python = python))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = ["FACENET_TF_VENV"],
    local = True,
)
