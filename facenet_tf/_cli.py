"""What every command shares: running its absl `main`, as `python -m MODULE` or as its console
script, with a --help that shows the command's own flags and exits 0, and bad input reported
as one line instead of a traceback."""

import functools
import os
import sys

from absl import app, flags

from facenet_tf.detection.align import METHODS, AlignConfig

# Errors that mean "bad input" (a path, a file's contents, a flag's value): reported as one
# line, exit status 1. FACENET_TF_TRACEBACK=1 shows the traceback instead.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)

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
    main = _reporting_errors(main, os.path.basename(program))
    if flags_parser is None:
        app.run(main)
    else:
        app.run(main, flags_parser=flags_parser)


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


def count(n: int, noun: str) -> str:
    """"1 photo", "2 photos": a count for a command's summary line."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def beam_flags_parser(argv):
    """For Beam jobs: absl parses the job's own flags and leaves every other argument (Beam's
    pipeline options, e.g. --runner) to PipelineOptions, unchanged."""
    return flags.FLAGS(argv, known_only=True)


def _reporting_errors(main, program: str):
    @functools.wraps(main)
    def run_main(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            if os.environ.get("FACENET_TF_TRACEBACK") == "1":
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            print(f"{program}: error: {message}", file=sys.stderr)
            sys.exit(1)
    return run_main
