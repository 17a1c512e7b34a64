"""Auditor reports: data assembled from a ledger, rendered to HTML and PDF/A-3b (DESIGN.md section 8).

``make_report`` assembles and renders one report over a fixed tree; ``record`` appends
its ``report.generated``. The command line is ``mlledger report`` (``reports._cli``).
"""

from reports._crosswalk import REQUIREMENTS, crosswalk
from reports._report import Rendered, make_report, record

__all__ = ["REQUIREMENTS", "Rendered", "crosswalk", "make_report", "record"]
