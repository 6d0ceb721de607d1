"""Run configuration: the settings (`RunConfig`), the values they take, their checks and their loading from TOML."""

from pipelearn.config.errors import ConfigError, did_you_mean, unknown_keys
from pipelearn.config.loading import (
    check_profile_in,
    check_sizes,
    chooses_plan,
    from_mapping,
    load_toml,
    read_toml,
)
from pipelearn.config.run import DeviceOverride, RunConfig
from pipelearn.config.values import (
    CODECS,
    COMPUTE_SETTING,
    MODES,
    NETWORK_PRESETS,
    Direction,
    Link,
    Mode,
    RateSteps,
    parse_codec,
)

__all__ = [
    "CODECS",
    "COMPUTE_SETTING",
    "MODES",
    "NETWORK_PRESETS",
    "ConfigError",
    "DeviceOverride",
    "Direction",
    "Link",
    "Mode",
    "RateSteps",
    "RunConfig",
    "check_profile_in",
    "check_sizes",
    "chooses_plan",
    "did_you_mean",
    "from_mapping",
    "load_toml",
    "parse_codec",
    "read_toml",
    "unknown_keys",
]
