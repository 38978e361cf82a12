"""The chapter kit: shipped results by name, record look-ups, and glue for tables and values.

Scripts in ``scripts/`` write small JSON results to ``data/sweeps/<name>.json`` as
``{"meta": {...}, "records": [{...}, ...]}``. Chapters never read those files by path; they ask
for them by name and select records by field values::

    from qlib import results
    dfq = results.load("dfq")
    dfq.one(model="v1_standard", method="CLE", weight_bits=4)["accuracy"]
    results.glue_values("fm", {"acc": 0.93})          # {glue:text}`fm_acc:.1%` in the prose
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

__all__ = ["RESULTS_DIR", "Results", "load", "save", "available", "glue_values", "glue_table", "key"]

RESULTS_DIR = Path(__file__).resolve().parents[1] / "data" / "sweeps"


def key(*parts) -> str:
    """A glue name from parts: non-alphanumeric characters become ``_``.

    Examples
    --------
    >>> key("fm", "v1_standard", "CLE+BA+BC", 4)
    'fm_v1_standard_CLE_BA_BC_4'
    """
    out = "_".join(str(p) for p in parts)
    return "".join(c if c.isalnum() or c == "_" else "_" for c in out)


class Results:
    """The records of one shipped result file, with look-ups by field value.

    Examples
    --------
    >>> r = Results("demo", {"command": "python x.py"}, [{"model": "a", "bits": 4, "acc": 0.5},
    ...                                                   {"model": "a", "bits": 8, "acc": 0.9}])
    >>> r
    Results('demo', 2 records, fields: acc, bits, model)
    >>> r.one(model="a", bits=8)["acc"], len(r.select(model="a"))
    (0.9, 2)
    >>> r.values("bits", model="a")
    [4, 8]
    >>> r.one(model="b")
    Traceback (most recent call last):
    ...
    KeyError: "no record of 'demo' has model='b'; model takes the values ['a']"
    """

    def __init__(self, name: str, meta: dict, records: list):
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError(f"results {name!r}: 'records' must be a list of objects")
        self.name, self.meta, self.records = name, dict(meta), records

    def __repr__(self) -> str:
        fields = sorted({k for r in self.records for k in r})
        return f"Results({self.name!r}, {len(self.records)} records, fields: {', '.join(fields)})"

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def select(self, **where) -> list[dict]:
        """Every record whose fields equal ``where`` (a missing field never matches a value but ``None``)."""
        return [r for r in self.records if all(r.get(k) == v for k, v in where.items())]

    def one(self, **where) -> dict:
        """The single record matching ``where``; a ``KeyError`` saying what exists when none or several do."""
        hits = self.select(**where)
        if len(hits) == 1:
            return hits[0]
        if not hits:
            for k, v in where.items():
                vals = sorted({r.get(k) for r in self.records}, key=repr)
                if v not in vals:
                    raise KeyError(f"no record of {self.name!r} has {k}={v!r}; {k} takes the values {vals}")
            raise KeyError(f"no record of {self.name!r} matches {where}")
        raise KeyError(f"{len(hits)} records of {self.name!r} match {where}; add fields to pick one")

    def values(self, field: str, **where) -> list:
        """The distinct values of ``field`` among the records matching ``where``, sorted."""
        return sorted({r[field] for r in self.select(**where) if field in r}, key=lambda v: (v is None, v))


def available() -> list[str]:
    """Names of the shipped result files.

    Examples
    --------
    >>> {"bits", "dfq"} <= set(available())
    True
    """
    return sorted(p.stem for p in RESULTS_DIR.glob("*.json"))


def load(name: str) -> Results:
    """The shipped results ``data/sweeps/<name>.json`` (made by a script in ``scripts/``).

    Examples
    --------
    >>> dfq = load("dfq")
    >>> dfq.one(model="v1_standard", method="CLE", weight_bits=8)["accuracy"] > 0.9
    True
    >>> load("nope")
    Traceback (most recent call last):
    ...
    ValueError: no shipped results named 'nope'; available: ...
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a result name such as 'dfq', got {name!r}")
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no shipped results named {name!r}; available: {available()}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it from git or re-run its script") from exc
    if not isinstance(data, dict) or "records" not in data:
        raise ValueError(f"{path} has no 'records'; it is not a qlib results file")
    return Results(name, data.get("meta", {}), data["records"])


def save(path, meta: dict, records: list, sort_keys: bool = False) -> Path:
    """Write ``{"meta": meta, "records": records}`` where :func:`load` reads it (the scripts' output
    format): one-space indented JSON, numpy scalars as floats, a final newline; folders made.

    Examples
    --------
    >>> import tempfile
    >>> out = save(Path(tempfile.mkdtemp()) / "sub" / "demo.json", {"command": "demo"}, [{"acc": np.float32(0.5)}])
    >>> json.loads(out.read_text())
    {'meta': {'command': 'demo'}, 'records': [{'acc': 0.5}]}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=float, sort_keys=sort_keys) + "\n")
    return path


def glue_values(prefix: str, values: dict) -> dict:
    """Glue every ``{name: number}`` as ``<prefix>_<name>`` (no display); returns the glued names.

    Integers stay integers (``32``, not ``32.0``); other numbers are glued as floats, to be
    formatted in the prose (``{glue:text}`name:.1%```).

    Examples
    --------
    >>> glue_values("demo", {"n": 32, "acc": 0.9})
    {'demo_n': 32, 'demo_acc': 0.9}
    """
    from myst_nb import glue

    out = {}
    for name, v in values.items():
        if isinstance(v, bool) or v is None:
            raise TypeError(f"glue value {name!r} must be a number, got {v!r}")
        v = int(v) if isinstance(v, numbers.Integral) else float(v)
        k = key(prefix, name)
        glue(k, v, display=False)
        out[k] = v
    return out


def glue_table(name: str, table, formats: dict | str | None = None, na_rep: str = ""):
    """Show a ``pandas.DataFrame`` formatted, and glue it as ``name`` (for ``{glue:figure}`` use).

    Returns the pandas ``Styler`` so a cell can end with it and display the table.

    Examples
    --------
    >>> import pandas as pd
    >>> glue_table("demo_table", pd.DataFrame({"acc": [0.9]}), "{:.1%}").data.shape
    (1, 1)
    """
    from myst_nb import glue

    styler = table.style.format(formats, na_rep=na_rep) if formats else table.style
    glue(name, styler, display=False)
    return styler
