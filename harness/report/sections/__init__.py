"""The report's sections, one module per group; each section is an extract -> render pair
(see harness.report.page for the table that puts them on the page)."""
