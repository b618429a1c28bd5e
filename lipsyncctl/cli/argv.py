"""Global options anywhere on the command line: ``lipsyncctl doctor --json`` = ``lipsyncctl --json doctor``.

The global options (``--json``, ``-q/--quiet``, ``-v/--verbose``, ``--progress FORMAT``) are declared once, on the root callback
in ``lipsyncctl/cli/main.py``. Click only accepts a group's options before the subcommand name, so
:func:`hoist_global_options` moves every global option it finds (before ``--``) to the front of argv
before Click parses it. It walks the command tree as Click will, so the value of an option that takes one
(``--set x=-v``, ``-o -q.mp4``) and everything after ``--`` stay where they are. Repeated ``-v`` add up
wherever they stand (``-v sync -vv`` is ``-vvv``).
"""

from __future__ import annotations

from typing import Any

#: Parameter names of the root callback that are global options (may follow the command name).
GLOBAL_PARAMS = ("verbose", "quiet", "json_out", "progress_format")


def global_flags(root: Any) -> dict[str, str]:
    """``{"--json": "json_out", "-v": "verbose", ...}``: the flags of the global options of ``root``."""
    return {flag: p.name for p in root.params if p.name in GLOBAL_PARAMS for flag in (*p.opts, *p.secondary_opts)}


def _value_options(command: Any) -> set[str]:
    """Option flags of ``command`` that take a value (the next token is theirs)."""
    flags: set[str] = set()
    for p in getattr(command, "params", ()):
        if getattr(p, "param_type_name", "") != "option" or getattr(p, "is_flag", False) or getattr(p, "count", False):
            continue
        flags.update(p.opts)
    return flags


def _is_global(token: str, flags: dict[str, str]) -> bool:
    if token in flags:
        return True
    # bundled short flags made only of global ones: -vv, -qv
    shorts = {f[1] for f in flags if len(f) == 2 and f[0] == "-" and f[1] != "-"}
    return len(token) > 2 and token[0] == "-" and token[1] != "-" and set(token[1:]) <= shorts


def hoist_global_options(root: Any, args: list[str]) -> list[str]:
    """``args`` with the global options moved before the first command name (order otherwise kept)."""
    flags = global_flags(root)
    global_values = _value_options(root) & set(flags)  # --progress FORMAT
    front: list[str] = []
    rest: list[str] = []
    command = root
    takes_value = _value_options(root)
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            rest.extend(args[i:])
            break
        if token in global_values and i + 1 < len(args):
            front.extend(args[i:i + 2])  # the option and its value, whatever it looks like
            i += 1
        elif _is_global(token.split("=", 1)[0] if token.startswith("--") else token, flags):
            front.append(token)
        elif token.startswith("-") and token != "-":
            rest.append(token)
            name = token.split("=", 1)[0]
            if "=" not in token and name in takes_value and i + 1 < len(args):
                rest.append(args[i + 1])  # the option's value, whatever it looks like
                i += 1
        else:
            rest.append(token)
            sub = getattr(command, "commands", {}).get(token)  # a group's subcommand: descend
            if sub is not None:
                command, takes_value = sub, _value_options(sub)
        i += 1
    return front + rest
