"""The middle of the flow: readings from the sources to the detector and into the store.

ingest     IngestQueue       the bounded hand-off from source threads (overflow policy, counted)
staleness  StalenessTracker  streams that went quiet, and their recovery, as events
runner     Pipeline          the pipeline thread: batch -> detector -> one store transaction
replay     replay            the offline twin: a CSV file through the same detector, row by row
"""
