"""Settlement reports a bureau finance office and district operators file and read
without the tool: CSV, an Excel workbook, the statement as PDF, and charts (PNG, SVG).

The renderers are pure functions from plain data (``tables.ReportData``) to files; they
import no service, database or gRPC (tests/test_layers.py). ``write.write_report`` is the
one entry point; ``gather`` builds the data from a clearinghouse's or a node's database
for ``timebank clearinghouse report`` and ``timebank node report``. Chinese renders from
the font shipped in ``fonts/`` (scripts/subset_font.py), never a system font.
"""
