"""Sphinx extension: bibliography labels in the same author-year form as the in-text citations.

``bibtex_reference_style: author_year`` writes citations as ``[Nagel et al., 2019]``; pybtex's
default ``alpha`` labels would list that paper as ``[NvBBW19]``. The ``qbook_author_year`` style
(set as ``bibtex_default_style`` in ``_config.yml``) labels each entry the way sphinxcontrib-bibtex
cites it (one author: ``Last``; two: ``Last and Last``; more: ``Last et al.``, then the year) and
sorts the list by author, year and title.
"""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _last(person) -> str:
    return " ".join(n.render_as("text") for n in person.rich_prelast_names + person.rich_last_names)


def author_year_label(entry) -> str:
    """``Sandler et al., 2018`` for an entry with three or more authors."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last(p) for p in people]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield author_year_label(entry)


class AuthorYearStyle(PlainStyle):
    default_label_style = "qbook_author_year"


def setup(app):
    register_plugin("pybtex.style.labels", "qbook_author_year", AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", "qbook_author_year", AuthorYearStyle, force=True)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
