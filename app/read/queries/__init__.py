"""Every database read of the product (pages, their JSON twins, the CLI, the export), as keyword-only functions
returning app.read.schemas models.

Pages and their JSON twins call the same function, so they cannot disagree; routes hold no SQL. A basis in a URL is
its name; `?model=NAME` picks the model when several are ingested (without it: the most recently ingested model that
has the basis), and links carry `model=` only when the database holds more than one model.
"""

from app.read.queries.bases import NotFound, overview
from app.read.queries.compare import comparison
from app.read.queries.explanations import autointerp_results, basis_explanations
from app.read.queries.feature_map import feature_map
from app.read.queries.labels import labels_for
from app.read.queries.live import BasisRef, LiveContext, live_context, max_activations
from app.read.queries.matches import matches
from app.read.queries.proxies import proxy_ranking, unit_proxy_plots
from app.read.queries.unit import UnitView, unit_version, unit_view
from app.read.queries.unit_list import top_tokens_for, unit_list

__all__ = ["BasisRef", "LiveContext", "NotFound", "UnitView", "autointerp_results", "basis_explanations", "comparison",
           "feature_map", "labels_for", "live_context", "matches", "max_activations", "overview", "proxy_ranking",
           "top_tokens_for", "unit_list", "unit_proxy_plots", "unit_version", "unit_view"]
