"""Generic pieces of the reports: markdown tables and number formats, reading a run's files and
merging baselines, paired significance tests, plots. Each paper's tables live in its system's
package (`musemb/systems/<name>/report.py`) and are built from these.
"""
