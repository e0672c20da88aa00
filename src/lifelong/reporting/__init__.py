"""Results -> what a person reads: text tables and JSON files (`text`), the HTML report with its
figures (`report`, `plots`), and the learning service's page (`service_page`).

The text part is imported here; the HTML and plotting modules (matplotlib) are imported where used.
"""

from lifelong.reporting.text import (
    CLASS_IL_KEYS,
    METRICS,
    aggregate,
    environment,
    format_compare,
    format_run,
    write_json,
)

__all__ = ["CLASS_IL_KEYS", "METRICS", "aggregate", "environment", "format_compare", "format_run", "write_json"]
