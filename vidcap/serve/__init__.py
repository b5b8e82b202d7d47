"""What both caption servers share, shaped like LitServe's decode → batch → predict → encode.

* ``config``: ``ServeConfig``, the server's settings, and the one reader of ``VIDCAP_*``
  environment variables;
* ``core``: ``ServingCore``, request validation (prompt tokens included) and the
  group-by-settings → flatten → run → split-back step with per-request errors;
* ``protocol``: the HTTP-level rules (method, size, multipart names), worded once;
* ``batcher``: the micro-batcher a threaded server puts in front of the core;
* ``flask_app``: the Flask transport (``flask/`` holds its start script);
* ``gunicorn_worker``: gthread that gathers requests without a thread and sheds slow
  clients (``deadline_socket``: its client socket, reads bounded by the request's deadline);
* ``torchserve``: the TorchServe handler (``handlers/blip2_handler.py`` re-exports it).
"""
