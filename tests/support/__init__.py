"""Helpers for the tests, imported as modules (fixtures are in ``tests/conftest.py``).

* ``videos``: generated test videos with known frame times (``VideoSpec``, ``SPECS``).
* ``servers``: the Flask server under gunicorn, a scripted aiohttp server, wire-protocol cases.
* ``torchserve``: a real TorchServe started with the repository's scripts, and its worker.
"""
