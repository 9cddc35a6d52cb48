"""The message contract shared by the ServerApp and the ClientApp (record keys and reductions)."""

from .records import (
    ADAPTER_KIND,
    ARRAYS,
    CLIENTS,
    CONFIG,
    DEFAULT_REDUCTION,
    DEV_REL_MEAN,
    DEV_REL_PREFIX,
    DROPPED,
    EPSILON,
    EPSILON_SPENT,
    EVAL_LOSS,
    LEARNING_RATE,
    METRIC_REDUCTIONS,
    METRICS,
    NODE_STATE_MISSING,
    NOT_TRAINED,
    NUM_EXAMPLES,
    PARTITION_ID,
    PREFIX_REDUCTIONS,
    PRIVACY_BUDGET_EXHAUSTED,
    PRIVACY_HISTORY_MISSING,
    SERVER_ROUND,
    TRAIN_LOSS,
    Reduction,
    message_bytes,
    reduce_metrics,
    reduction_for,
    train_reply_content,
)

__all__ = [
    "ADAPTER_KIND",
    "ARRAYS",
    "CLIENTS",
    "CONFIG",
    "DEFAULT_REDUCTION",
    "DEV_REL_MEAN",
    "DEV_REL_PREFIX",
    "DROPPED",
    "EPSILON",
    "EPSILON_SPENT",
    "EVAL_LOSS",
    "LEARNING_RATE",
    "METRICS",
    "METRIC_REDUCTIONS",
    "NODE_STATE_MISSING",
    "NOT_TRAINED",
    "NUM_EXAMPLES",
    "PARTITION_ID",
    "PREFIX_REDUCTIONS",
    "PRIVACY_BUDGET_EXHAUSTED",
    "PRIVACY_HISTORY_MISSING",
    "SERVER_ROUND",
    "TRAIN_LOSS",
    "Reduction",
    "message_bytes",
    "reduce_metrics",
    "reduction_for",
    "train_reply_content",
]

from .config import ConfigError, RunConfig, allowed_keys, parse_run_config  # noqa: E402

__all__ += ["ConfigError", "RunConfig", "allowed_keys", "parse_run_config"]

from .base_delta import (  # noqa: E402
    BASE_DELTA,
    BASE_FROM_VERSION,
    BASE_SPLITS,
    BASE_VERSION,
    advance_base,
    canonical_step,
    encode_base_delta,
    encode_splits,
)

__all__ += [
    "BASE_DELTA", "BASE_FROM_VERSION", "BASE_SPLITS", "BASE_VERSION", "advance_base", "canonical_step",
    "encode_base_delta", "encode_splits",
]

from .frozen import (  # noqa: E402
    FROZEN_FACTORS,
    FROZEN_HASH,
    GRADIENT_ESTIMATE,
    INIT_EXAMPLES,
    SETUP_RECORDS,
)

__all__ += ["FROZEN_FACTORS", "FROZEN_HASH", "GRADIENT_ESTIMATE", "INIT_EXAMPLES", "SETUP_RECORDS"]

from .plugin_records import (  # noqa: E402
    BROADCAST,
    REPORT,
    ReportError,
    decode_json_record,
    encode_json_record,
    message_report,
)

__all__ += ["BROADCAST", "REPORT", "ReportError", "decode_json_record", "encode_json_record", "message_report"]

from . import secagg  # noqa: E402,F401  (registers the `secagg.*` section wherever the contract is loaded)

from .reply_schema import (  # noqa: E402  (registers the `validation.*` section wherever the contract is loaded)
    CORE_METRICS,
    MetricSchema,
    MetricSpec,
    ReplyMetricError,
    ValidationConfig,
    partition_of,
)

__all__ += ["CORE_METRICS", "MetricSchema", "MetricSpec", "ReplyMetricError", "ValidationConfig", "partition_of"]
