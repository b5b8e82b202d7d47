"""Gunicorn entry file of the Flask caption server; the app lives in ``vidcap.serve``.

``flask/start.sh`` runs ``server:create_app_from_env()`` from this folder.
"""

from vidcap.serve.flask_app import create_app_from_env

__all__ = ["create_app_from_env"]
