"""``glassformer serve``: a model directory behind a small JSON API and a web page (needs
``pip install 'glassformer[serve]'``: fastapi, uvicorn).  See :func:`glassformer.serve.app.create_app`."""

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """See :func:`glassformer.serve.app.create_app` (imported lazily: fastapi is optional)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
