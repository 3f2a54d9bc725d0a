"""The middle of the flow: readings from the sources to the detector and into the store.

ingest     IngestQueue       the bounded hand-off from source threads (overflow policy, counted)
staleness  StalenessTracker  streams that went quiet, and their recovery, as events
clock      TimeGuard         device timestamps far ahead or gone back: dead letters, one event
           WallClock         jumps of the gateway's own clock, so retention never trusts one
events     EventRate         at most so many events per subject upstream, the rest kept locally
runner     Pipeline          the pipeline thread: batch -> detector -> one store transaction
replay     replay            the offline twin: a CSV file through the same detector, row by row
"""
