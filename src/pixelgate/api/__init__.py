"""The HTTP API (``create_app`` in :mod:`pixelgate.api.app`)."""

from pixelgate.api._openapi_models import import_openapi_models_deferred
from pixelgate.api._pydantic_v1_check import check_pydantic_v1_only_once_imported

import_openapi_models_deferred()
check_pydantic_v1_only_once_imported()
