"""PULSE's own modules have plain top-level names (device, loss, settings, ...): a user's module of
the same name and one of PULSE's cannot both be imported in one session. Say which, and what to do.
"""
import importlib.machinery
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shadowing(error):
    """What to say when `error` comes from a module of someone else's that has the name of one of the
    project's: Python takes the one of that name already imported, or the first on sys.path. None
    for another error."""
    top = (error.name or "").partition(".")[0]
    ours = HERE / f"{top}.py" if (HERE / f"{top}.py").is_file() else HERE / top
    theirs = getattr(sys.modules.get(top), "__file__", None) or error.path
    if not top or not ours.exists() or theirs is None or Path(theirs).resolve().is_relative_to(ours):
        return None
    return (f"{theirs} stands where PULSE needs its own {ours.name} ({ours}): Python allows one module named "
            f"{top!r}. Rename yours, or put {HERE} first on sys.path and leave yours out of this session")


def imported():
    """(name, where) of each of the project's top-level modules imported so far: a file or package at its root."""
    for name, module in list(sys.modules.items()):
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        where = path.parent if path.name == "__init__.py" else path
        if "." not in name and where.parent == HERE:
            yield name, where


def hidden_modules():
    """What to say of each module of someone else's that one of the project's hides: one of the same
    name further along sys.path (a folder of no Python aside), which `import <name>` no longer reaches:
    its owner's code gets PULSE's module instead."""
    others = [entry for entry in sys.path if isinstance(entry, str) and Path(entry or ".").resolve() != HERE]
    for name, ours in imported():
        theirs = importlib.machinery.PathFinder.find_spec(name, others)
        if theirs is not None and theirs.origin and not Path(theirs.origin).resolve().is_relative_to(ours):
            yield (f"PULSE's {ours} hides {theirs.origin}: Python allows one module named {name!r}, so "
                   f"`import {name}` gives PULSE's in this session. Rename yours to use it beside PULSE")
