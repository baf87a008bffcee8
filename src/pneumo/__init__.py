"""pneumo: pneumonia detection on pediatric chest X-rays.

    import pneumo
    model = pneumo.load()                    # the shipped model, or pneumo.load("path/to/bundle")
    print(model.predict("film.jpeg"))        # probability, decision, gate answer

``load``, ``train`` and ``evaluate`` are imported on first use (module ``__getattr__``), so that
``import pneumo`` — which every CLI start-up does for ``__version__`` — stays free of PyTorch.
"""

from pneumo.version import __version__

_API = ("load", "train", "evaluate", "Model")


def __getattr__(name: str):
    if name in _API:
        from pneumo import api

        return getattr(api, name)
    raise AttributeError(f"module 'pneumo' has no attribute {name!r}")


__all__ = ["Model", "__version__", "evaluate", "load", "train"]
