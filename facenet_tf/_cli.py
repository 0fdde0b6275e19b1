"""What every command shares: running its absl `main`, as `python -m MODULE` or as its console
script, with a --help that shows the command's own flags and exits 0, and bad input reported
as one line instead of a traceback."""

import functools
import os
import sys

import tensorflow as tf
from absl import app, flags

from facenet_tf.data.preprocess import decode_error_message
from facenet_tf.detection.align import METHODS, AlignConfig

# Errors that mean "bad input" (a path, a file's contents, a flag's value): reported as one
# line naming it, exit status 1. FACENET_TF_TRACEBACK=1 shows the traceback instead. The
# TensorFlow ones are what tf.io.gfile and TF ops raise on a missing, unreadable or undecodable
# file, for the paths no library check reached first; flags.Error and app.UsageError are a bad
# command line (absl would print the whole usage).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, tf.errors.NotFoundError,
               tf.errors.PermissionDeniedError, tf.errors.InvalidArgumentError,
               tf.errors.DataLossError, flags.Error, app.UsageError)

_SHORT_HELP = ("--help", "-?", "--helpshort")
_FULL_HELP = "--helpfull"


def run(main, command_module: str, flags_parser=None) -> None:
    """Runs `main` under absl once the command's flags are defined.

    absl's help lists the flags of the program's main module: for a console script that is the
    installed wrapper, not the command's module, so the command's flags are registered as the
    wrapper's key flags. absl also exits 1 after --help; here help is a successful run (0).
    """
    program = sys.argv[0]
    if command_module != "__main__":
        for flag in flags.FLAGS.get_key_flags_for_module(command_module):
            flags.FLAGS.register_key_flag_for_module(program, flag)
    args = sys.argv[1:]
    if any(arg in _SHORT_HELP for arg in args) or _FULL_HELP in args:
        doc = (sys.modules[command_module].__doc__ or "").strip()
        if doc:
            print(doc + "\n")
        print(flags.FLAGS.get_help() if _FULL_HELP in args else
              "flags:\n" + flags.FLAGS.main_module_help())
        if _FULL_HELP not in args:
            print("\nTry --helpfull to get a list of all flags.")
        sys.exit(0)
    program = os.path.basename(program)
    app.run(_reporting_errors(main, program),
            flags_parser=_reporting_errors(flags_parser or _parse_flags, program))


def define_face_crop_flags(prefix: str = "Face crop") -> None:
    """--align_method and --margin, for the commands that crop detected faces (defaults:
    facenet_tf.detection.AlignConfig's, the reference recipe), listed in the --help of the
    module that calls this."""
    caller = sys._getframe(1).f_globals["__name__"]
    # absl files the flags of the script being run under sys.argv[0], not "__main__".
    caller = sys.argv[0] if caller == "__main__" else caller
    flags.DEFINE_enum("align_method", AlignConfig.method, list(METHODS),
                      f"{prefix}: the detector box plus --margin, or a similarity transform of "
                      "the 5 landmarks onto a template.")
    flags.DEFINE_float("margin", AlignConfig.margin, "Pixels of the photo added around each "
                       "face box, in total per axis (the reference recipe: 32 at 160).")
    for name in ("align_method", "margin"):
        flags.FLAGS.register_key_flag_for_module(caller, flags.FLAGS[name])


def _parse_flags(argv):
    """absl's own parsing, raising flags.Error instead of printing it with a usage hint."""
    return flags.FLAGS(argv)


def count(n: int, noun: str) -> str:
    """"1 photo", "2 photos": a count for a command's summary line."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def beam_flags_parser(argv):
    """For Beam jobs: absl parses the job's own flags and leaves every other argument (Beam's
    pipeline options, e.g. --runner) to PipelineOptions, unchanged."""
    return flags.FLAGS(argv, known_only=True)


def _reporting_errors(fn, program: str):
    """`fn` (a command's main, or the flags parser) with USER_ERRORS reported as one line on
    stderr, "PROGRAM: error: MESSAGE", and exit status 1."""
    @functools.wraps(fn)
    def run(argv):
        try:
            return fn(argv)
        except USER_ERRORS as e:
            if os.environ.get("FACENET_TF_TRACEBACK") == "1":
                raise
            print(f"{program}: error: {_one_line(e)}", file=sys.stderr)
            sys.exit(1)
    return run


def _one_line(error: Exception) -> str:
    if isinstance(error, tf.errors.OpError):
        message = decode_error_message(error)
    else:
        message = str(error)
    message = " ".join(message.split()) or type(error).__name__
    if isinstance(error, (flags.Error, app.UsageError)):
        message += " (--help lists the flags)"
    return message
