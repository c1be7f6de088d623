"""The HTTP API (``create_app`` in :mod:`pixelgate.api.app`)."""

from pixelgate.api._openapi_models import import_openapi_models_deferred

import_openapi_models_deferred()
