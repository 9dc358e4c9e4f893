"""Paper tables: their definition (rows, teacher stages, published values), the runner that
trains them for several seeds and the report. The recipes the table configs share are in
`jaxkd.config.recipes`.

Importing this package is cheap (no jax): table configs import it. The runner, the collection
of per-run results and the report are imported by ``jaxkd report``. `compare_runs` puts
finished runs side by side (``jaxkd compare``).
"""
from jaxkd.reporting._table import Choice, Claim, Row, Table, parse_arg
from jaxkd.reporting.compare import compare_runs

__all__ = ["Choice", "Claim", "Row", "Table", "compare_runs", "parse_arg"]
