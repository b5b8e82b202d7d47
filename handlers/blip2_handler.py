"""TorchServe entry file: the handler lives in ``vidcap.serve.torchserve``.

The worker imports ``vidcap`` from the Python that started TorchServe: ``start.sh`` puts
the repository root on ``PYTHONPATH`` (``pip install -e .`` works as well).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vidcap.serve.torchserve import Blip2Handler

_service = Blip2Handler()


def handle(data: Sequence[Mapping[str, object]] | None, context) -> list[str] | None:
    """TorchServe's entry point: ``handle(None, context)`` loads, later calls serve a batch.

    A module-level function rather than the class, because TorchServe only picks a
    handler class out of a module that defines exactly one class.
    """
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
