"""The contract between the Python and R sides: schema validation and rpy2 transfer."""

from deepnomo.bridge.schema import (
    CohortError,
    read_cohort,
    read_manifest,
    validate_cohort,
    write_cohort,
)

__all__ = ["CohortError", "read_cohort", "read_manifest", "validate_cohort", "write_cohort"]
