"""pytest_test: one py_test per pytest module, so `bazel test` and plain pytest run the same files."""

def pytest_test(name, src, deps = [], data = [], size = "large", tags = []):
    native.py_test(
        name = name,
        srcs = ["//tools/bazel:pytest_runner.py", src],
        main = "//tools/bazel:pytest_runner.py",
        args = ["$(location %s)" % src],
        deps = deps,
        data = data,
        size = size,
        tags = tags,
        python_version = "PY3",
    )
