"""The Jinja2 templates of pneumo's offline HTML reports: ``audit_report.html`` (``pneumo data audit``),
``eval_report.html`` (``pneumo evaluate``) and ``comparison.html`` (``pneumo compare``).

The Python modules build the data; the templates lay it out. Autoescaping is on, so file names, bundle
names and error messages are shown as text, never read as markup. (The web app's pages have their own
templates in ``pneumo/server/templates``.)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent


@cache
def environment() -> Environment:
    return Environment(loader=FileSystemLoader(HERE), autoescape=select_autoescape(["html"]))


def render(name: str, **context) -> str:
    """Render the template ``name`` (a file in this folder) with ``context``."""
    return environment().get_template(name).render(**context)
