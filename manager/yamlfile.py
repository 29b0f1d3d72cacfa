"""Reading YAML that a person may have written: the inventory and, for Warewulf 4.5's
registry, its ``nodes.conf`` (the files ``ek8s warewulf apply`` edits go through ruamel.yaml's
round trip instead, :mod:`manager.wwconf`).

PyYAML implements YAML 1.1, whose ``int`` and ``float`` types include base 60
(https://yaml.org/type/int.html, https://yaml.org/type/float.html): an unquoted all-decimal
MAC address such as ``52:54:00:00:00:21`` reads as the integer 41135040021, ``10:30`` as 630,
``1:30.5`` as 90.5. YAML 1.2 dropped base 60, and Warewulf's own YAML readers (Go's
gopkg.in/yaml.v2 in 4.5, yaml.v3 in 4.6) read such values as the strings they look like.
:func:`load` does the same: every other value reads as :func:`yaml.safe_load` reads it.

Writing back with :func:`yaml.safe_dump` keeps such strings quoted (``'52:54:00:00:00:21'``),
since its YAML 1.1 resolver would otherwise read them as numbers, so a rewritten file means
the same to PyYAML and to Warewulf.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

# PyYAML's resolvers for int and float (yaml/resolver.py) without their base-60 alternatives.
_INT_RE = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _NoBase60Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose plain scalars never resolve as base-60 numbers."""


_NoBase60Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_NoBase60Loader.add_implicit_resolver(_INT, _INT_RE, list("-+0123456789"))
_NoBase60Loader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+0123456789."))


def load(text: str) -> Any:
    """Parse one YAML document as :func:`yaml.safe_load` does, except that colon-separated
    digits (``52:54:00:00:00:21``, ``10:30``) stay strings instead of base-60 numbers.

    Returns the document (``None`` for an empty one). Raises :class:`yaml.YAMLError`.
    """
    return yaml.load(text, Loader=_NoBase60Loader)  # a SafeLoader subclass: safe


def read(path: Path, error: type[Exception], what: str = "") -> Any:
    """:func:`load` the file at ``path``; an unreadable file or invalid YAML raises ``error``
    with a message naming the file and, if given, ``what`` it is (``cannot read inventory``)."""
    try:
        return load(path.read_text())
    except OSError as err:
        raise error(f"{path}: cannot read{' ' + what if what else ''}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None
