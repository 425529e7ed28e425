"""What of a run may be published: local paths never, their names only.

A run's options name local files and folders (the model, the data, the general and
task data, a word list, the output, and whatever path-valued option comes next).
This module is the one place that decides which of them are local and how they read
in public: every option value that names an existing file or folder here (or is
written as a path: absolute, ``./``, ``../``, ``~``) is local, found by looking at the
values, not at a list of option names, so a new path option is covered the day it is
added. Public text (the model card, ``report.html``, and everything a push uploads)
names such a path by its last component only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

# A string this long is text, not a path (a --probe sentence, a prompt).
_MAX_PATH_CHARS = 4096


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, (str, Path)):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def is_local_path(spec: str) -> bool:
    """True when ``spec`` names an existing local file or folder, or is written as a path."""
    if not spec or len(spec) > _MAX_PATH_CHARS or "\n" in spec or "://" in spec:
        return False
    if spec.startswith(("/", "./", "../", "~")):
        return True
    try:
        return Path(spec).expanduser().exists()
    except OSError:  # a name too long for the file system, say
        return False


def local_paths(*values: Any) -> list[str]:
    """Every local path among ``values`` (options, nested dicts and lists, strings)."""
    return sorted({s for value in values for s in _strings(value) if is_local_path(s)})


def public_name(spec: str) -> str:
    """A Hub id or any other non-path as it is; a local path by its name alone."""
    if not is_local_path(spec):
        return spec
    path = Path(spec).expanduser()
    return (path.resolve() if path.exists() else path).name or spec


def redactions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """(written form, public name) pairs for ``paths``, each path in every form a text may
    hold it (as given, expanded, absolute and resolved), longest first so that a file's
    path is replaced before its folder's."""
    pairs: dict[str, str] = {}
    for spec in paths:
        path = Path(spec).expanduser()
        name = public_name(spec)
        for form in {spec, str(path), str(path.absolute()), str(path.resolve())}:
            if form not in ("", ".", "/", "~") and form != name:
                pairs[form] = name
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def redact(text: str, paths: Iterable[str]) -> str:
    """``text`` with every form of every one of ``paths`` replaced by its public name."""
    for full, name in redactions(paths):
        text = text.replace(full, name)
    return text


def public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Flat options as they may be published: each local path by its name alone."""
    def public(value: Any) -> Any:
        if isinstance(value, (str, Path)):
            return public_name(str(value))
        if isinstance(value, (list, tuple)):
            return [public(v) for v in value]
        return value

    return {key: public(value) for key, value in options.items()}
