"""Every default setting, defined once: the job-file schema, the command line, the engine and the server
import them from here. Standard library only, so importing it costs nothing at start-up."""

from __future__ import annotations

# [guarantee]
TARGET = 0.9
CONFIDENCE = 0.95
METHOD = "mix"

# [task]
MAX_TOKENS = 16
ID_FIELD = "id"

# [run]
SEED = 0
CONCURRENCY = 32  # calls in flight at once, all models together
RUN_DIR = "runs"

# [models.NAME]
BASE_URL = "https://api.openai.com/v1"
API = "chat"
MODEL_CONCURRENCY = 16  # requests in flight to one model
TIMEOUT_S = 60.0
MAX_ATTEMPTS = 6

# [routes.NAME]
CASCADE_THRESHOLD = 0.9

# [server]
UPSTREAM_CONNECTIONS = 1024  # keep-alive connections to the upstreams, all models together
MAX_BODY_BYTES = 4 * 1024 * 1024  # larger request bodies get 413
