"""The web UI at ``/ui``: server-rendered pages over the same store and pipeline as the API.

| part | module |
| --- | --- |
| session cookie, CSRF token | :mod:`pixelgate.ui.session` |
| page rendering, security headers, error pages | :mod:`pixelgate.ui.render` |
| who is signed in, CSRF checks on forms | :mod:`pixelgate.ui.auth` |
| sign-in, generate, gallery, a generation, account | :mod:`pixelgate.ui.pages` |
| the operator's page | :mod:`pixelgate.ui.admin` |
| reads the store lacks (gallery filters, recent stats) | :mod:`pixelgate.ui.reads` |
| SVG charts | :mod:`pixelgate.ui.charts` |
| cached thumbnails | :mod:`pixelgate.ui.thumbs` |
"""

__all__ = ["is_ui_path"]


def is_ui_path(path: str) -> bool:
    """A path the UI's routes serve: ``/`` (a redirect to it) and all of ``/ui``."""
    return path in ("/", "/ui") or path.startswith("/ui/")
