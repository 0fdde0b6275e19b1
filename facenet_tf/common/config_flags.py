"""Config dataclasses as absl flags, so that every setting, its default and its help are written
once, in the dataclass: an entry point defines its flags from the dataclass, and a recipe file
of flags (configs/*.flags) reads into the same dataclass from Python or from the command line.

A field takes part through `setting(default, help, ...)`; fields made with plain
`dataclasses.field` (or none) are not flags.
"""

import dataclasses
import json
import sys
import types
import typing

from absl import flags

_HELP, _CHOICES, _FROM_FLAG, _FLAG_DEFAULT = ("help", "choices", "from_flag", "flag_default")
_REQUIRED = dataclasses.MISSING


def setting(default=_REQUIRED, help: str = "", choices=None, from_flag=None,
            flag_default=None, default_factory=_REQUIRED):
    """A dataclass field that is also a flag.

    choices: allowed values (an enum flag). from_flag: converts the flag's parsed value into
    the field's (e.g. "96,96" -> (96, 96, 3)); flag_default: the flag's default when it is
    not the field's default written as a flag value.
    """
    metadata = {_HELP: help, _CHOICES: tuple(choices) if choices else None,
                _FROM_FLAG: from_flag, _FLAG_DEFAULT: flag_default}
    if default_factory is not _REQUIRED:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_fields(cls) -> list:
    """The fields of dataclass `cls` that are flags."""
    return [f for f in dataclasses.fields(cls) if _HELP in f.metadata]


def _base_type(annotation):
    """int for `int | None`, tuple for `tuple | None`, and so on."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return typing.get_origin(annotation) or annotation


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def define_flags(cls, flag_values=flags.FLAGS, module_name: str | None = None,
                 exclude=()) -> list:
    """Defines one flag per setting of `cls` in `flag_values` (named as the field; help,
    default and choices from the field), as flags of the calling module (for its --help);
    returns the names of the required ones (fields without a default), for
    flags.mark_flags_as_required."""
    if module_name is None:
        module_name = sys._getframe(1).f_globals["__name__"]
        # absl files the flags of the script being run under sys.argv[0], not "__main__".
        module_name = sys.argv[0] if module_name == "__main__" else module_name
    required = []
    for field in flag_fields(cls):
        if field.name in exclude:
            continue
        meta, kind = field.metadata, _base_type(field.type)
        default = meta[_FLAG_DEFAULT] if meta[_FLAG_DEFAULT] is not None else _default(field)
        args = dict(name=field.name, help=meta[_HELP], flag_values=flag_values,
                    module_name=module_name)
        if meta[_CHOICES]:
            flags.DEFINE_enum(default=default, enum_values=list(meta[_CHOICES]), **args)
        elif kind is bool:
            flags.DEFINE_boolean(default=default, **args)
        elif kind is int:
            flags.DEFINE_integer(default=default, **args)
        elif kind is float:
            flags.DEFINE_float(default=default, **args)
        elif kind in (tuple, list):
            flags.DEFINE_list(default=list(default) if default else default, **args)
        elif kind is dict:
            flags.DEFINE_string(default=json.dumps(default or {}), **args)
        else:
            flags.DEFINE_string(default=default, **args)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    return required


def _field_value(field, value):
    if value is None:
        return None
    convert = field.metadata[_FROM_FLAG]
    if convert is not None:
        return convert(value)
    if _base_type(field.type) is dict and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"--{field.name}: not JSON ({e})") from None
    return value


def values_from_flags(cls, flag_values=flags.FLAGS, only_present: bool = False) -> dict:
    """{field: value} of the settings of `cls` as parsed in `flag_values` (only those given
    on the command line or in a flag file when only_present)."""
    values = {}
    for field in flag_fields(cls):
        if field.name not in flag_values:
            continue
        flag = flag_values[field.name]
        if only_present and not flag.present:
            continue
        values[field.name] = _field_value(field, flag.value)
    return values


def read_flags(cls, args, source: str = "flags") -> dict:
    """{field: value} of the settings that flag arguments (`--name=value`, and
    `--flagfile=PATH` for a file of such lines with `#` comments) give for dataclass `cls`,
    parsed by absl exactly as an entry point parses them; an unknown flag or a bad value is a
    ValueError naming `source`."""
    flag_values = flags.FlagValues()
    define_flags(cls, flag_values, module_name=__name__)
    try:
        flag_values([source, *args])
    except (flags.Error, OSError) as e:
        message = str(e).replace("ERROR:: ", "")
        raise ValueError(f"{source}: {message}") from None
    return values_from_flags(cls, flag_values, only_present=True)


def read_flagfile(cls, path: str) -> dict:
    """read_flags of one flag file (configs/*.flags)."""
    return read_flags(cls, [f"--flagfile={path}"], source=path)
