"""harness.report: the sweep report (page + sections/, each an extract -> render pair), its
exports, the cross-sweep comparison page, and the HTML and figure helpers they share. It reads
a finished sweep only through harness.sweep.results."""
