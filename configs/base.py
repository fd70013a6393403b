"""Every config field with its default, as the library defines them (t2ijax/defaults.py). Other
configs start from this one and override it; validation rejects any key not defined there."""
from t2ijax.defaults import get_config  # noqa: F401 (what the other configs call)
