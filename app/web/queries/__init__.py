"""Every database read of the web app, as keyword-only functions returning app.web.schemas models.

Pages and their JSON twins call the same function, so they cannot disagree; routes hold no SQL. A basis in a URL is
its name; `?model=NAME` picks the model when several are ingested (without it: the most recently ingested model that
has the basis), and links carry `model=` only when the database holds more than one model.
"""

from app.web.queries.bases import NotFound, overview
from app.web.queries.compare import comparison
from app.web.queries.feature_map import feature_map
from app.web.queries.labels import labels_for
from app.web.queries.live import BasisRef, LiveContext, live_context
from app.web.queries.matches import matches
from app.web.queries.unit import unit_detail, unit_page, unit_version
from app.web.queries.unit_list import unit_list

__all__ = ["BasisRef", "LiveContext", "NotFound", "comparison", "feature_map", "labels_for", "live_context", "matches", "overview",
           "unit_detail", "unit_list", "unit_page", "unit_version"]
